"""The log monitor: JSON lines in storage, batched, sampled, flushed on close, replayable."""

from __future__ import annotations

import json

import numpy as np

from mlops_core.entities import AliasChange
from mlops_core.plugins import PluginManager
from monitors_fixtures import DirStore, context, event

from mlops_monitors.drift import DriftConfig, analyze
from mlops_monitors.logmon import LogMonitor, LogMonitorConfig, iter_prediction_records
from mlops_monitors.profile import build_profile


def _monitor(tmp_path, **config):
    pm = PluginManager(autoload=False)
    store = DirStore(tmp_path / "store")
    mon = LogMonitor(LogMonitorConfig(**config), context(pm, "log"), store)
    pm.register(mon, name="monitor:log:0")
    return pm, mon, store


def test_predictions_and_lifecycle_events_are_written_as_json_lines_in_batches(tmp_path):
    pm, mon, store = _monitor(tmp_path, sample_rate=1.0, batch_records=10, flush_interval_s=3600)
    for i in range(25):
        pm.hooks.predictions_served(event("iris", 3, {"input-0": np.full((2, 4), float(i))},
                                          {"output-0": np.array([i, i])}, latency_s=0.001 * i))
    pm.hooks.alias_changed(AliasChange(model="iris", alias="production", version=3, previous=2))
    mon.worker.flush()
    keys = store.list("logs/predictions/iris/")
    assert len(keys) == 2  # two full batches of 10 written; 5 records still buffered
    mon.close()  # flushes the rest
    keys = store.list("logs/predictions/iris/")
    assert len(keys) == 3 and all(k.endswith(".jsonl") for k in keys)
    records = list(iter_prediction_records(store, "iris"))
    assert len(records) == 25
    first = min(records, key=lambda r: r["latency_s"])
    assert first["inputs"] == {"input-0": [[0.0] * 4] * 2} and first["outputs"] == {"output-0": [0, 0]}
    assert first["model"] == "iris" and first["version"] == 3 and first["batch_size"] == 2
    events = [json.loads(line) for k in store.list("logs/events/") for line in store.read_bytes(k).splitlines()]
    assert [e["event"] for e in events] == ["alias_changed"]
    assert events[0]["change"] == {"model": "iris", "alias": "production", "version": 3, "previous": 2}


def test_sampling_truncation_and_payload_switches(tmp_path):
    pm, mon, store = _monitor(tmp_path, sample_rate=0.25, seed=42, max_rows=3, log_outputs=False)
    for _ in range(400):
        pm.hooks.predictions_served(event("big", 1, {"x": np.arange(10.0)}, {"y": np.arange(10)}))
    mon.close()
    records = list(iter_prediction_records(store, "big"))
    assert 60 < len(records) < 140  # about a quarter, seeded
    assert all(r["inputs"] == {"x": [0.0, 1.0, 2.0]} and r["truncated"] and "outputs" not in r for r in records)


def test_logged_predictions_replay_into_drift_analysis(tmp_path):
    pm, mon, store = _monitor(tmp_path, sample_rate=1.0, max_rows=1000)
    rng = np.random.default_rng(4)
    profile = build_profile(lambda: [{"input-0": rng.normal(size=(5000, 2))}], model="reg", version=1)
    for _ in range(20):
        x = rng.normal(size=(100, 2))
        x[:, 1] += 2
        pm.hooks.predictions_served(event("reg", 1, {"input-0": x}))
    pm.hooks.predictions_served(event("reg", 2, {"input-0": rng.normal(size=(100, 2))}))  # other version
    mon.close()
    batches = ({k: np.asarray(v) for k, v in r["inputs"].items()}
               for r in iter_prediction_records(store, "reg", version=1))
    report = analyze(profile, batches, DriftConfig())
    assert report.rows == 2000 and report.drifted == ["input-0[1]"]


def test_a_failing_store_is_counted_and_serving_goes_on(tmp_path):
    class ReadOnly(DirStore):
        def _write(self, key, source):
            raise PermissionError("read-only store")

    pm = PluginManager(autoload=False)
    mon = LogMonitor(LogMonitorConfig(sample_rate=1.0, batch_records=5), context(pm, "log"), ReadOnly(tmp_path))
    pm.register(mon, name="monitor:log:0")
    for _ in range(20):
        pm.hooks.predictions_served(event("m", 1, {"x": np.ones(2)}))
    mon.worker.flush()
    assert mon.worker.errors == 4 and mon.records_written == 0
    assert pm.hooks.event_errors == {}
    mon.worker.close()
