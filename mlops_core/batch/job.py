"""The driver of a batch job: resolve the model, plan, run on the engine, retry, report.

What runs where: this module runs in the driver process (the ``mlops batch``
command, the caller of ``batch_score``). It resolves and verifies the model,
lists the input files, asks the engine to run :func:`~mlops_core.batch.worker.run_task`
on its workers, and handles each :class:`PartitionResult` as it arrives: progress,
one ``mlops_predictions_batch`` event per partition (from the sample the worker
returns, so monitors see batch traffic too), and retries of failed partitions.
It never reads the dataset itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from .types import BatchOptions, BatchResult, PartitionResult

if TYPE_CHECKING:  # pragma: no cover
    from ..interfaces import BatchEngine
    from ..stack import Stack

__all__ = ["run_job", "stage_bundle", "build_engine"]

log = logging.getLogger("mlops_core.batch")

Progress = Callable[[PartitionResult], None]


def _model_source(s: "Stack", uri: str) -> tuple[str, int | None, Path, str]:
    """(model name, version, verified local bundle folder, digest) of a model URI or a bundle folder."""
    from .. import api
    from ..bundle import verify_bundle
    from ..errors import IntegrityError

    if str(uri).startswith("models:/"):
        version, path = api.resolve_bundle(uri, stack=s)
        return version.model, version.version, path, version.artifact.digest
    if s.config.security.get("require_signature"):
        raise IntegrityError(f"{uri} is a bundle folder, which carries no signature, and this stack requires one",
                             hint="register it and score it as models:/NAME/VERSION, where its signature is checked")
    info = verify_bundle(uri)
    return Path(uri).resolve().name, None, Path(uri).resolve(), info.digest


def _signature(bundle_dir: Path) -> Any:
    """The bundle's signature from its manifest (already verified by ``_model_source``); nothing is unpickled."""
    from ..bundle import read_manifest
    from ..entities import Signature

    manifest, _ = read_manifest(bundle_dir)
    return Signature.from_dict(manifest["signature"]) if manifest.get("signature") else None


def stage_bundle(bundle_dir: Path, digest: str, bundle_url: str,
                 storage_options: Mapping[str, Any] | None = None) -> str:
    """Copy a verified bundle folder to ``<bundle_url>/<digest hex>`` (once) for workers on other machines.

    Workers verify every file against ``digest`` before loading, so the copy needs
    no trust; an existing copy with a manifest is reused.
    """
    from .worker import open_fs

    target = bundle_url.rstrip("/") + "/" + digest.split(":")[-1]
    fs, root = open_fs(target, storage_options)
    if not fs.exists(root.rstrip("/") + "/manifest.json"):
        files = sorted(p for p in bundle_dir.rglob("*") if p.is_file() and p.name != "manifest.json")
        for path in files:  # the manifest last: a copy without one is not reused
            fs.put_file(str(path), root.rstrip("/") + "/" + path.relative_to(bundle_dir).as_posix())
        fs.put_file(str(bundle_dir / "manifest.json"), root.rstrip("/") + "/manifest.json")
    return target


def build_engine(s: "Stack", engine: str | None, engine_config: Mapping[str, Any] | None) -> tuple["BatchEngine", bool]:
    """(engine, whether the caller owns it and must close it).

    No name and no settings: the stack's engine (``[batch]``). A name: that engine
    with ``engine_config``; settings only: the stack's engine with them on top.
    """
    from ..interfaces import BatchEngine
    from ..errors import ConfigError

    configured = s.config.components["batch"]
    if engine is None and not engine_config:
        return s.batch_engine, False
    name = engine or configured.backend
    settings = {**(dict(configured.settings) if name == configured.backend else {}), **dict(engine_config or {})}
    built = s.plugins.build("batch", name, settings, s.context(name))
    if not isinstance(built, BatchEngine):
        raise ConfigError(f"batch engine {name!r} built a {type(built).__name__}, not a BatchEngine",
                          hint="the plugin is broken; report it to its authors or choose another engine")
    return built, True


