"""The plugin module the ``mlops_core.plugins`` entry point ``batch-ray`` names.

Import-cheap on purpose (it runs on every ``mlops`` invocation): the engine is
registered by import string, so ``ray`` loads only when a stack builds it.
"""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends"]


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_batch_engine("ray", "mlops_batch_ray.engine:RayEngine", config="mlops_batch_ray.engine:RayConfig",
                              summary="Ray tasks: a cluster address (auto, ray://...) or a local Ray")
