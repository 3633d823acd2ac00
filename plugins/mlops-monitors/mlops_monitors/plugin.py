"""The plugin module the ``mlops_core.plugins`` entry point ``monitors`` names.

Import-cheap on purpose (it runs on every ``mlops`` invocation): backends and
CLI handlers are import strings, so numpy and the monitor code load only when a
stack builds a monitor or a ``mlops monitor`` command runs.
"""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends", "mlops_add_cli_commands"]

_CLI = "mlops_monitors.cli:"


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_monitor("prometheus", "mlops_monitors.prometheus:create_monitor",
                         config="mlops_monitors.prometheus:PrometheusConfig",
                         summary="Prometheus counters and histograms per model/version on /metrics; Pushgateway push")
    backends.add_monitor("drift", "mlops_monitors.drift:create_monitor", config="mlops_monitors.drift:DriftConfig",
                         summary="per-feature drift vs a reference profile: KS/chi-squared p-value and Wasserstein/JS effect size")
    backends.add_monitor("log", "mlops_monitors.logmon:create_monitor", config="mlops_monitors.logmon:LogMonitorConfig",
                         summary="JSON-lines logs of lifecycle events and sampled predictions in the stack's storage")
    backends.add_monitor("otel", "mlops_monitors.otel:create_monitor", config="mlops_monitors.otel:OtelConfig",
                         summary="OpenTelemetry metrics and predict-call traces over OTLP/HTTP "
                                 "(extra: mlops-monitors[otel])")
    backends.add_monitor("webhook", "mlops_monitors.webhook:create_monitor",
                         config="mlops_monitors.webhook:WebhookConfig",
                         summary="POST alerts as JSON to a URL, with retries and backoff, never blocking")


@hookimpl
def mlops_add_cli_commands(commands: Any) -> None:
    sub = commands.group("monitor", help="drift profiles, reports and status (mlops-monitors)", metavar="ACTION")

    p = sub.add("profile", handler=_CLI + "profile_command", help="capture a version's reference profile from training data")
    p.add_argument("model_uri", help="models:/NAME/VERSION (or @alias, or latest)")
    p.add_argument("--data", required=True, help="training data: .csv (header row), .npy or .npz")
    p.add_argument("--layout", default="auto", choices=("auto", "matrix", "columns"),
                   help="matrix: all columns form one 2-D input (ndarray models); columns: one input per column")
    p.add_argument("--input-name", default="input-0", help="tensor name for --layout matrix (default input-0)")
    p.add_argument("--bins", type=int, default=20, help="quantile bins per numeric feature")
    p.add_argument("--categorical", action="append", default=[], help="treat this feature as categorical")
    p.add_argument("--out", help="also write the profile JSON to this file")
    p.add_argument("--json", action="store_true", help="print JSON")

    r = sub.add("report", handler=_CLI + "report_command", help="write a self-contained HTML drift report")
    r.add_argument("model_uri")
    r.add_argument("--data", help="current data file (.csv, .npy, .npz); default: the logged predictions")
    r.add_argument("--layout", default="auto", choices=("auto", "matrix", "columns"))
    r.add_argument("--input-name", default="input-0")
    r.add_argument("--since", help="first day of logged predictions (YYYY-MM-DD)")
    r.add_argument("--until", help="last day of logged predictions (YYYY-MM-DD)")
    r.add_argument("--live", action="store_true", help="use the drift monitor's last stored window instead of logs")
    r.add_argument("-o", "--out", default="drift-report.html", help="output file (default drift-report.html)")

    s = sub.add("status", handler=_CLI + "status_command", help="summary table of profiles and the latest drift scores")
    s.add_argument("model", nargs="?", help="only this model")
    s.add_argument("--json", action="store_true", help="print JSON")

    y = sub.add("replay", handler=_CLI + "replay_command", help="replay logged predictions into drift analysis")
    y.add_argument("model_uri")
    y.add_argument("--since", help="first day (YYYY-MM-DD)")
    y.add_argument("--until", help="last day (YYYY-MM-DD)")
    y.add_argument("--html", help="also write the HTML report here")
    y.add_argument("--json", action="store_true", help="print JSON")
