"""What runs on a worker: load the verified model once per process, read, score, write one partition.

Every engine ships :func:`run_task` to its workers (a process pool, Dask, Ray,
Spark): top-level functions only, so they pickle by reference. pyarrow and numpy
are imported inside the functions, never when ``mlops_core`` is imported.

Exactly once: a partition's output key is fixed by the plan (one output file per
input file) and written atomically (a local temporary renamed over it; an object
store's single PUT), so a partition scored twice (a retry, a worker lost after
writing) leaves one complete file, never a duplicate or a half-written one.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from .types import BatchOptions, PartitionResult, PartitionTask

__all__ = ["ModelHandle", "load_model", "run_task", "score_table", "read_partition", "write_table",
           "open_fs", "is_local", "input_format", "input_columns", "check_columns"]

_MODELS: dict[str, "ModelHandle"] = {}
_LOCK = threading.Lock()
#: How many times this process built a model (a test reads it: once per worker, never per partition).
LOADS = {"count": 0}


@attrs.frozen
class ModelHandle:
    """A loaded, verified model and what scoring needs of its signature."""

    model: Any
    digest: str
    #: The bundle's V2 signature (None for bundles saved without one).
    signature: Any
    predict: Callable[[Any], Any]

    @property
    def input_kind(self) -> str:
        return self.signature.input_kind if self.signature is not None else "ndarray"


# ------------------------------------------------------------------ filesystems
def is_local(url: str) -> bool:
    """True for plain paths and ``file://`` URLs (read and written without fsspec)."""
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def open_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of ``url``."""
    import fsspec

    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


# ------------------------------------------------------------------- the model
def _bundle_cache(digest: str) -> Path:
    root = Path(tempfile.gettempdir()) / f"mlops-batch-bundles-{os.getuid() if hasattr(os, 'getuid') else 0}"
    root.mkdir(mode=0o700, exist_ok=True)
    return root / digest.replace(":", "-")


def _fetch_bundle(bundle_url: str, digest: str, fresh: bool = False) -> Path:
    """A local folder with the bundle's files: the path itself, or a private copy of a remote folder.

    The copy is not trusted: :func:`load_model` verifies every byte against ``digest``
    before anything is parsed. It is made in a temporary folder renamed into place,
    so concurrent workers on one machine never see half a copy.
    """
    if is_local(bundle_url):
        return Path(_local_path(bundle_url))
    dest = _bundle_cache(digest)
    _remove_stale_copies(dest)
    if fresh and dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    if dest.is_dir():
        return dest
    fs, root = open_fs(bundle_url)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex}")
    try:
        fs.get(root.rstrip("/") + "/", str(tmp) + "/", recursive=True)
        try:
            os.rename(tmp, dest)
        except OSError:  # another worker of this machine won the race: use its copy
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


#: A half-made bundle copy older than this was left by a killed worker (a copy takes seconds).
STALE_COPY_S = 3600.0


def _remove_stale_copies(dest: Path) -> None:
    """Remove the ``.<digest>.tmp-*`` folders killed workers left next to ``dest`` (older than an hour)."""
    cutoff = time.time() - STALE_COPY_S
    for leftover in dest.parent.glob(f".{dest.name}.tmp-*"):
        try:
            if leftover.lstat().st_mtime < cutoff:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def remove_partial_writes(output_urls: Sequence[str]) -> int:
    """Delete the temporary files killed writers left beside the complete local outputs; returns how many.

    :func:`write_table` writes ``.<name>.tmp-<pid>-<random>`` and renames it over
    ``<name>``; a worker killed in between leaves the temporary file. The driver calls
    this when a job has ended: a partition's output is complete then, so any
    temporary file beside it is dead. Object stores need nothing (one PUT per output).
    """
    removed = 0
    for url in output_urls:
        if not is_local(url):
            continue
        target = Path(_local_path(url))
        if not target.is_file():
            continue
        for leftover in target.parent.glob(f".{target.name}.tmp-*"):
            try:
                leftover.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def load_model(bundle_url: str, bundle_digest: str) -> ModelHandle:
    """The model of the bundle at ``bundle_url``, loaded once per process and cached by digest.

    Every file's sha256 is checked against the manifest whose digest must be
    ``bundle_digest`` *before* the format parses a byte (``load_bundle``): a
    tampered bundle raises IntegrityError and nothing is unpickled.
    """
    handle = _MODELS.get(bundle_digest)
    if handle is not None:
        return handle
    with _LOCK:
        handle = _MODELS.get(bundle_digest)
        if handle is None:
            from ..bundle import load_bundle
            from ..errors import IntegrityError
            from ..plugins import get_plugin_manager

            path = _fetch_bundle(bundle_url, bundle_digest)
            try:
                loaded = load_bundle(path, expected_digest=bundle_digest, plugins=get_plugin_manager())
            except IntegrityError:
                if is_local(bundle_url):
                    raise
                # a corrupt cached copy is fetched again once; a second failure is the source's
                path = _fetch_bundle(bundle_url, bundle_digest, fresh=True)
                loaded = load_bundle(path, expected_digest=bundle_digest, plugins=get_plugin_manager())
            model = loaded.model
            predict = getattr(model, "predict", None) or model
            if not callable(predict):
                raise TypeError(f"the model in {bundle_url} ({type(model).__name__}) has no predict method")
            handle = ModelHandle(model, loaded.digest, loaded.signature, predict)
            _MODELS[bundle_digest] = handle
            LOADS["count"] += 1
    return handle


# ------------------------------------------------------------------ reading
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def input_format(url: str, options: BatchOptions) -> str:
    """``options.input_format``, else the format of the file's extension."""
    if options.input_format:
        return options.input_format
    from ..errors import InvalidInputError

    suffix = Path(url.split("?")[0]).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise InvalidInputError(f"cannot tell the format of {url} from its extension {suffix!r}",
                                hint="name files *.parquet or *.csv, or pass input_format='parquet'|'csv'")
    return _EXTENSIONS[suffix]


