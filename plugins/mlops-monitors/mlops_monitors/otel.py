"""The ``otel`` monitor: metrics, and traces of predict calls, over OTLP/HTTP with the OpenTelemetry SDK.

Any platform that takes OTLP (an OpenTelemetry Collector, Jaeger, Grafana
Tempo/Mimir, Honeycomb, Datadog, ...) can receive them. Install the extra:
``pip install "mlops-monitors[otel]"`` (``opentelemetry-sdk`` and
``opentelemetry-exporter-otlp-proto-http``); the SDK is imported only when the
monitor is built.

* **Traces**: one ``SERVER`` span per predict call, ``predict <model>``, with the
  call's real start and end (from the server's timestamp and latency) and the
  attributes ``mlops.model``, ``mlops.model.version``, ``mlops.batch_size``,
  ``mlops.request_id``; a failed call has status ERROR and ``error.type``. When
  the caller sent a W3C ``traceparent``, the span is its child (same trace id),
  so the prediction shows up inside the caller's trace. ``trace_sample_rate``
  samples calls that arrive without one (calls with a sampled parent are kept).
* **Metrics** (attributes ``mlops.model``, ``mlops.model.version``):
  ``mlops.requests`` (calls), ``mlops.predictions`` (rows of successful calls),
  ``mlops.prediction.errors``, and the histogram ``mlops.prediction.duration``
  (seconds), exported every ``export_interval_s``.

The server hands calls over in batches (``mlops_predictions_batch``); the
monitor turns a batch into spans and measurements on its own background thread,
so the SDK's per-span cost never reaches the serving thread.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Mapping

import attrs

from mlops_core.errors import BackendUnavailableError
from mlops_core.plugins import hookimpl

from ._base import MonitorBase
from ._worker import BackgroundWorker

__all__ = ["OtelConfig", "OtelMonitor", "create_monitor"]

log = logging.getLogger("mlops_monitors.otel")


def _endpoint_default() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")


@attrs.frozen
class OtelConfig:
    """Settings of ``[[monitors]] backend = "otel"``.

    ``endpoint``: the OTLP/HTTP base URL (``/v1/traces`` and ``/v1/metrics`` are
    appended; default ``$OTEL_EXPORTER_OTLP_ENDPOINT`` or ``http://localhost:4318``);
    ``traces_endpoint``/``metrics_endpoint``: full URLs for one signal, when traces and
    metrics go to different backends (say Tempo or Phoenix for traces, Mimir or
    Prometheus for metrics), as OpenTelemetry's ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT``;
    ``headers``: sent with every export (API keys); ``service_name``: the
    ``service.name`` resource attribute; ``traces``/``metrics``: switch either off;
    ``trace_sample_rate``: fraction of calls without a caller trace that get a span;
    ``export_interval_s``: how often metrics are exported; ``timeout_s``: per export.
    """

    endpoint: str = attrs.field(factory=_endpoint_default)
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=dict)
    service_name: str = "mlops-server"
    traces: bool = True
    metrics: bool = True
    trace_sample_rate: float = attrs.field(default=1.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    export_interval_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    timeout_s: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    queue_size: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    seed: int | None = None

    def url(self, signal: str) -> str:
        """Where ``signal`` (``traces`` or ``metrics``) is posted."""
        own = self.traces_endpoint if signal == "traces" else self.metrics_endpoint
        return own or self.endpoint.rstrip("/") + f"/v1/{signal}"


class OtelMonitor(MonitorBase):
    """Exports served predictions as OTLP spans and metrics; see the module docstring."""

    kind = "otel"

    def __init__(self, config: OtelConfig | None = None, context: Any = None) -> None:
        super().__init__(context)
        self.config = config or OtelConfig()
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace import SpanKind, Status, StatusCode
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the otel monitor needs the OpenTelemetry SDK ({exc.name} is missing)",
                hint='pip install "mlops-monitors[otel]"') from None
        self._SpanKind, self._Status, self._StatusCode = SpanKind, Status, StatusCode
        self._propagator = TraceContextTextMapPropagator()
        self._rng = random.Random(self.config.seed)
        resource = Resource.create({"service.name": self.config.service_name})
        cfg = self.config
        self.tracer_provider = self.meter_provider = None
        if cfg.traces:
            self.tracer_provider = TracerProvider(resource=resource)
            self.tracer_provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=cfg.url("traces"), headers=dict(cfg.headers), timeout=cfg.timeout_s),
                max_queue_size=8192, max_export_batch_size=512))
            self._tracer = self.tracer_provider.get_tracer("mlops_monitors.otel")
        if cfg.metrics:
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=cfg.url("metrics"), headers=dict(cfg.headers), timeout=cfg.timeout_s),
                export_interval_millis=cfg.export_interval_s * 1000)
            self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
            meter = self.meter_provider.get_meter("mlops_monitors.otel")
            self._requests = meter.create_counter("mlops.requests", unit="{call}",
                                                  description="Prediction calls served, failed ones included.")
            self._predictions = meter.create_counter("mlops.predictions", unit="{row}",
                                                     description="Rows predicted by successful calls.")
            self._errors = meter.create_counter("mlops.prediction.errors", unit="{call}",
                                                description="Prediction calls that failed.")
            self._duration = meter.create_histogram("mlops.prediction.duration", unit="s",
                                                    description="Latency of prediction calls.")
        self.worker = BackgroundWorker("otel", self._process, maxsize=cfg.queue_size)

    def check(self) -> str:
        cfg = self.config
        traces = cfg.url("traces") if cfg.traces else "off"
        metrics = cfg.url("metrics") if cfg.metrics else "off"
        return f"otel: OTLP/HTTP traces {traces}, metrics {metrics}"

    # ------------------------------------------------------------ events
    @hookimpl
    def mlops_predictions_batch(self, batch: Any) -> None:
        self.worker.submit(batch)

    # ------------------------------------------------------ background work
    def _process(self, batches: list[Any]) -> None:
        for batch in batches:
            if self.meter_provider is not None:
                self._measure(batch)
            if self.tracer_provider is not None:
                self._trace(batch)

    def _measure(self, batch: Any) -> None:
        attrs_ = {"mlops.model": batch.model, "mlops.model.version": "" if batch.version is None
                  else str(batch.version)}
        errors = batch.errors
        failed = sum(e is not None for e in errors)
        rows = [int(r) for r in batch.batch_size[:batch.count]]
        self._requests.add(batch.count, attrs_)
        if failed:
            self._errors.add(failed, attrs_)
        self._predictions.add(sum(r for r, e in zip(rows, errors) if e is None), attrs_)
        record = self._duration.record
        for latency in batch.latency_s[:batch.count].tolist() if hasattr(batch.latency_s, "tolist") \
                else batch.latency_s:
            record(latency, attrs_)

    def _trace(self, batch: Any) -> None:
        rate = self.config.trace_sample_rate
        parents = batch.traceparents or [None] * batch.count
        version = "" if batch.version is None else str(batch.version)
        name = f"predict {batch.model}"
        for i in range(batch.count):
            parent = parents[i]
            if parent is None and rate < 1.0 and self._rng.random() >= rate:
                continue
            ctx = self._propagator.extract({"traceparent": parent}) if parent else None
            end_ns = int(float(batch.timestamp[i]) * 1e9)
            start_ns = end_ns - int(float(batch.latency_s[i]) * 1e9)
            attributes: dict[str, Any] = {"mlops.model": batch.model, "mlops.model.version": version,
                                          "mlops.batch_size": int(batch.batch_size[i])}
            if batch.request_ids[i] is not None:
                attributes["mlops.request_id"] = batch.request_ids[i]
            span = self._tracer.start_span(name, context=ctx, kind=self._SpanKind.SERVER, start_time=start_ns,
                                           attributes=attributes)
            error = batch.errors[i]
            if error is not None:
                span.set_attribute("error.type", error.split(":", 1)[0][:100])
                span.set_status(self._Status(self._StatusCode.ERROR, error[:500]))
            span.end(end_time=end_ns)

    # ------------------------------------------------------------- lifecycle
    def flush(self, timeout: float = 10.0) -> bool:
        """Process queued batches, then export every pending span and metric now."""
        done = self.worker.flush(timeout)
        ms = int(timeout * 1000)
        if self.tracer_provider is not None:
            done = self.tracer_provider.force_flush(ms) and done
        if self.meter_provider is not None:
            done = self.meter_provider.force_flush(ms) and done
        return bool(done)

    def close(self) -> None:
        super().close()
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    log.exception("the OpenTelemetry SDK failed to shut down cleanly")


def create_monitor(config: OtelConfig, context: Any) -> OtelMonitor:
    return OtelMonitor(config, context)
