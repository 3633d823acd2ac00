"""The ``otel`` monitor against real OTLP/HTTP receivers.

* **Traces: Arize Phoenix**, a third-party observability server (``phoenix_receiver.py``):
  the spans are checked in what Phoenix stored and serves back through its REST API.
* **Metrics: VictoriaMetrics**, a Prometheus-compatible time-series database with an
  OTLP receiver (``victoria_metrics.py``): the counters and the latency histogram are
  checked with PromQL in what it decoded and stored. Together these are the real check that any OTLP backend
  takes our traces and metrics.
* **The wire-level fields neither serves back** (the resource's ``service.name`` on
  spans, the OTel span kind, the exact data points): ``otlp_receiver.py``, our own
  process that decodes each request with the official protobuf definitions.

End to end: a real ``python -m mlops_server`` builds the stack's ``otel`` monitor,
serves calls that carry a W3C ``traceparent`` and an ``X-Request-ID``; its spans
land in Phoenix and its metrics in VictoriaMetrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitors_fixtures import Service, free_port, wait_until
from phoenix_receiver import Phoenix
from victoria_metrics import VictoriaMetrics

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
pytest.importorskip("opentelemetry.proto")
pytest.importorskip("mlops_server")
requests = pytest.importorskip("requests")

HERE = Path(__file__).parent


@pytest.fixture()
def receiver(tmp_path):
    port = free_port()
    out = tmp_path / "otlp.jsonl"
    service = Service([sys.executable, str(HERE / "otlp_receiver.py"), str(port), str(out)],
                      f"http://127.0.0.1:{port}", "/counts", tmp_path / "receiver.log")
    service.out = out
    yield service
    service.stop()


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory):
    """One Phoenix server for the module (it takes seconds to start; the tests tell their spans apart by model)."""
    server = Phoenix(tmp_path_factory.mktemp("phoenix"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metrics_db(tmp_path_factory):
    """One VictoriaMetrics for the module (tests tell their series apart by model)."""
    server = VictoriaMetrics(tmp_path_factory.mktemp("victoria-metrics"))
    yield server
    server.stop()


def _stored_value(db, promql: str, expected: float) -> float:
    """``promql``'s value once the database has stored it as ``expected`` (exports arrive in the background)."""
    wait_until(lambda: db.value(promql) == expected, 60, 0.5, f"{promql} == {expected} in VictoriaMetrics")
    return db.value(promql)


def _phoenix_spans(phoenix, model: str, count: int) -> list[dict]:
    """The spans of ``model`` once Phoenix has stored ``count`` of them (it inserts in the background)."""
    def stored():
        spans = [s for s in phoenix.spans() if s["attributes"].get("mlops.model") == model]
        return spans if len(spans) >= count else None

    return wait_until(stored, 60, 0.5, f"{count} spans of {model} in Phoenix")


def _received(receiver) -> list[dict]:
    if not receiver.out.exists():
        return []
    return [json.loads(line) for line in receiver.out.read_text().splitlines()]


def _spans(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        if r["signal"] == "traces":
            for rs in r["body"].get("resourceSpans", []):
                service = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}["service.name"]["stringValue"]
                for ss in rs.get("scopeSpans", []):
                    for span in ss.get("spans", []):
                        span["attributes"] = {a["key"]: next(iter(a["value"].values()))
                                              for a in span.get("attributes", [])}
                        span["service"] = service
                        out.append(span)
    return out


def _metric_points(records: list[dict], name: str) -> list[dict]:
    points = []
    for r in records:
        if r["signal"] == "metrics":
            for rm in r["body"].get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for m in sm.get("metrics", []):
                        if m["name"] == name:
                            data = m.get("sum") or m.get("histogram")
                            points.extend(data["dataPoints"])
    return points


def _b64_hex(value: str) -> str:
    import base64

    return base64.b64decode(value).hex()


