"""What runs in Spark's Python workers: one task descriptor in, one scored partition out.

Kept apart from :mod:`.engine` so the function Spark pickles is a top-level
function of an installed module (pickled by reference, not by value) and imports
nothing of the driver side. Spark reuses its Python workers
(``spark.python.worker.reuse``), so :func:`mlops_core.batch.run_task`'s
per-process model cache makes the model load once per worker, not per partition.
"""

from __future__ import annotations

import pickle
from typing import Any, Iterable, Iterator

__all__ = ["TASK_SCHEMA", "RESULT_SCHEMA", "ResultList", "score_partitions"]

#: The DataFrame of task descriptors: one row (and one Spark partition) per PartitionTask.
TASK_SCHEMA = "index long, task binary"
#: What every task yields: the pickled PartitionResult, or why the descriptor could not be run at all.
RESULT_SCHEMA = "index long, result binary, error string"


class ResultList:
    """Spark AccumulatorParam of a list: each task adds its results, the driver reads the growing list.

    Pickled to the workers with the accumulator, hence here (importable there, no
    pyspark import needed: Spark only calls ``zero`` and ``addInPlace``). A new list
    on every merge, never in place, so the driver reading ``.value`` while Spark's
    accumulator thread merges always sees a consistent list.
    """

    def zero(self, value: list[Any]) -> list[Any]:
        return []

    def addInPlace(self, value1: list[Any], value2: list[Any]) -> list[Any]:  # noqa: N802 (Spark's name)
        return value1 + value2


def score_partitions(batches: Iterable[Any], results: Any) -> Iterator[Any]:
    """``mapInArrow`` function: run :func:`run_task` for each task row and yield one result row each.

    Each result is also added to ``results`` (a list accumulator) so the driver sees
    it as soon as the Spark task ends, not when the whole job does. ``run_task``
    never raises; only a descriptor that cannot be unpickled here (a different
    mlops-core on the worker) becomes an ``error`` row without a result.
    """
    import pyarrow as pa

    from mlops_core.batch import run_task

    for batch in batches:
        for index, blob in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            payload, error = None, None
            try:
                task = pickle.loads(blob)
            except Exception as exc:
                error = (f"{type(exc).__name__}: {exc} (the task descriptor could not be read on the Spark worker; "
                         "install the same mlops-core version on the driver and the workers)")
            else:
                payload = pickle.dumps(run_task(task), protocol=pickle.HIGHEST_PROTOCOL)
            results.add([(index, payload, error)])
            yield pa.RecordBatch.from_arrays(
                [pa.array([index], pa.int64()), pa.array([payload], pa.binary()), pa.array([error], pa.string())],
                names=["index", "result", "error"])