def _csv_header(head: bytes, options: BatchOptions, names: Sequence[str]) -> bool:
    """The header rule of :mod:`mlops_core.tabular`, applied to the first rows of the file."""
    if options.header is not None:
        return options.header
    import csv

    from ..tabular import has_header

    lines = head.decode("utf-8", errors="replace").splitlines()
    if len(head) >= _HEAD_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut
    rows = [r for r in csv.reader(lines) if r and any(c.strip() for c in r)]
    return has_header(rows, names)


_HEAD_BYTES = 1 << 16


def _read_csv(source: Any, options: BatchOptions, names: Sequence[str]) -> Any:
    """A CSV file as a Table; without a header row its columns are named ``"0"``, ``"1"``..."""
    import csv

    import pyarrow.csv as pacsv

    head = source.read(_HEAD_BYTES)
    source.seek(0)
    header = _csv_header(head, options, names)
    lines = head.decode("utf-8", errors="replace").splitlines()
    width = len(next(csv.reader(lines[:1]), [])) if lines else 0
    read = pacsv.ReadOptions(column_names=None if header else [str(i) for i in range(width)], block_size=1 << 24)
    return pacsv.read_csv(source, read_options=read)


def _hive_values(url: str) -> dict[str, str]:
    """``k=v`` folders of a partitioned dataset path (``.../year=2024/part-0.parquet``)."""
    out = {}
    for part in url.split("/")[:-1]:
        key, eq, value = part.partition("=")
        if eq and key:
            out[key] = value
    return out