def test_monitor_exports_spans_and_metrics_in_process(receiver):
    from mlops_core.entities import PredictionEvent
    from mlops_core.plugins import PluginManager
    from mlops_monitors.otel import OtelConfig, OtelMonitor

    pm = PluginManager(autoload=False)
    monitor = OtelMonitor(OtelConfig(endpoint=receiver.url, service_name="kit", export_interval_s=60, seed=1))
    pm.register(monitor, name="monitor:otel:0")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for i in range(5):
        pm.hooks.predictions_served(PredictionEvent(
            model="iris", version=2, inputs={"x": np.ones((3, 4))}, outputs={"y": np.zeros(3)}, latency_s=0.002,
            batch_size=3, timestamp=1_700_000_000.0 + i, request_id=f"req-{i}",
            traceparent=parent if i == 0 else None, error="ValueError: bad" if i == 4 else None))
    assert monitor.flush(30)
    records = _received(receiver)
    spans = _spans(records)
    assert len(spans) == 5 and {s["name"] for s in spans} == {"predict iris"}
    assert all(s["service"] == "kit" and s["kind"] == "SPAN_KIND_SERVER" for s in spans)
    by_request = {s["attributes"]["mlops.request_id"]: s for s in spans}
    child = by_request["req-0"]
    assert _b64_hex(child["traceId"]) == "0af7651916cd43dd8448eb211c80319c"  # the caller's trace
    assert _b64_hex(child["parentSpanId"]) == "b7ad6b7169203331"
    assert int(child["endTimeUnixNano"]) - int(child["startTimeUnixNano"]) == 2_000_000  # the real latency
    assert int(child["endTimeUnixNano"]) == 1_700_000_000 * 10**9
    assert by_request["req-4"]["status"]["code"] == "STATUS_CODE_ERROR"
    assert by_request["req-4"]["attributes"]["error.type"] == "ValueError"
    assert child["attributes"]["mlops.model.version"] == "2" and child["attributes"]["mlops.batch_size"] == "3"
    requests_points = _metric_points(records, "mlops.requests")
    assert sum(int(p["asInt"]) for p in requests_points) == 5
    assert sum(int(p["asInt"]) for p in _metric_points(records, "mlops.predictions")) == 12  # 4 good calls x 3
    assert sum(int(p["asInt"]) for p in _metric_points(records, "mlops.prediction.errors")) == 1
    (hist,) = _metric_points(records, "mlops.prediction.duration")
    assert int(hist["count"]) == 5 and hist["sum"] == pytest.approx(0.01)
    monitor.close()


