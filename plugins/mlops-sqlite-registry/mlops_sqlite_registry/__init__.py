"""mlops-sqlite-registry: a ModelRegistry for mlops-core stored in one SQLite file.

Use it from a stack (``[registry] backend = "sqlite"``), or directly::

    from mlops_sqlite_registry import SqliteRegistry
    registry = SqliteRegistry("./.mlops/registry.db")

The registry classes are loaded lazily (PEP 562), so importing the package (which
the plugin entry point does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SqliteRegistry", "SqliteRegistryConfig", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .registry import SqliteRegistry, SqliteRegistryConfig


def __getattr__(name: str) -> Any:
    if name in ("SqliteRegistry", "SqliteRegistryConfig"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
