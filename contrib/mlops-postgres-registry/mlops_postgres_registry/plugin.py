"""Entry point module: announces the ``postgres`` registry (psycopg is imported only when it is built)."""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_registry(
        "postgres",
        "mlops_postgres_registry.registry:create_registry",
        config="mlops_postgres_registry.registry:PostgresRegistryConfig",
        schemes=("postgresql", "postgres"),
        summary="models and versions in PostgreSQL (dsn = postgresql://user@host:5432/db)",
    )
