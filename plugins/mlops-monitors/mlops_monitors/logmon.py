"""The ``log`` monitor: JSON lines of lifecycle events and sampled predictions, in the stack's storage.

Records are buffered on a background thread and written in batches (every
``batch_records`` records or ``flush_interval_s`` seconds, and on close) as new
objects, never appended to, so any ArtifactStore (S3 included) works:

* ``logs/predictions/<model>/<YYYY-MM-DD>/<HHMMSS>-<uuid>.jsonl``: one line per
  sampled call: ``{"ts", "model", "version", "latency_s", "batch_size", "error",
  "request_id" (when the caller sent one), "inputs": {name: nested list}, "outputs": {...}}``;
* ``logs/events/<YYYY-MM-DD>/<HHMMSS>-<uuid>.jsonl``: ``{"ts", "event", ...}`` for
  versions registered or deleted, aliases moved, images built, deployments,
  drift detected and alerts.

``mlops monitor replay`` reads the prediction logs back into drift analysis.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import random
import threading
import time
import uuid
from typing import Any, Iterator, Mapping

import attrs

from mlops_core.entities import to_json
from mlops_core.plugins import hookimpl

from ._base import MonitorBase
from ._worker import BackgroundWorker

__all__ = ["LogMonitorConfig", "LogMonitor", "create_monitor", "iter_prediction_records", "prediction_prefix"]

log = logging.getLogger("mlops_monitors.log")


def prediction_prefix(model: str) -> str:
    return f"logs/predictions/{model}/"


@attrs.frozen
class LogMonitorConfig:
    """Settings of ``[[monitors]] backend = "log"``.

    ``sample_rate``: fraction of prediction calls logged (1.0 = all; replay
    fidelity vs cost). ``max_rows``: rows kept per logged call (big batches are
    truncated, and ``truncated`` is recorded). ``log_inputs``/``log_outputs``:
    switch payloads off when they are sensitive. Batching: ``batch_records``,
    ``flush_interval_s``; ``queue_size`` bounds memory (excess is dropped and counted).
    """

    sample_rate: float = attrs.field(default=0.1, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    max_rows: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    log_inputs: bool = True
    log_outputs: bool = True
    batch_records: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    flush_interval_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    queue_size: int = 10_000
    prefix: str = "logs"
    seed: int | None = None


def _jsonable(value: Any, max_rows: int) -> tuple[Any, bool]:
    truncated = False
    shape = getattr(value, "shape", None)
    if shape is not None:  # numpy (or array-like with tolist)
        if len(shape) >= 1 and shape[0] > max_rows:
            value = value[:max_rows]
            truncated = True
        return value.tolist(), truncated
    elif isinstance(value, (list, tuple)) and len(value) > max_rows:
        value, truncated = list(value[:max_rows]), True
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value, truncated


class LogMonitor(MonitorBase):
    """Buffers JSON-lines records and writes them to storage in batches, off the serving thread."""

    kind = "log"

    def __init__(self, config: LogMonitorConfig | None = None, context: Any = None, storage: Any = None) -> None:
        super().__init__(context, storage)
        self.config = config or LogMonitorConfig()
        self._rng = random.Random(self.config.seed)
        self._day_cache: tuple[int, str] = (-1, "")
        self._buffers: dict[str, list[bytes]] = {}
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._write_lock = threading.Lock()
        self.records_written = 0
        self.objects_written = 0
        self.worker = BackgroundWorker("log", self._process, maxsize=self.config.queue_size,
                                       tick=self._tick, tick_interval_s=min(1.0, self.config.flush_interval_s))

    # ------------------------------------------------------------ hot path
    @hookimpl
    def mlops_predictions_batch(self, batch: Any) -> None:
        # One decision per call, one queue item per batch: the records are built on the worker.
        rate = self.config.sample_rate
        if rate >= 1.0:
            picked: Any = range(batch.count)
        elif rate > 0.0:
            rnd = self._rng.random
            picked = [i for i in range(batch.count) if rnd() < rate]
        else:
            return
        if picked:
            self.worker.submit(("batch", (batch, picked)))

    # ------------------------------------------------------ lifecycle hooks
    def _event(self, name: str, **fields: Any) -> None:
        self.worker.submit(("event", {"event": name, **fields}))

    @hookimpl
    def mlops_version_registered(self, version: Any) -> None:
        self._event("version_registered", version=to_json(version))

    @hookimpl
    def mlops_version_deleted(self, model: str, version: int) -> None:
        self._event("version_deleted", model=model, version=version)

    @hookimpl
    def mlops_alias_changed(self, change: Any) -> None:
        self._event("alias_changed", change=to_json(change))

    @hookimpl
    def mlops_image_built(self, version: Any, image: Any) -> None:
        self._event("image_built", version=to_json(version), image=to_json(image))

    @hookimpl
    def mlops_deployment_changed(self, deployment: Any, action: str) -> None:
        self._event("deployment_changed", action=action, deployment=to_json(deployment))

    @hookimpl
    def mlops_drift_detected(self, report: Any) -> None:
        summary = {"model": getattr(report, "model", None), "version": getattr(report, "version", None),
                   "drifted": list(getattr(report, "drifted", []))}
        self._event("drift_detected", report=summary)

    @hookimpl
    def mlops_alert(self, alert: dict[str, Any]) -> None:
        self._event("alert", alert=to_json(alert))

    # ---------------------------------------------------- background work
    def _process(self, items: list[tuple[str, Any]]) -> None:
        for kind, payload in items:
            if kind == "batch":
                batch, picked = payload
                for event in _picked_events(batch, picked):
                    self._record("prediction", event)
            else:
                self._record(kind, payload)

    def _day(self, ts: float) -> str:
        day = int(ts // 86400)
        if day != self._day_cache[0]:  # strftime once a day, not once a record
            self._day_cache = (day, dt.datetime.fromtimestamp(day * 86400, dt.timezone.utc).strftime("%Y-%m-%d"))
        return self._day_cache[1]

    def _record(self, kind: str, payload: Any) -> None:
        if kind == "prediction":
            ev = payload
            ts = ev.timestamp or time.time()
            record: dict[str, Any] = {"ts": ts, "model": ev.model, "version": ev.version,
                                      "latency_s": ev.latency_s, "batch_size": ev.batch_size, "error": ev.error}
            if ev.request_id is not None:
                record["request_id"] = ev.request_id
            truncated = False
            max_rows = self.config.max_rows
            if self.config.log_inputs:
                values = record["inputs"] = {}
                for name, value in ev.inputs.items():
                    values[name], cut = _jsonable(value, max_rows)
                    truncated |= cut
            if self.config.log_outputs:
                values = record["outputs"] = {}
                for name, value in (ev.outputs or {}).items():
                    values[name], cut = _jsonable(value, max_rows)
                    truncated |= cut
            if truncated:
                record["truncated"] = True
            key_dir = f"{self.config.prefix}/predictions/{ev.model}/{self._day(ts)}"
        else:
            ts = time.time()
            record = {"ts": ts, **payload}
            key_dir = f"{self.config.prefix}/events/{self._day(ts)}"
        line = json.dumps(record, default=str, separators=(",", ":")).encode("utf-8") + b"\n"
        with self._write_lock:
            self._buffers.setdefault(key_dir, []).append(line)
            self._buffered += 1
            full = self._buffered >= self.config.batch_records
        if full:
            self.write_buffers()

    def _tick(self) -> None:
        if self._buffered and time.monotonic() - self._last_flush >= self.config.flush_interval_s:
            self.write_buffers()

    def write_buffers(self) -> None:
        """Write every buffered record now, one object per folder (runs on the worker thread or at close)."""
        with self._write_lock:
            buffers, self._buffers, self._buffered = self._buffers, {}, 0
            self._last_flush = time.monotonic()
        for key_dir, lines in buffers.items():
            key = f"{key_dir}/{dt.datetime.now(dt.timezone.utc):%H%M%S}-{uuid.uuid4().hex}.jsonl"
            try:
                self.storage.write(key, io.BytesIO(b"".join(lines)))
            except Exception:
                # counted with the worker's errors (mlops_monitor_errors_total); serving never sees it
                self.worker.errors += 1
                log.exception("could not write %d log records to %s; they are lost", len(lines), key)
                continue
            self.records_written += len(lines)
            self.objects_written += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Process the queue and write every buffered record (for tests and batch jobs)."""
        done = self.worker.flush(timeout)
        self.write_buffers()
        return done

    def close(self) -> None:
        super().close()
        if self._buffered:
            self.write_buffers()