def read_partition(task: PartitionTask, needed: Callable[[Sequence[str]], Sequence[str]] | None = None) -> Any:
    """The partition's rows as a pyarrow Table (only the ``needed`` columns of Parquet files).

    ``needed(all_columns) -> columns`` picks the columns from the file's schema
    (Parquet reads only those). Key columns missing from a file but present as a
    hive ``k=v`` folder of its path are added as constant string columns.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    fmt = input_format(task.input_url, task.options)
    local = is_local(task.input_url)
    fs, path = (None, _local_path(task.input_url)) if local else open_fs(task.input_url, task.storage_options)
    names = _signature_names(task)
    hive = _hive_values(task.input_url)

    def pick(columns: list[str]) -> list[str]:
        extra = [k for k in task.options.keys if k not in columns and k in hive]
        return [c for c in (needed([*columns, *extra]) if needed else columns) if c in columns]

    if fmt == "parquet" and local:  # pyarrow's own file reader: no Python file object in the way
        pf = pq.ParquetFile(path, memory_map=True)
        table = pf.read(columns=pick(list(pf.schema_arrow.names)), use_threads=False)
    else:
        with (open(path, "rb") if local else fs.open(path, "rb")) as f:
            if fmt == "parquet":
                pf = pq.ParquetFile(f)
                table = pf.read(columns=pick(list(pf.schema_arrow.names)), use_threads=False)
            else:
                table = _read_csv(f, task.options, names)
                table = table.select(pick(table.column_names))
    for key in task.options.keys:
        if key not in table.column_names and key in hive:
            table = table.append_column(key, pa.array([hive[key]] * table.num_rows, pa.string()))
    return table


def input_columns(task: PartitionTask, names: Sequence[str] = ()) -> list[str]:
    """The column names of the task's input file, read from its metadata or first line only."""
    import pyarrow.parquet as pq

    local = is_local(task.input_url)
    fs, path = (None, _local_path(task.input_url)) if local else open_fs(task.input_url, task.storage_options)
    with (open(path, "rb") if local else fs.open(path, "rb")) as f:
        if input_format(task.input_url, task.options) == "parquet":
            columns = list(pq.ParquetFile(f).schema_arrow.names)
        else:
            import csv

            head = f.read(_HEAD_BYTES)
            lines = head.decode("utf-8", errors="replace").splitlines()
            first = [c.strip() for c in next(csv.reader(lines[:1]), [])]
            columns = first if _csv_header(head, task.options, names) else [str(i) for i in range(len(first))]
    hive = _hive_values(task.input_url)
    return columns + [k for k in task.options.keys if k not in columns and k in hive]


def check_columns(task: PartitionTask, signature: Any) -> None:
    """Raise InvalidInputError now, in the driver, when the first file's columns cannot feed the model.

    Reads the file's schema only (and the signature from the manifest: nothing is
    unpickled), so a wrong ``--columns`` or ``--keys`` fails before any worker starts.
    """
    names = [t.name for t in signature.inputs] if signature is not None and signature.input_kind != "ndarray" else []
    handle = ModelHandle(None, task.bundle_digest, signature, lambda x: x)
    _mapping(input_columns(task, names), handle, task.options)


def _signature_names(task: PartitionTask) -> list[str]:
    handle = _MODELS.get(task.bundle_digest)
    sig = handle.signature if handle is not None else None
    return [t.name for t in sig.inputs] if sig is not None and sig.input_kind != "ndarray" else []


