"""Driver side: list the input files, give each its output file, drop those already complete.

One partition per input file, one output file per partition, at the same relative
path under the output folder (hive ``k=v/`` folders kept, extension set by the
output format). Because each output is written atomically
(:func:`mlops_core.batch.worker.write_table`), an output file that exists is
complete: a re-run skips it (:func:`pending`), and scoring a partition twice
replaces the file with an identical one. That is the exactly-once argument.
"""

from __future__ import annotations

import posixpath
from typing import Any, Mapping, Sequence

from .types import BatchOptions, PartitionTask
from .worker import _EXTENSIONS, _local_path, is_local, open_fs

__all__ = ["plan", "pending", "list_inputs", "output_exists"]

_OUT_EXT = {"parquet": ".parquet", "csv": ".csv"}


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _wanted(rel: str, options: BatchOptions) -> bool:
    suffix = posixpath.splitext(rel)[1].lower()
    fmt = _EXTENSIONS.get(suffix)
    return fmt is not None and (options.input_format is None or options.input_format == fmt)


def _join(root_url: str, rel: str) -> str:
    return root_url.rstrip("/") + "/" + rel


def list_inputs(input_url: str, options: BatchOptions = BatchOptions(),
                storage_options: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(url, relative path)`` of every input file, sorted: the file itself, or a folder's files.

    A folder is searched recursively for ``*.parquet``/``*.pq``/``*.csv`` (or only
    those of ``options.input_format``); names or folders starting with ``.`` or
    ``_`` (``_SUCCESS``, ``.tmp`` files, ``_delta_log``) are ignored.
    """
    from ..errors import NotFoundError

    fs, root = open_fs(input_url, storage_options)
    if not fs.exists(root):
        raise NotFoundError(f"input {input_url} does not exist", hint="check the URL and its credentials")
    base = input_url.rstrip("/")
    if fs.isfile(root):
        return [(input_url, posixpath.basename(root))]
    root = root.rstrip("/")
    found = []
    for path in fs.find(root):
        rel = path[len(root):].lstrip("/")
        if rel and not _hidden(rel) and _wanted(rel, options):
            found.append((_join(base, rel), rel))
    if not found:
        raise NotFoundError(f"no input files in {input_url}",
                            hint="batch scoring reads *.parquet, *.pq and *.csv files (hidden and _ files ignored)")
    return sorted(found, key=lambda item: item[1])


def _output_rel(rel: str, options: BatchOptions) -> str:
    stem, _ = posixpath.splitext(rel)
    return stem + _OUT_EXT[options.output_format]


def _inside(child: str, parent: str) -> bool:
    child, parent = child.rstrip("/") + "/", parent.rstrip("/") + "/"
    return child.startswith(parent)


def plan(bundle_url: str, bundle_digest: str, input_url: str, output_url: str,
         options: BatchOptions = BatchOptions(), *,
         storage_options: Mapping[str, Any] | None = None) -> list[PartitionTask]:
    """One :class:`PartitionTask` per input file; ``output_url`` is a folder (created by the workers)."""
    from ..errors import InvalidInputError

    if options.output_format not in _OUT_EXT:
        raise InvalidInputError(f"unknown output format {options.output_format!r}", hint="use parquet or csv")
    if options.input_format not in (None, "parquet", "csv"):
        raise InvalidInputError(f"unknown input format {options.input_format!r}", hint="use parquet or csv")
    if int(options.batch_rows) < 1:
        raise InvalidInputError("batch_rows must be at least 1", hint="rows per predict call, e.g. 262144")
    if _inside(output_url, input_url) or _inside(input_url, output_url):
        raise InvalidInputError(f"the output {output_url} and the input {input_url} overlap",
                                hint="write the predictions to a folder outside the input dataset")
    files = list_inputs(input_url, options, storage_options)
    return [PartitionTask(index=i, input_url=url, output_url=_join(output_url, _output_rel(rel, options)),
                          bundle_url=bundle_url, bundle_digest=bundle_digest, options=options,
                          storage_options=dict(storage_options or {}))
            for i, (url, rel) in enumerate(files)]


def output_exists(tasks: Sequence[PartitionTask]) -> list[bool]:
    """Whether each task's output file exists (one listing per output folder, not one request per file)."""
    existing: set[str] = set()
    if tasks:
        first = tasks[0]
        if is_local(first.output_url):
            import os

            return [os.path.isfile(_local_path(t.output_url)) for t in tasks]
        fs, _ = open_fs(first.output_url, first.storage_options)
        fs.invalidate_cache()
        roots = {posixpath.dirname(open_fs(t.output_url, t.storage_options)[1]) for t in tasks}
        for root in roots:
            if fs.exists(root):
                existing.update(p.rstrip("/") for p in fs.ls(root, detail=False))
        return [open_fs(t.output_url, t.storage_options)[1] in existing for t in tasks]
    return []


def pending(tasks: Sequence[PartitionTask], *, overwrite: bool = False) -> list[PartitionTask]:
    """The tasks still to run: all with ``overwrite``, else those without an output file."""
    if overwrite:
        return list(tasks)
    return [t for t, done in zip(tasks, output_exists(tasks)) if not done]