def _prediction_event(model: str, version: int | None, job: str, result: PartitionResult) -> Any:
    from ..entities import PredictionBatch

    return PredictionBatch(model=model, version=version, count=1, latency_s=[result.seconds],
                           batch_size=[result.rows], timestamp=[time.time()], errors=[None],
                           request_ids=[f"batch-{job}-{result.index}"],
                           inputs={k: [v] for k, v in (result.sample_inputs or {}).items()},
                           outputs={k: [v] for k, v in (result.sample_outputs or {}).items()})


def run_job(s: "Stack", uri: str, input_url: str, output_url: str, *, engine: str | None = None,
            engine_config: Mapping[str, Any] | None = None, options: BatchOptions = BatchOptions(),
            overwrite: bool = False, max_retries: int = 2, progress: "Progress | bool | None" = None,
            storage_options: Mapping[str, Any] | None = None, bundle_url: str | None = None) -> BatchResult:
    """Score ``input_url`` into ``output_url``; see :func:`mlops_core.api.batch_score`."""
    from ..errors import InvalidInputError
    from .plan import pending, plan
    from .worker import check_columns, remove_partial_writes

    if not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidInputError(f"max_retries must be a whole number >= 0, not {max_retries!r}")
    start = time.perf_counter()
    model, version, bundle_dir, digest = _model_source(s, uri)
    where = stage_bundle(bundle_dir, digest, bundle_url) if bundle_url else str(bundle_dir)
    tasks = plan(where, digest, input_url, output_url, options, storage_options=storage_options)
    check_columns(tasks[0], _signature(bundle_dir))
    todo = pending(tasks, overwrite=overwrite)
    bar = None
    if progress is True:
        from .progress import terminal_progress

        progress = bar = terminal_progress(len(todo))
    elif progress is False:
        progress = None
    s.start_monitors()
    events = s.events
    job = uuid.uuid4().hex[:12]
    rows = retried = 0
    failed: dict[int, PartitionResult] = {}
    eng, owned = build_engine(s, engine, engine_config)
    engine_name = eng.context.name if eng.context is not None else (engine or "?")

    reported: set[int] = set()

    def on_result(result: PartitionResult) -> None:
        nonlocal rows
        reported.add(result.index)
        if result.ok:
            rows += result.rows
            failed.pop(result.index, None)
            if events.has_prediction_listeners():
                events.predictions_batch(_prediction_event(model, version, job, result))
        else:
            failed[result.index] = result
            log.warning("partition %d (%s) failed on attempt %d: %s", result.index, result.input_url,
                        result.attempt, result.error)
        if progress is not None:
            progress(result)

    try:
        batch, attempt = list(todo), 1
        while batch:
            reported.clear()
            eng.run(batch, on_result=on_result)
            for t in batch:
                if t.index not in reported:  # an engine that lost a task without saying so
                    failed[t.index] = PartitionResult(t.index, t.input_url, t.output_url, attempt=t.attempt,
                                                      error="the engine returned no result for this partition")
            again = [t for t in batch if t.index in failed]
            if not again or attempt > max_retries:
                break
            attempt += 1
            retried += len(again)
            batch = [attrs.evolve(t, attempt=attempt) for t in again]
    finally:
        if bar is not None:
            bar.close()
        if owned:
            eng.close()
    leftovers = remove_partial_writes([t.output_url for t in todo])
    if leftovers:
        log.info("removed %d temporary file(s) that killed writers left in %s", leftovers, output_url)
    result = BatchResult(model=model, version=version, engine=engine_name, rows=rows, partitions=len(tasks),
                         skipped=len(tasks) - len(todo), failed=sorted(failed.values(), key=lambda r: r.index),
                         seconds=time.perf_counter() - start, output_url=output_url, retried=retried)
    events.batch_completed(result)
    return result
