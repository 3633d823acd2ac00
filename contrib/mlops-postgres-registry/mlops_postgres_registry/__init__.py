"""A PostgreSQL model registry for mlops-core, written only against its public API."""

__version__ = "0.1.0"