@pytest.mark.slow
def test_spans_are_stored_by_phoenix_and_metrics_by_victoria_metrics(phoenix, metrics_db):
    from mlops_core.entities import PredictionEvent
    from mlops_core.plugins import PluginManager
    from mlops_monitors.otel import OtelConfig, OtelMonitor

    pm = PluginManager(autoload=False)
    monitor = OtelMonitor(OtelConfig(endpoint="http://127.0.0.1:9", traces_endpoint=phoenix.url + "/v1/traces",
                                     metrics_endpoint=metrics_db.otlp_url, service_name="kit-service",
                                     export_interval_s=60, seed=1))
    pm.register(monitor, name="monitor:otel:0")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for i in range(5):
        pm.hooks.predictions_served(PredictionEvent(
            model="phoenix-kit", version=2, inputs={"x": np.ones((3, 4))}, outputs={"y": np.zeros(3)},
            latency_s=0.002, batch_size=3, timestamp=1_700_000_000.0 + i, request_id=f"req-{i}",
            traceparent=parent if i == 0 else None, error="ValueError: bad" if i == 4 else None))
    assert monitor.flush(60)
    monitor.close()
    spans = _phoenix_spans(phoenix, "phoenix-kit", 5)
    assert len(spans) == 5 and {s["name"] for s in spans} == {"predict phoenix-kit"}
    by_request = {s["attributes"]["mlops.request_id"]: s for s in spans}
    child = by_request["req-0"]
    assert child["context"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # inside the caller's trace
    assert child["parent_id"] == "b7ad6b7169203331"
    assert child["start_time"] == "2023-11-14T22:13:19.998000+00:00"  # the call's real start and end
    assert child["end_time"] == "2023-11-14T22:13:20+00:00"
    assert child["attributes"]["mlops.model.version"] == "2" and child["attributes"]["mlops.batch_size"] == 3
    assert child["status_code"] == "UNSET"
    failed = by_request["req-4"]
    assert failed["status_code"] == "ERROR" and failed["status_message"] == "ValueError: bad"
    assert failed["attributes"]["error.type"] == "ValueError"
    assert len({s["context"]["trace_id"] for s in spans}) == 5  # calls without a caller trace start their own
    # Stored with Prometheus naming: dots become underscores, counters get _total, seconds a unit suffix,
    # attributes and the resource's service.name become labels.
    series = '{service_name="kit-service", mlops_model="phoenix-kit", mlops_model_version="2"}'
    assert _stored_value(metrics_db, f"mlops_requests_total{series}", 5) == 5
    assert metrics_db.value(f"mlops_predictions_total{series}") == 12  # 4 good calls x 3 rows
    assert metrics_db.value(f"mlops_prediction_errors_total{series}") == 1
    assert metrics_db.value(f"mlops_prediction_duration_seconds_count{series}") == 5
    assert metrics_db.value(f"mlops_prediction_duration_seconds_sum{series}") == pytest.approx(0.01)
    # latency buckets in seconds: 2 ms calls are above 1 ms and within 2.5 ms
    bucket = 'mlops_prediction_duration_seconds_bucket{mlops_model="phoenix-kit", le="%s"}'
    assert metrics_db.value(bucket % "0.001") == 0 and metrics_db.value(bucket % "0.0025") == 5


@pytest.mark.slow
def test_served_calls_reach_the_receivers_with_the_callers_trace_and_request_id(phoenix, metrics_db, tmp_path):
    from mlops_core.bundle import save_bundle
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    bundle = save_bundle(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), tmp_path / "bundle", example=x[:5])
    stack = tmp_path / "mlops.toml"
    stack.write_text(f'home = "{tmp_path / "home"}"\n[[monitors]]\nbackend = "otel"\n'
                     f'endpoint = "http://127.0.0.1:9"\ntraces_endpoint = "{phoenix.url}/v1/traces"\n'
                     f'metrics_endpoint = "{metrics_db.otlp_url}"\n'
                     'service_name = "iris-server"\nexport_interval_s = 1.0\n')
    env = {**os.environ, "MLOPS_CONFIG": str(stack)}
    env.pop("MLOPS_PLUGIN_MODULES", None)
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlops_server", "--bundle", str(bundle.path),
                             "--name", "served-iris", "--model-version", "4", "--port", str(port),
                             "--log-format", "json"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(base + "/v2/health/ready", timeout=2).status_code == 200, 60,
                   what="the model server")
        body = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [0.1] * 8}]}
        trace_ids = []
        for i in range(20):
            trace_id = f"{i + 1:032x}"
            trace_ids.append(trace_id)
            resp = requests.post(base + "/v2/models/served-iris/infer", json=body, timeout=10,
                                 headers={"traceparent": f"00-{trace_id}-{i + 1:016x}-01"})
            assert resp.status_code == 200
            assert resp.headers["x-request-id"] == trace_id  # the trace id is the request id
            assert resp.json()["id"] == trace_id  # and the V2 response echoes it
        resp = requests.post(base + "/v2/models/served-iris/infer", json=body, timeout=10,
                             headers={"x-request-id": "order-42"})
        assert resp.headers["x-request-id"] == "order-42" and resp.json()["id"] == "order-42"
        resp = requests.post(base + "/v2/models/served-iris/infer", json={**body, "id": "body-id"}, timeout=10,
                             headers={"x-request-id": "hdr-1"})
        assert resp.json()["id"] == "body-id"  # a V2 id in the body wins in the body
        bad = requests.post(base + "/v2/models/served-iris/infer", timeout=10, headers={"x-request-id": "bad-1"},
                            json={"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP64",
                                              "data": [1, 2, 3]}]})
        assert bad.status_code == 400 and bad.headers["x-request-id"] == "bad-1"

        spans = _phoenix_spans(phoenix, "served-iris", 22)
        assert len(spans) == 22 and all(s["name"] == "predict served-iris" for s in spans)
        traced = {s["context"]["trace_id"]: s for s in spans}
        assert set(trace_ids) <= set(traced)
        for i, trace_id in enumerate(trace_ids):
            assert traced[trace_id]["parent_id"] == f"{i + 1:016x}"
            assert traced[trace_id]["attributes"]["mlops.request_id"] == trace_id
            assert traced[trace_id]["attributes"]["mlops.model.version"] == "4"
        assert {s["attributes"].get("mlops.request_id") for s in spans} >= {"order-42", "hdr-1"}  # the header wins
        series = '{service_name="iris-server", mlops_model="served-iris", mlops_model_version="4"}'
        _stored_value(metrics_db, f"mlops_requests_total{series}", 22)
        assert metrics_db.value(f"mlops_predictions_total{series}") == 44  # 22 calls of 2 rows
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
    # structured logs: JSON lines on stdout, one per request, with model, version, request id and latency
    lines = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines() if line.startswith("{")]
    access = [r for r in lines if r["logger"] == "mlops_server.access"]
    assert len(access) == 23
    first = access[0]
    assert first["model"] == "served-iris" and first["version"] == "4" and first["status"] == 200
    assert first["request_id"] == trace_ids[0] and first["latency_ms"] > 0 and first["rows"] == 2
    assert [r["status"] for r in access if r["request_id"] == "bad-1"] == [400]
    assert all(set(r) >= {"ts", "level", "msg", "pid"} for r in lines)


