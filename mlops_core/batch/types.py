"""The data of a batch job: tasks sent to workers, their results, the job's result.

Plain attrs classes with no heavy import: they are pickled to and from workers by
every engine (a process pool, Dask, Ray, Spark), so they hold only strings, numbers,
mappings and (in results) small numpy arrays.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import attrs

__all__ = ["BatchOptions", "PartitionTask", "PartitionResult", "BatchResult", "FORMATS"]

#: File formats a batch job reads and writes.
FORMATS = ("parquet", "csv")


def _freeze(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


def _tuple(value: Sequence[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


@attrs.frozen
class BatchOptions:
    """How a partition is read, scored and written (the same for every partition of a job).

    :ivar columns: input column -> model input name; empty: the model's inputs are
        taken from the columns of the same names, else (when the signature names
        none of them) the first columns in order.
    :ivar keys: input columns copied unchanged next to the predictions (``id``...).
    :ivar input_format: ``"parquet"`` or ``"csv"``; None: from each file's extension.
    :ivar output_format: ``"parquet"`` (default) or ``"csv"``.
    :ivar header: CSV header rule of :mod:`mlops_core.tabular` (True/False force it; None detects).
    :ivar batch_rows: rows per ``predict`` call inside a partition (bounds memory).
    :ivar sample_rows: rows of input and output returned to the driver for monitors.
    """

    columns: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze)
    keys: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    input_format: Literal["parquet", "csv"] | None = None
    output_format: Literal["parquet", "csv"] = "parquet"
    header: bool | None = None
    batch_rows: int = 262_144
    sample_rows: int = 1000


@attrs.frozen
class PartitionTask:
    """One input file to score into one output file: the unit every engine schedules.

    ``bundle_url`` is where workers find the model bundle folder: a local path (one
    machine) or an fsspec URL every worker can read (a cluster); ``bundle_digest``
    is the manifest digest the worker must see before anything is unpickled.
    """

    index: int
    input_url: str
    output_url: str
    bundle_url: str
    bundle_digest: str
    options: BatchOptions = attrs.field(factory=BatchOptions)
    storage_options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze)
    attempt: int = 1


@attrs.frozen
class PartitionResult:
    """What a worker reports for one task (``error`` set instead of raising)."""

    index: int
    input_url: str
    output_url: str
    rows: int = 0
    seconds: float = 0.0
    error: str | None = None
    skipped: bool = False
    attempt: int = 1
    worker: str = ""
    #: Up to ``sample_rows`` rows of the model inputs and outputs (name -> numpy array), for monitors.
    sample_inputs: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    sample_outputs: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "input_url": self.input_url, "output_url": self.output_url, "rows": self.rows,
                "seconds": round(self.seconds, 6), "error": self.error, "skipped": self.skipped,
                "attempt": self.attempt, "worker": self.worker}


@attrs.frozen
class BatchResult:
    """The outcome of a batch job.

    ``rows`` counts the rows written by this run (skipped partitions are not
    scored again, so they add none); ``partitions`` is the number of partitions of
    the dataset, ``skipped`` those already complete, ``failed`` those still failing
    after every retry.
    """

    model: str
    version: int | None
    engine: str
    rows: int
    partitions: int
    skipped: int
    failed: tuple[PartitionResult, ...] = attrs.field(default=(), converter=tuple)
    seconds: float = 0.0
    output_url: str = ""
    retried: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else math.inf if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        rps = self.rows_per_second
        return {"model": self.model, "version": self.version, "engine": self.engine, "rows": self.rows,
                "partitions": self.partitions, "skipped": self.skipped, "retried": self.retried,
                "failed": [f.to_dict() for f in self.failed], "seconds": round(self.seconds, 6),
                "rows_per_second": None if math.isinf(rps) else round(rps, 1), "output_url": self.output_url,
                "ok": self.ok}
