"""steelyard: load balancing for every tier of a service, in one Python package."""

__version__ = "0.1.0"
