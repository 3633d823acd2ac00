"""``MonitorSuite``: the conformance tests of a :class:`~mlops_core.interfaces.Monitor`.

A monitor is a plugin object: it implements event hooks as ``@hookimpl`` methods.
The suite registers it in an isolated plugin manager, fires every event it
listens to with realistic payloads through the core's hook facade, and checks
that nothing raised, that its Prometheus output (if any) parses, and that it
copes with a burst of events from several threads::

    class TestMyMonitor(MonitorSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            return MyMonitor(tmp_path / "events.jsonl")
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable, ClassVar

import pytest

import attrs

from ...entities import (Alert, AliasChange, ArtifactRef, Deployment, ImageRef, Lineage, ModelVersion, PredictionBatch,
                         PredictionEvent)
from ...interfaces import Monitor
from ...plugins import Hooks, PluginManager
from ._base import ConformanceSuite

__all__ = ["MonitorSuite", "KitDriftReport", "sample_events", "parse_prometheus"]

_PROVIDERS = {"mlops_register_backends", "mlops_add_cli_commands", "mlops_collect_metrics"}
_SAMPLE = re.compile(
    r'^(?P<series>[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})?)'
    r" (?P<value>-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?[0-9]+)?$"
)


def parse_prometheus(text: str) -> dict[str, float]:
    """Parse Prometheus text format 0.0.4 strictly enough to catch broken output; return series -> value."""
    samples: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("# TYPE "):
            parts = line.split()
            assert len(parts) == 4 and parts[3] in {"counter", "gauge", "histogram", "summary", "untyped"}, \
                f"line {number}: bad TYPE line {line!r}"
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"line {number} is not a Prometheus sample: {line!r}"
        value = match["value"].replace("+Inf", "inf").replace("-Inf", "-inf")
        samples[match["series"]] = float(value)
    return samples


@attrs.frozen
class KitDriftReport:
    """The smallest :class:`~mlops_core.entities.DriftReport`: what every drift listener may rely on."""

    model: str
    version: int | None
    drifted: tuple[str, ...] = ("input-0",)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "drifted": list(self.drifted),
                "features": {"input-0": 0.42}}


def sample_events(model: str = "kit-model") -> dict[str, dict[str, Any]]:
    """Realistic keyword arguments for every event hook, as the core fires them."""
    version = ModelVersion(model=model, version=3, artifact=ArtifactRef("memory://kit", "sha256:" + "a" * 64),
                           description="d", tags={"team": "kit"}, aliases=("production",),
                           lineage=Lineage(source_run="run-1"))
    try:
        import numpy as np

        inputs: dict[str, Any] = {"input-0": np.array([[1.0, 2.0], [3.0, 4.0]])}
        outputs: dict[str, Any] = {"output-0": np.array([2.0, 4.0])}
    except ImportError:  # a monitor must cope with plain lists too
        inputs, outputs = {"input-0": [[1.0, 2.0], [3.0, 4.0]]}, {"output-0": [2.0, 4.0]}
    served = PredictionEvent(model=model, version=3, inputs=inputs, outputs=outputs, latency_s=0.0042,
                             batch_size=2, timestamp=time.time(), request_id="kit-request-1")
    failed = PredictionEvent(model=model, version=3, inputs=inputs, outputs={}, latency_s=0.01, batch_size=2,
                             error="ValueError: bad input", timestamp=time.time())
    deployment = Deployment(name=model, model=model, version=3, backend="kit", state="ready",
                            url="http://127.0.0.1:1", previous_version=2)
    return {
        "mlops_bundle_saved": {"path": __import__("pathlib").Path("/tmp/kit-bundle"),
                               "manifest": {"schema": "mlops-bundle/1", "format": "cloudpickle", "files": []}},
        "mlops_version_registered": {"version": version},
        "mlops_alias_changed": {"change": AliasChange(model, "production", 3, 2)},
        "mlops_version_deleted": {"model": model, "version": 1},
        "mlops_image_built": {"version": version,
                              "image": ImageRef(reference=f"local/{model}:3", digest="sha256:" + "b" * 64)},
        "mlops_deployment_changed": {"deployment": deployment, "action": "updated"},
        "mlops_predictions_served": {"event": served},
        "mlops_predictions_batch": {"batch": PredictionBatch.from_events([served, failed])},
        "mlops_drift_detected": {"report": KitDriftReport(model, 3)},
        "mlops_alert": {"alert": Alert(severity="warning", title="kit alert", model=model, version=3,
                                       details={"window_rows": 100})},
    }


def _facade_call(hooks: Hooks, hook: str) -> Callable[..., Any]:
    return getattr(hooks, hook[len("mlops_"):])


class MonitorSuite(ConformanceSuite):
    """Conformance tests for a Monitor; define the ``backend`` fixture."""

    CAPABILITIES: ClassVar[dict[str, str]] = {
        "thread_safe": "accepts events from several serving threads at once",
        "exposes_metrics": "implements mlops_collect_metrics with Prometheus text",
    }
    thread_safe = True
    exposes_metrics = False

    @pytest.fixture
    def monitor_manager(self, backend: Monitor) -> Any:
        pm = PluginManager(autoload=False)
        name = pm.register(backend, name="kit-monitor")
        assert name == "kit-monitor", f"the monitor failed to register: {[f.describe() for f in pm.failures]}"
        yield pm
        pm.unregister("kit-monitor")

    def listened(self, pm: PluginManager) -> list[str]:
        return sorted(hc.name for hc in (pm.pm.get_hookcallers(pm.pm.get_plugin("kit-monitor")) or [])
                      if hc.name not in _PROVIDERS)

    def test_is_a_monitor(self, backend: Any) -> None:
        assert isinstance(backend, Monitor)
        assert isinstance(backend.check(), str)

    def test_listens_to_events(self, monitor_manager: PluginManager) -> None:
        listened = self.listened(monitor_manager)
        hooks = sorted(hc.name for hc in (monitor_manager.pm.get_hookcallers(monitor_manager.pm.get_plugin("kit-monitor")) or []))
        assert listened or "mlops_collect_metrics" in hooks, \
            "a monitor implements at least one event hook (@hookimpl def mlops_predictions_served(self, event): ...)"

    def test_every_event_is_handled(self, monitor_manager: PluginManager) -> None:
        events = sample_events()
        for hook in self.listened(monitor_manager):
            _facade_call(monitor_manager.hooks, hook)(**events[hook])
        assert not monitor_manager.hooks.event_errors, \
            f"the monitor raised while handling events: {dict(monitor_manager.hooks.event_errors)} (see the log)"

    def test_event_with_error_and_no_version(self, monitor_manager: PluginManager) -> None:
        event = PredictionEvent(model="kit-model", version=None, inputs={}, outputs={}, latency_s=0.1,
                                error="ValueError: bad input", timestamp=time.time())
        monitor_manager.hooks.predictions_served(event)
        assert not monitor_manager.hooks.event_errors, "a failed prediction (no outputs) must not crash the monitor"

    def test_burst_from_threads(self, monitor_manager: PluginManager) -> None:
        self.require("thread_safe")
        event = sample_events()["mlops_predictions_served"]["event"]

        def fire() -> None:
            for _ in range(250):
                monitor_manager.hooks.predictions_served(event)

        threads = [threading.Thread(target=fire) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not monitor_manager.hooks.event_errors

    def test_metrics_parse(self, monitor_manager: PluginManager) -> None:
        self.require("exposes_metrics")
        monitor_manager.hooks.predictions_served(**sample_events()["mlops_predictions_served"])
        text = monitor_manager.hooks.collect_metrics()
        assert text.strip(), "exposes_metrics is True but mlops_collect_metrics returned nothing"
        assert not monitor_manager.hooks.event_errors
        parse_prometheus(text)

    def test_close_is_safe(self, backend: Monitor) -> None:
        backend.close()
