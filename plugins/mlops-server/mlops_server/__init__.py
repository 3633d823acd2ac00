"""mlops-server: an Open Inference Protocol (KServe V2) model server for mlops-core bundles.

Run it with ``python -m mlops_server --bundle DIR --port 8080`` or ``mlops serve DIR``.
Importing the package is cheap: the server (numpy, uvicorn) loads only when it runs.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__", "ServerConfig", "BundleSpec", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("ServerConfig", "BundleSpec"):
        from . import config

        return getattr(config, name)
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module 'mlops_server' has no attribute {name!r}")