# ------------------------------------------------------------------ mapping
@attrs.frozen
class _Mapping:
    """Input columns feeding the model: ``sources[i]`` becomes model input ``targets[i]``."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    kind: str
    dtype: str | None = None


_V2_TO_NUMPY = {"FP64": "float64", "FP32": "float32", "FP16": "float16", "INT64": "int64", "INT32": "int32",
                "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


def _mapping(columns: Sequence[str], handle: ModelHandle, options: BatchOptions) -> _Mapping:
    """Which input columns feed which model input (see :class:`~mlops_core.batch.types.BatchOptions`)."""
    from ..errors import InvalidInputError

    sig = handle.signature
    keys = set(options.keys)
    mapped = dict(options.columns)
    missing = [c for c in [*mapped, *options.keys] if c not in columns]
    if missing:
        raise InvalidInputError(f"input column(s) {', '.join(map(repr, missing))} not found",
                                hint=f"the input has columns {', '.join(columns)} (CSV without a header row: "
                                     "0, 1, 2...; --header/--no-header decides)")
    if sig is not None and sig.input_kind in ("dataframe", "dict"):
        source_of = {model_name: col for col, model_name in mapped.items()}
        sources, targets = [], []
        for spec in sig.inputs:
            col = source_of.get(spec.name, spec.name if spec.name in columns else None)
            if col is None:
                raise InvalidInputError(
                    f"the model input {spec.name!r} has no column in the input (columns: {', '.join(columns)})",
                    hint=f"map a column onto it: columns={{'my_column': {spec.name!r}}} (--columns my_column={spec.name})")
            sources.append(col)
            targets.append(spec.name)
        return _Mapping(tuple(sources), tuple(targets), sig.input_kind)
    # one tensor: the features are columns in order
    spec = sig.inputs[0] if sig is not None and sig.inputs else None
    width = spec.shape[1] if spec is not None and len(spec.shape) == 2 and spec.shape[1] > 0 else None
    if mapped:
        order = list(mapped)
        if all(str(v).isdigit() for v in mapped.values()):
            order.sort(key=lambda c: int(mapped[c]))
        sources = order
    else:
        sources = [c for c in columns if c not in keys]
    if width is not None and len(sources) != width:
        raise InvalidInputError(
            f"the model takes {width} feature(s) but {len(sources)} input column(s) would feed it: "
            f"{', '.join(sources)}",
            hint="name the key columns (--keys id) so they are not features, or list the feature columns "
                 "in order (--columns a=0,b=1,...)")
    name = spec.name if spec is not None else "input-0"
    dtype = _V2_TO_NUMPY.get(spec.datatype) if spec is not None else None
    return _Mapping(tuple(sources), (name,), "ndarray", dtype)


def _model_input(table: Any, m: _Mapping) -> Any:
    """The model's input for a slice of the table: a 2-D ndarray, a DataFrame or a dict of arrays."""
    import numpy as np

    if m.kind == "ndarray":
        cols = [table.column(c) for c in m.sources]
        dtype = np.dtype(m.dtype) if m.dtype else np.result_type(*[c.type.to_pandas_dtype() for c in cols])
        x = np.empty((table.num_rows, len(cols)), dtype=dtype)  # one copy, straight into row-major order
        for j, col in enumerate(cols):
            x[:, j] = col.to_numpy()
        return x
    sub = table.select(list(m.sources)).rename_columns(list(m.targets))
    if m.kind == "dataframe":
        return sub.to_pandas()
    return {name: sub.column(name).to_numpy() for name in m.targets}


def _outputs(y: Any) -> dict[str, Any]:
    """Prediction columns from ``predict``'s result (see docs/batch.md: naming of prediction columns)."""
    import numpy as np

    if hasattr(y, "columns") and hasattr(y, "to_numpy"):  # a DataFrame
        return {str(c): y[c].to_numpy() for c in y.columns}
    if isinstance(y, Mapping):
        items = {str(k): np.asarray(v) for k, v in y.items()}
    else:
        items = {"prediction": np.asarray(y)}
    out = {}
    for name, arr in items.items():
        if arr.ndim <= 1:
            out[name] = arr.reshape(-1)
        else:
            flat = arr.reshape(arr.shape[0], -1)
            for j in range(flat.shape[1]):
                out[f"{name}_{j}"] = flat[:, j]
    return out


