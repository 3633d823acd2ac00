"""The ``prometheus`` monitor: request, prediction and error counters, latency and batch-size histograms.

Exposed in text format 0.0.4 through ``mlops_collect_metrics`` (a server's
``/metrics``), or pushed to a Pushgateway for batch jobs (``push_url``).

Off the hot path: the server hands calls over in batches
(``mlops_predictions_batch``, about every 200 ms), and a batch is folded into
the series with a few vectorised numpy calls under a per-series lock. Families (``mlops_`` namespace):

* ``mlops_requests_total{model,version}``: prediction calls, failed ones included;
* ``mlops_predictions_total{model,version}``: rows predicted by successful calls;
* ``mlops_prediction_errors_total{model,version}``: calls that failed;
* ``mlops_prediction_latency_seconds{model,version}``: histogram of call latency;
* ``mlops_prediction_batch_size{model,version}``: histogram of rows per call;
* ``mlops_hook_errors_total{plugin,hook}``: event-hook implementations that raised
  (the core's isolation counter), so a broken monitor shows on the dashboard;
* ``mlops_monitor_events_dropped_total{monitor}`` / ``mlops_monitor_errors_total{monitor}`` /
  ``mlops_monitor_cpu_seconds_total{monitor}``: background monitors that fell behind, failed
  while processing, and the CPU time they spent.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
import urllib.request
from typing import Any, Mapping

import attrs

from mlops_core.errors import BackendUnavailableError
from mlops_core.plugins import hookimpl

from ._base import MonitorBase, live_monitors

__all__ = ["PrometheusConfig", "PrometheusMonitor", "create_monitor", "CONTENT_TYPE", "push_text"]

log = logging.getLogger("mlops_monitors.prometheus")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _buckets(value: Any) -> tuple[float, ...]:
    out = tuple(float(v) for v in value)
    if not out or any(b >= a for a, b in zip(out[1:], out)):
        raise ValueError(f"buckets must be a non-empty increasing list of numbers (got {value!r})")
    return out


@attrs.frozen
class PrometheusConfig:
    """Settings of ``[[monitors]] backend = "prometheus"``.

    ``latency_buckets``/``batch_buckets``: histogram upper bounds (seconds / rows).
    ``push_url``: a Pushgateway base URL (``http://host:9091``) for batch jobs;
    metrics are pushed every ``push_interval_s`` seconds (0: only on close or
    ``push()``), to ``/metrics/job/<push_job>`` plus ``push_grouping`` labels,
    with ``push_method`` PUT (replace the group) or POST (merge).
    """

    latency_buckets: tuple[float, ...] = attrs.field(default=DEFAULT_LATENCY_BUCKETS, converter=_buckets)
    batch_buckets: tuple[float, ...] = attrs.field(default=DEFAULT_BATCH_BUCKETS, converter=_buckets)
    push_url: str | None = None
    push_job: str = "mlops"
    push_grouping: Mapping[str, str] = attrs.field(factory=dict, converter=dict)
    push_interval_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    push_method: str = attrs.field(default="PUT", validator=attrs.validators.in_(("PUT", "POST")))
    push_timeout_s: float = 5.0


class _Series:
    __slots__ = ("lock", "requests", "rows", "errors", "lat_counts", "lat_sum", "batch_counts", "batch_sum")

    def __init__(self, n_lat: int, n_batch: int) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.rows = 0
        self.errors = 0
        self.lat_counts = [0] * (n_lat + 1)  # last slot: above the largest bound (+Inf)
        self.lat_sum = 0.0
        self.batch_counts = [0] * (n_batch + 1)
        self.batch_sum = 0


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def fmt_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class PrometheusMonitor(MonitorBase):
    """Counts every prediction call per model and version; see the module docstring for the families."""

    kind = "prometheus"

    def __init__(self, config: PrometheusConfig | None = None, context: Any = None) -> None:
        super().__init__(context)
        self.config = config or PrometheusConfig()
        self._lat_bounds = list(self.config.latency_buckets)
        self._batch_bounds = list(self.config.batch_buckets)
        import numpy as np

        self._lat_array = np.asarray(self._lat_bounds, dtype=np.float64)
        self._batch_array = np.asarray(self._batch_bounds, dtype=np.float64)
        self._series: dict[tuple[str, str], _Series] = {}
        self._series_lock = threading.Lock()
        self._stop = threading.Event()
        self._pusher: threading.Thread | None = None
        if self.config.push_url and self.config.push_interval_s > 0:
            self._pusher = threading.Thread(target=self._push_loop, name="mlops-prometheus-push", daemon=True)
            self._pusher.start()

    # ------------------------------------------------------------------ hot path
    def _new_series(self, key: tuple[str, str]) -> _Series:
        with self._series_lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(len(self._lat_bounds), len(self._batch_bounds))
            return series

    @hookimpl
    def mlops_predictions_batch(self, batch: Any) -> None:
        """Fold a whole batch of calls into the series: a few numpy calls, whatever its size."""
        import numpy as np

        key = (batch.model, "unknown" if batch.version is None else str(batch.version))
        series = self._series.get(key) or self._new_series(key)
        latency = np.asarray(batch.latency_s, dtype=np.float64)[:batch.count]
        rows = np.asarray(batch.batch_size, dtype=np.int64)[:batch.count]
        failed = np.fromiter((e is not None for e in batch.errors), dtype=bool, count=batch.count)
        # side="left": the first bound >= value, Prometheus "le" semantics
        lat = np.bincount(np.searchsorted(self._lat_array, latency, side="left"), minlength=len(self._lat_bounds) + 1)
        bat = np.bincount(np.searchsorted(self._batch_array, rows, side="left"),
                          minlength=len(self._batch_bounds) + 1)
        n_failed = int(failed.sum())
        ok_rows = int(rows[~failed].sum()) if n_failed else int(rows.sum())
        lat_sum, batch_sum = float(latency.sum()), int(rows.sum())
        with series.lock:
            series.requests += batch.count
            series.errors += n_failed
            series.rows += ok_rows
            for i, c in enumerate(lat.tolist()):
                series.lat_counts[i] += c
            series.lat_sum += lat_sum
            for i, c in enumerate(bat.tolist()):
                series.batch_counts[i] += c
            series.batch_sum += batch_sum

    # ---------------------------------------------------------------- exposition
    def render(self, include_health: bool = True) -> str:
        """This monitor's metrics in text format 0.0.4."""
        with self._series_lock:
            items = sorted(self._series.items())
        snap = []
        for key, s in items:
            with s.lock:
                snap.append((key, s.requests, s.rows, s.errors, list(s.lat_counts), s.lat_sum,
                             list(s.batch_counts), s.batch_sum))
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")

        def labels(model: str, version: str) -> str:
            return f'model="{escape_label(model)}",version="{escape_label(version)}"'

        family("mlops_requests_total", "counter", "Prediction calls served, failed ones included.")
        for (m, v), req, *_ in snap:
            out.append(f"mlops_requests_total{{{labels(m, v)}}} {req}\n")
        family("mlops_predictions_total", "counter", "Rows predicted by successful calls.")
        for (m, v), _, rows, *_ in snap:
            out.append(f"mlops_predictions_total{{{labels(m, v)}}} {rows}\n")
        family("mlops_prediction_errors_total", "counter", "Prediction calls that failed.")
        for (m, v), _, _, errs, *_ in snap:
            out.append(f"mlops_prediction_errors_total{{{labels(m, v)}}} {errs}\n")
        self._histogram(out, family, labels, "mlops_prediction_latency_seconds",
                        "Latency of prediction calls in seconds.", self._lat_bounds,
                        [(k, c, s) for k, _, _, _, c, s, _, _ in snap])
        self._histogram(out, family, labels, "mlops_prediction_batch_size",
                        "Rows per prediction call.", self._batch_bounds,
                        [(k, c, s) for k, _, _, _, _, _, c, s in snap])
        if include_health:
            out.append(self._render_health())
        return "".join(out)

    @staticmethod
    def _histogram(out: list[str], family: Any, labels: Any, name: str, help_: str,
                   bounds: list[float], rows: list[tuple[tuple[str, str], list[int], float]]) -> None:
        family(name, "histogram", help_)
        for (m, v), counts, total in rows:
            lab = labels(m, v)
            cumulative = 0
            for bound, count in zip(bounds, counts):
                cumulative += count
                out.append(f'{name}_bucket{{{lab},le="{fmt_float(bound)}"}} {cumulative}\n')
            cumulative += counts[-1]
            out.append(f'{name}_bucket{{{lab},le="+Inf"}} {cumulative}\n')
            out.append(f"{name}_sum{{{lab}}} {fmt_float(total)}\n")
            out.append(f"{name}_count{{{lab}}} {cumulative}\n")

    def _render_health(self) -> str:
        out = ["# HELP mlops_hook_errors_total Event-hook implementations that raised (isolated by the core).\n",
               "# TYPE mlops_hook_errors_total counter\n"]
        errors = getattr(self.hooks, "event_errors", None) or {}
        for (plugin, hook), count in sorted(dict(errors).items()):
            out.append(f'mlops_hook_errors_total{{plugin="{escape_label(str(plugin))}",'
                       f'hook="{escape_label(str(hook))}"}} {count}\n')
        monitors = [m for m in live_monitors() if m.worker is not None]
        out.append("# HELP mlops_monitor_events_dropped_total Events a background monitor dropped "
                   "because its queue was full.\n# TYPE mlops_monitor_events_dropped_total counter\n")
        for m in monitors:
            out.append(f'mlops_monitor_events_dropped_total{{monitor="{escape_label(m.monitor_name)}"}} '
                       f"{m.worker.dropped}\n")
        out.append("# HELP mlops_monitor_cpu_seconds_total CPU time a background monitor spent processing.\n"
                   "# TYPE mlops_monitor_cpu_seconds_total counter\n")
        for m in monitors:
            out.append(f'mlops_monitor_cpu_seconds_total{{monitor="{escape_label(m.monitor_name)}"}} '
                       f"{fmt_float(m.worker.cpu_seconds)}\n")
        out.append("# HELP mlops_monitor_errors_total Errors a background monitor hit while processing.\n"
                   "# TYPE mlops_monitor_errors_total counter\n")
        for m in monitors:
            out.append(f'mlops_monitor_errors_total{{monitor="{escape_label(m.monitor_name)}"}} {m.worker.errors}\n')
        return "".join(out)

    @hookimpl
    def mlops_collect_metrics(self) -> str:
        return self.render()

    # ---------------------------------------------------------------------- push
    def push(self) -> None:
        """Send the metrics page (every plugin's, when hooks are known) to the configured Pushgateway."""
        if not self.config.push_url:
            raise BackendUnavailableError("no push_url configured for the prometheus monitor",
                                          hint='set push_url = "http://host:9091" in its [[monitors]] table')
        text = self.hooks.collect_metrics() if self.hooks is not None else self.render()
        push_text(self.config.push_url, text, job=self.config.push_job, grouping=self.config.push_grouping,
                  method=self.config.push_method, timeout=self.config.push_timeout_s)

    def _push_loop(self) -> None:
        while not self._stop.wait(self.config.push_interval_s):
            try:
                self.push()
            except Exception:
                log.exception("push to %s failed; will retry in %ss", self.config.push_url, self.config.push_interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._pusher is not None:
            self._pusher.join(self.config.push_timeout_s + 1)
        if self.config.push_url:
            try:
                self.push()  # a batch job's final numbers
            except Exception:
                log.exception("final push to %s failed", self.config.push_url)
        super().close()


def push_text(base_url: str, text: str, *, job: str, grouping: Mapping[str, str] | None = None,
              method: str = "PUT", timeout: float = 5.0) -> None:
    """PUT/POST a text-format page to a Pushgateway group ``/metrics/job/<job>[/<label>/<value>...]``."""
    path = "/metrics/job/" + urllib.parse.quote(job, safe="")
    for key, value in (grouping or {}).items():
        path += f"/{urllib.parse.quote(str(key), safe='')}/{urllib.parse.quote(str(value), safe='')}"
    req = urllib.request.Request(base_url.rstrip("/") + path, data=text.encode("utf-8"), method=method,
                                 headers={"Content-Type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")[:500]
        raise BackendUnavailableError(f"Pushgateway {base_url} refused the push: HTTP {exc.code} {body}",
                                      hint="check the exposition with `promtool check metrics`") from None
    except OSError as exc:
        raise BackendUnavailableError(f"cannot reach Pushgateway {base_url}: {exc}",
                                      hint="is the Pushgateway running and push_url right?") from None


def create_monitor(config: PrometheusConfig, context: Any) -> PrometheusMonitor:
    return PrometheusMonitor(config, context)
