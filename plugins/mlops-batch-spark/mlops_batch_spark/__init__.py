"""mlops-batch-spark: the ``spark`` batch scoring engine of mlops-core.

Chosen in the stack (or with ``mlops batch --engine spark``)::

    [batch]
    backend = "spark"
    master = "spark://spark-master:7077"   # default local[*]
    conf = { "spark.executor.memory" = "4g" }

Public names load lazily (PEP 562): importing the package does not import pyspark.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = ["__version__", "SparkEngine", "SparkConfig"]

_LAZY = {"SparkEngine": "engine", "SparkConfig": "engine"}

if TYPE_CHECKING:  # pragma: no cover
    from .engine import SparkConfig, SparkEngine


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