def _score(table: Any, handle: ModelHandle, options: BatchOptions, sample_rows: int) -> tuple[Any, Any, Any]:
    """(output table, sample inputs, sample outputs): ``predict`` over chunks of ``batch_rows`` rows."""
    import numpy as np
    import pyarrow as pa

    from ..errors import InvalidInputError

    m = _mapping(table.column_names, handle, options)
    step = max(1, int(options.batch_rows))
    parts: list[dict[str, Any]] = []
    sample_in = sample_out = None
    for offset in range(0, table.num_rows, step):
        chunk = table.slice(offset, step)
        x = _model_input(chunk, m)
        y = handle.predict(x)
        cols = _outputs(y)
        bad = [n for n, v in cols.items() if len(v) != chunk.num_rows]
        if bad:
            raise InvalidInputError(f"predict returned {len(cols[bad[0]])} values for {chunk.num_rows} rows",
                                    hint="batch scoring needs one prediction per input row")
        parts.append(cols)
        if sample_in is None and sample_rows > 0:
            n = min(sample_rows, chunk.num_rows)
            sample_in = ({m.targets[0]: x[:n]} if m.kind == "ndarray" else
                         {t: np.asarray(x[t])[:n] for t in m.targets})
            sample_out = {k: v[:n] for k, v in cols.items()}
    clash = sorted(set(options.keys) & set(parts[0] if parts else ()))
    if clash:
        raise InvalidInputError(f"key column(s) {', '.join(clash)} have the name of a prediction column",
                                hint="rename the key column in the input, or do not keep it as a key")
    keys = table.select(list(options.keys))
    if not parts:
        return keys.append_column("prediction", pa.nulls(0)), None, None
    for name in parts[0]:
        values = parts[0][name] if len(parts) == 1 else np.concatenate([p[name] for p in parts])
        keys = keys.append_column(name, pa.array(values))
    return keys, sample_in, sample_out


def score_table(table: Any, model_handle: ModelHandle, options: BatchOptions) -> Any:
    """Key columns + prediction columns for ``table`` (a pyarrow Table or RecordBatch): the pure scoring step.

    For engines that get the rows from their own readers (Spark ``mapInArrow``).
    """
    import pyarrow as pa

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    return _score(table, model_handle, options, 0)[0]


# ------------------------------------------------------------------ writing
def write_table(table: Any, url: str, fmt: str = "parquet", storage_options: Mapping[str, Any] | None = None,
                keys: Sequence[str] = ()) -> None:
    """Write ``table`` to ``url`` atomically: readers see no file or the whole file, never part of one.

    Local: a hidden temporary in the same folder, fsynced, renamed over the target.
    Object stores: the complete object in one PUT (an object appears whole or not at all).
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    import pyarrow.types as pat

    # Dictionary pages pay off for labels and strings, not for unique numeric keys (3x slower to write).
    dictionary = [f.name for f in table.schema if not (pat.is_integer(f.type) or pat.is_floating(f.type))
                  or f.name not in keys]

    def dump(sink: Any) -> None:
        if fmt == "csv":
            pacsv.write_csv(table, sink)
        else:
            pq.write_table(table, sink, use_dictionary=dictionary)

    if is_local(url):
        target = Path(_local_path(url))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                dump(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    buffer = io.BytesIO()
    dump(buffer)
    fs, path = open_fs(url, storage_options)
    fs.pipe_file(path, buffer.getvalue())


# ------------------------------------------------------------------ the task
def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    hint = getattr(exc, "hint", None)
    return f"{type(exc).__name__}: {message}" + (f" (hint: {hint})" if hint else "")


def run_task(task: PartitionTask) -> PartitionResult:
    """Score one partition: load the model (cached), read, predict, write atomically. Never raises.

    A failure becomes ``PartitionResult.error`` (exception type and message), so
    every engine reports it the same way and the core decides about retries.
    """
    start = time.perf_counter()
    common = dict(index=task.index, input_url=task.input_url, output_url=task.output_url, attempt=task.attempt,
                  worker=_worker_name())
    try:
        handle = load_model(task.bundle_url, task.bundle_digest)
        table = read_partition(task, lambda cols: _needed(cols, handle, task.options))
        out, sample_in, sample_out = _score(table, handle, task.options, task.options.sample_rows)
        write_table(out, task.output_url, task.options.output_format, task.storage_options, task.options.keys)
        return PartitionResult(rows=out.num_rows, seconds=time.perf_counter() - start, sample_inputs=sample_in,
                               sample_outputs=sample_out, **common)
    except Exception as exc:
        return PartitionResult(error=_describe(exc), seconds=time.perf_counter() - start, **common)


def _needed(columns: Sequence[str], handle: ModelHandle, options: BatchOptions) -> list[str]:
    """Columns a partition must read: the keys and the model's features (Parquet column projection)."""
    m = _mapping(columns, handle, options)
    return list(dict.fromkeys([*options.keys, *m.sources]))
