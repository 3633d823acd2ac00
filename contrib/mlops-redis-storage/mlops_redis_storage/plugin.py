"""Entry point module: announces the ``redis`` store (the redis client is imported only when it is built)."""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_storage(
        "redis",
        "mlops_redis_storage.store:create_store",
        config="mlops_redis_storage.store:RedisStorageConfig",
        schemes=("redis", "rediss", "unix"),
        summary="artifacts in Redis (url = redis://host:6379/0), streamed in chunks, atomic swaps",
    )
