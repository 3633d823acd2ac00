"""The plugin module the ``mlops_core.plugins`` entry point names.

Import-cheap on purpose: the factory and config class are import strings, so
fsspec (and s3fs, gcsfs...) load only when a stack actually builds this store.
"""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl

#: URL schemes this store is known to keep atomic (see ``store._PUT_IS_ATOMIC``); any
#: other fsspec scheme works too, through a temporary key and a rename.
SCHEMES = ("file", "local", "memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_storage(
        "fsspec",
        "mlops_fsspec_storage.store:create_store",
        config="mlops_fsspec_storage.config:FsspecStorageConfig",
        schemes=SCHEMES,
        summary="artifacts on any fsspec URL: a local folder (default <home>/artifacts), memory://, s3://, gs://, az://",
    )
