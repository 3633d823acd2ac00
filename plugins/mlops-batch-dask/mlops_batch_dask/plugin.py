"""The plugin module the ``mlops_core.plugins`` entry point ``batch-dask`` names.

Import-cheap on purpose (it runs on every ``mlops`` invocation): the engine is
registered by import string, so ``distributed`` loads only when a stack builds it.
"""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends"]


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_batch_engine("dask", "mlops_batch_dask.engine:DaskEngine", config="mlops_batch_dask.engine:DaskConfig",
                              summary="dask.distributed: a scheduler address or a LocalCluster of worker processes")
