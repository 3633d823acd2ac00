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

from ..interfaces import BatchEngine
from .types import BatchOptions, BatchResult, PartitionResult, PartitionTask
from .worker import run_task

__all__ = ["BatchEngine", "PartitionTask", "PartitionResult", "BatchResult", "BatchOptions", "run_task"]
