"""Batch scoring: score a dataset of files with a registered model on a pluggable engine.

The driver (``mlops_core.batch_score`` / ``mlops batch``) plans one
:class:`PartitionTask` per input file (:mod:`.plan`), an engine
(:class:`~mlops_core.interfaces.BatchEngine`: ``local``, ``dask``, ``ray``,
``spark``) runs :func:`run_task` on its workers (:mod:`.worker`), and the driver
retries failures, fires events and returns a :class:`BatchResult` (:mod:`.job`).

Importing this package is cheap: pyarrow and numpy are imported by the worker
and planner functions when they run.
"""

from __future__ import annotations

from typing import Any

from ..interfaces import BatchEngine

__all__ = ["BatchEngine", "PartitionTask", "PartitionResult", "BatchResult", "BatchOptions", "run_task"]

#: Loaded on first use (PEP 562): ``mlops --help`` imports this package to add ``mlops batch``
#: and must not pay for the data types and the worker (about 12 ms of start-up).
_LAZY = {"PartitionTask": ".types", "PartitionResult": ".types", "BatchResult": ".types",
         "BatchOptions": ".types", "run_task": ".worker"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
