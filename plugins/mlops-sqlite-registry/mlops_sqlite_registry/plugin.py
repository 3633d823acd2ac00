"""The ``sqlite`` registry backend's plugin module (entry point ``mlops_core.plugins: sqlite``).

Kept import-cheap on purpose: it only registers import strings, so discovering
plugins never imports sqlite3 or the registry code.
"""

from __future__ import annotations

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends"]


@hookimpl
def mlops_register_backends(backends):  # type: ignore[no-untyped-def]
    backends.add_registry(
        "sqlite",
        "mlops_sqlite_registry.registry:SqliteRegistry.from_config",
        config="mlops_sqlite_registry.registry:SqliteRegistryConfig",
        summary="model registry in one local SQLite file; safe for concurrent writers (default <home>/registry.db)",
    )