def test_sampling_follows_the_callers_decision_and_the_rate_for_the_rest():
    """ParentBased sampling: a sampled traceparent is always traced, an unsampled one never, others by the rate."""
    from mlops_core.entities import PredictionBatch
    from mlops_monitors.otel import OtelConfig, OtelMonitor

    n = 400
    parents = ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # sampled: kept
               "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-00",  # not sampled: dropped
               "ff-0af7651916cd43dd8448eb211c80319e-b7ad6b7169203331-01",  # invalid version: ignored
               "00-00000000000000000000000000000000-b7ad6b7169203331-01"]  # zero trace id: ignored
    batch = PredictionBatch(model="m", version=1, count=n, latency_s=np.full(n, 0.001),
                            batch_size=np.ones(n, dtype=np.int64), timestamp=np.full(n, 1_700_000_000.0),
                            errors=[None] * n, request_ids=[None] * n, inputs={}, outputs={},
                            traceparents=parents + [None] * (n - len(parents)))
    monitor = OtelMonitor(OtelConfig(endpoint="http://127.0.0.1:9", metrics=False, trace_sample_rate=0.25, seed=3))
    try:
        spans = monitor._spans(batch)
    finally:
        monitor.close()
    traced = {format(s.context.trace_id, "032x") for s in spans}
    assert "0af7651916cd43dd8448eb211c80319c" in traced and "0af7651916cd43dd8448eb211c80319d" not in traced
    child = next(s for s in spans if s.parent is not None)
    assert format(child.parent.span_id, "016x") == "b7ad6b7169203331" and child.parent.is_remote
    assert sum(s.parent is not None for s in spans) == 1
    assert 60 <= len(spans) - 1 <= 140  # about a quarter of the 398 calls without a usable parent
    assert len({s.context.span_id for s in spans}) == len(spans)
