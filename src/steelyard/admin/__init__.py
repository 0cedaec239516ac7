"""Admin surface of the supervisor: the REST API (api.py) and Prometheus metrics (metrics.py)."""
