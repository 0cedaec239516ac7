"""Configuration: YAML -> typed, validated model (model.py); loading with line numbers (load.py)."""
