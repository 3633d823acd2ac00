"""mlops-core artifact storage on any fsspec URL (local folder, memory://, s3://, gs://, az://...).

The public surface is what ``__all__`` lists. Attributes load lazily (PEP 562),
so importing the package, as plugin discovery does, does not import fsspec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["__version__", "FsspecArtifactStore", "FsspecStorageConfig", "create_store"]

_LAZY = {"FsspecArtifactStore": "store", "create_store": "store", "FsspecStorageConfig": "config"}

if TYPE_CHECKING:  # pragma: no cover
    from .config import FsspecStorageConfig
    from .store import FsspecArtifactStore, create_store


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
