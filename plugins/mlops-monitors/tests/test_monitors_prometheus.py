"""The prometheus monitor: exposition, a real Prometheus scraping it, promtool, Pushgateway, isolation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlops_core.plugins import PluginManager
from monitors_fixtures import (Boom, DirStore, MetricsServer, context, event, http_get, prom_query, promtool_check,
                               start_prometheus, start_pushgateway, wait_until)

from mlops_monitors.prometheus import PrometheusConfig, PrometheusMonitor


def _manager(**config):
    pm = PluginManager(autoload=False)
    mon = PrometheusMonitor(PrometheusConfig(**config), context(pm, "prometheus"))
    pm.register(mon, name="monitor:prometheus:0")
    return pm, mon


def _value(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in exposition:\n{text}")


def test_counters_and_histograms_per_model_and_version():
    pm, mon = _manager()
    for latency in (0.0004, 0.003, 0.003, 0.2):
        pm.hooks.predictions_served(event("iris", 1, latency_s=latency, batch_size=4))
    pm.hooks.predictions_served(event("iris", 2, latency_s=0.01, batch_size=1))
    pm.hooks.predictions_served(event("iris", 2, latency_s=0.01, batch_size=1, error="ValueError: bad input"))
    text = pm.hooks.collect_metrics()
    assert _value(text, 'mlops_requests_total{model="iris",version="1"}') == 4
    assert _value(text, 'mlops_predictions_total{model="iris",version="1"}') == 16
    assert _value(text, 'mlops_requests_total{model="iris",version="2"}') == 2
    assert _value(text, 'mlops_predictions_total{model="iris",version="2"}') == 1
    assert _value(text, 'mlops_prediction_errors_total{model="iris",version="2"}') == 1
    h = 'mlops_prediction_latency_seconds_bucket{model="iris",version="1",le='
    assert _value(text, h + '"0.0005"}') == 1
    assert _value(text, h + '"0.005"}') == 3
    assert _value(text, h + '"0.1"}') == 3
    assert _value(text, h + '"+Inf"}') == 4
    assert _value(text, 'mlops_prediction_latency_seconds_count{model="iris",version="1"}') == 4
    assert _value(text, 'mlops_prediction_latency_seconds_sum{model="iris",version="1"}') == pytest.approx(0.2064)
    assert _value(text, 'mlops_prediction_batch_size_bucket{model="iris",version="1",le="4.0"}') == 4
    assert _value(text, 'mlops_prediction_batch_size_sum{model="iris",version="1"}') == 16
    # one HELP/TYPE per family, counters end in _total, the unit is in the name
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert len(types) == len({name for name, _ in types})
    assert all(name.endswith("_total") for name, kind in types if kind == "counter")
    mon.close()


def test_promtool_accepts_the_whole_exposition(tmp_path):
    from mlops_monitors.drift import DriftConfig, DriftMonitor

    pm, mon = _manager()
    drift = DriftMonitor(DriftConfig(evaluate_interval_s=0, window_rows=1000, min_rows=100), context(pm, "drift"), DirStore(tmp_path))
    pm.register(drift, name="monitor:drift:1")
    rng = np.random.default_rng(1)
    drift.capture_profile("fraud", 3, {"amount": rng.lognormal(size=2000), "country": rng.choice(["fr", "de"], 2000)},
                          save=False)
    pm.register(Boom(), name="broken")
    for _ in range(20):
        pm.hooks.predictions_served(event("fraud", 3, {"amount": rng.lognormal(1, size=100),
                                                       "country": rng.choice(["fr", "de"], 100)}))
    drift.flush()
    text = pm.hooks.collect_metrics()
    assert "mlops_drift_score{" in text and "mlops_hook_errors_total{" in text
    result = promtool_check(text)
    assert result.returncode == 0, result.stdout + result.stderr
    drift.close()
    mon.close()


def test_a_monitor_that_raises_never_fails_serving_and_is_counted():
    pm, mon = _manager()
    pm.register(Boom(), name="broken")
    for _ in range(7):
        pm.hooks.predictions_served(event("iris", 1))  # does not raise
    text = pm.hooks.collect_metrics()  # Boom raises here too; the page still renders
    assert _value(text, 'mlops_requests_total{model="iris",version="1"}') == 7
    assert _value(text, 'mlops_hook_errors_total{plugin="broken",hook="mlops_predictions_served"}') == 7
    assert pm.hooks.event_errors[("broken", "mlops_predictions_served")] == 7
    pm.hooks.predictions_served(event("iris", 1))
    text = pm.hooks.collect_metrics()
    assert _value(text, 'mlops_hook_errors_total{plugin="broken",hook="mlops_predictions_served"}') == 8
    assert _value(text, 'mlops_hook_errors_total{plugin="broken",hook="mlops_collect_metrics"}') >= 1


@pytest.mark.slow
def test_real_prometheus_scrapes_the_metrics_and_answers_queries(tmp_path):
    pm, mon = _manager()
    pm.register(Boom(), name="broken")
    server = MetricsServer(pm.hooks)
    prom = start_prometheus(tmp_path, [f"127.0.0.1:{server.port}"])
    try:
        for i in range(25):
            pm.hooks.predictions_served(event("iris", 1, latency_s=0.002, batch_size=2))
        for i in range(5):
            pm.hooks.predictions_served(event("iris", 2, latency_s=0.03, batch_size=1, error="boom" if i < 2 else None))

        def scraped():
            res = prom_query(prom.url, 'mlops_requests_total{model="iris",version="1"}')
            return res and float(res[0]["value"][1]) == 25 and res

        wait_until(scraped, 60, 0.5, "Prometheus to scrape 25 requests")
        assert float(prom_query(prom.url, 'sum(mlops_predictions_total{model="iris"})')[0]["value"][1]) == 53
        assert float(prom_query(prom.url, 'mlops_prediction_errors_total{version="2"}')[0]["value"][1]) == 2
        assert float(prom_query(prom.url, 'mlops_prediction_latency_seconds_count{version="2"}')[0]["value"][1]) == 5
        errors = prom_query(prom.url, 'mlops_hook_errors_total{plugin="broken",hook="mlops_predictions_served"}')
        assert float(errors[0]["value"][1]) == 30
        targets = http_get(prom.url + "/api/v1/targets").decode()
        assert '"health":"up"' in targets
    finally:
        prom.stop()
        server.close()
        mon.close()


@pytest.mark.slow
def test_push_mode_reaches_a_real_pushgateway(tmp_path):
    gateway = start_pushgateway(tmp_path)
    try:
        pm, mon = _manager(push_url=gateway.url, push_job="nightly-scoring", push_grouping={"instance": "batch-7"})
        for _ in range(12):
            pm.hooks.predictions_served(event("churn", 4, latency_s=0.5, batch_size=1000))
        mon.push()
        page = http_get(gateway.url + "/metrics").decode()
        line = next(l for l in page.splitlines() if l.startswith("mlops_predictions_total{"))
        assert 'job="nightly-scoring"' in line and 'instance="batch-7"' in line and 'model="churn"' in line
        assert line.endswith(" 12000")
        # close() pushes the final numbers of a batch job
        pm.hooks.predictions_served(event("churn", 4, latency_s=0.5, batch_size=1000))
        mon.close()
        page = http_get(gateway.url + "/metrics").decode()
        assert re.search(r'^mlops_predictions_total\{[^}]*model="churn"[^}]*\} 13000$', page, re.M), page
    finally:
        gateway.stop()
