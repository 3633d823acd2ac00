"""The conformance kit's MonitorSuite against every monitor this plugin offers."""

from __future__ import annotations

import pytest

from mlops_core.testing.reference_storage import InMemoryArtifactStore
from mlops_core.testing.suites import MonitorSuite
from mlops_monitors.drift import DriftConfig, DriftMonitor
from mlops_monitors.logmon import LogMonitor, LogMonitorConfig
from mlops_monitors.prometheus import PrometheusConfig, PrometheusMonitor
from mlops_monitors.webhook import WebhookAlerter, WebhookConfig


class TestPrometheusMonitorConformance(MonitorSuite):
    exposes_metrics = True

    @pytest.fixture
    def backend(self):
        monitor = PrometheusMonitor(PrometheusConfig())
        yield monitor
        monitor.close()


class TestDriftMonitorConformance(MonitorSuite):
    # Drift scores exist only once a version has a reference profile and a scored
    # window; the kit's single event has neither. test_monitors_drift checks the
    # exposition of real scores with promtool.
    exposes_metrics = False

    @pytest.fixture
    def backend(self):
        monitor = DriftMonitor(DriftConfig(), storage=InMemoryArtifactStore())
        yield monitor
        monitor.close()


class TestLogMonitorConformance(MonitorSuite):
    @pytest.fixture
    def backend(self):
        monitor = LogMonitor(LogMonitorConfig(sample_rate=1.0), storage=InMemoryArtifactStore())
        yield monitor
        monitor.close()


class TestWebhookAlerterConformance(MonitorSuite):
    @pytest.fixture
    def backend(self):
        # Port 9 on loopback refuses connections: alerts are retried in the background, never blocking.
        monitor = WebhookAlerter(WebhookConfig(url="http://127.0.0.1:9/alerts", max_attempts=1))
        yield monitor
        monitor.close()
