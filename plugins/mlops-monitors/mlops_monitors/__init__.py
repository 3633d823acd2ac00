"""mlops-monitors: Prometheus metrics, statistical drift, prediction logs, webhook alerts, OpenTelemetry (OTLP)
and a drift report.

Monitors are chosen in the stack::

    [[monitors]]
    backend = "prometheus"
    [[monitors]]
    backend = "drift"
    alpha = 0.01
    [[monitors]]
    backend = "log"
    sample_rate = 1.0
    [[monitors]]
    backend = "webhook"
    url = "https://alerts.example.com/hook"

Public names load lazily (PEP 562): importing the package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "__version__",
    "PrometheusMonitor", "PrometheusConfig",
    "DriftMonitor", "DriftConfig", "DriftReport", "analyze",
    "LogMonitor", "LogMonitorConfig",
    "WebhookAlerter", "WebhookConfig",
    "OtelMonitor", "OtelConfig",
    "ReferenceProfile", "build_profile", "load_profile", "save_profile",
    "KllSketch",
    "render_report",
]

_LAZY = {
    "PrometheusMonitor": "prometheus", "PrometheusConfig": "prometheus",
    "DriftMonitor": "drift", "DriftConfig": "drift", "DriftReport": "drift", "analyze": "drift",
    "LogMonitor": "logmon", "LogMonitorConfig": "logmon",
    "WebhookAlerter": "webhook", "WebhookConfig": "webhook",
    "OtelMonitor": "otel", "OtelConfig": "otel",
    "ReferenceProfile": "profile", "build_profile": "profile", "load_profile": "profile", "save_profile": "profile",
    "KllSketch": "sketches",
    "render_report": "report",
}

if TYPE_CHECKING:  # pragma: no cover
    from .drift import DriftConfig, DriftMonitor, DriftReport, analyze
    from .logmon import LogMonitor, LogMonitorConfig
    from .profile import ReferenceProfile, build_profile, load_profile, save_profile
    from .prometheus import PrometheusConfig, PrometheusMonitor
    from .report import render_report
    from .sketches import KllSketch
    from .otel import OtelConfig, OtelMonitor
    from .webhook import WebhookAlerter, WebhookConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