def _picked_events(batch: Any, picked: Any) -> Iterator[Any]:
    from mlops_core.entities import PredictionEvent

    for i in picked:
        yield PredictionEvent(
            model=batch.model, version=batch.version,
            inputs={n: v[i] for n, v in batch.inputs.items() if v[i] is not None},
            outputs={n: v[i] for n, v in batch.outputs.items() if v[i] is not None},
            latency_s=float(batch.latency_s[i]), batch_size=int(batch.batch_size[i]), error=batch.errors[i],
            timestamp=float(batch.timestamp[i]), request_id=batch.request_ids[i])


def iter_prediction_records(storage: Any, model: str, *, version: int | None = None,
                            since: str | None = None, until: str | None = None) -> Iterator[Mapping[str, Any]]:
    """Yield logged prediction records of ``model`` (optionally one version, dates ``YYYY-MM-DD`` inclusive)."""
    for key in storage.list(prediction_prefix(model)):
        parts = key.split("/")
        day = parts[-2] if len(parts) >= 2 else ""
        if (since and day < since) or (until and day > until):
            continue
        with storage.open(key) as f:
            for raw in f:
                if not raw.strip():
                    continue
                record = json.loads(raw)
                if version is not None and record.get("version") != version:
                    continue
                yield record


def create_monitor(config: LogMonitorConfig, context: Any) -> LogMonitor:
    return LogMonitor(config, context)
