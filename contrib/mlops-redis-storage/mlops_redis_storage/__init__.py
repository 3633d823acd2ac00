"""Artifact storage for mlops-core on Redis, written only against its public API."""

__version__ = "0.1.0"
