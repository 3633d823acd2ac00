"""The plugin module the ``mlops_core.plugins`` entry point ``batch-spark`` names.

Import-cheap on purpose (it runs on every ``mlops`` invocation): the engine is an
import string, so pyspark loads only when a stack builds the ``spark`` engine.
"""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends"]


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_batch_engine("spark", "mlops_batch_spark.engine:SparkEngine",
                              config="mlops_batch_spark.engine:SparkConfig",
                              summary="Apache Spark (pyspark mapInArrow) on local[*] or a cluster master URL")
