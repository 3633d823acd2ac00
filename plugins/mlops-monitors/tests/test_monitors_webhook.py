"""The webhook alerter: real HTTP endpoints, retries with backoff, never blocking the caller."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlops_core.plugins import PluginManager
from monitors_fixtures import context, wait_until

from mlops_monitors.webhook import WebhookAlerter, WebhookConfig


class Endpoint:
    """A real HTTP endpoint answering with the given status codes in turn (then 200)."""

    def __init__(self, statuses=(), hold: threading.Event | None = None) -> None:
        self.statuses = list(statuses)
        self.received: list[dict] = []
        self.hits = 0
        self.hold = hold
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits += 1
                if outer.hold is not None:
                    outer.hold.wait(30)
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.received.append({"body": json.loads(body), "ctype": self.headers["Content-Type"],
                                           "token": self.headers.get("X-Token")})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


ALERT = {"severity": "critical", "title": "drift on income", "model": "credit", "version": 4,
         "details": {"features": ["income"]}}


def _alerter(url, **kw):
    pm = PluginManager(autoload=False)
    alerter = WebhookAlerter(WebhookConfig(url=url, backoff_s=0.01, **kw), context(pm, "webhook"))
    pm.register(alerter, name="monitor:webhook:0")
    return pm, alerter


def test_alert_is_posted_as_json_after_retrying_server_errors():
    endpoint = Endpoint(statuses=[503, 500, 429])
    try:
        pm, alerter = _alerter(endpoint.url, headers={"X-Token": "s3cret"})
        pm.hooks.alert(ALERT)
        alerter.flush()
        assert endpoint.hits == 4 and alerter.attempts == 4 and alerter.sent == 1 and alerter.failed == 0
        got = endpoint.received[0]
        assert got["ctype"] == "application/json" and got["token"] == "s3cret"
        assert got["body"]["title"] == "drift on income" and got["body"]["source"] == "mlops"
        assert got["body"]["details"] == {"features": ["income"]}
        alerter.close()
    finally:
        endpoint.close()


def test_client_errors_are_not_retried_and_attempts_are_bounded():
    endpoint = Endpoint(statuses=[400] + [503] * 10)
    try:
        pm, alerter = _alerter(endpoint.url, max_attempts=3)
        pm.hooks.alert(ALERT)  # 400: given up at once
        pm.hooks.alert(ALERT)  # 503 x3: given up after max_attempts
        alerter.flush()
        assert endpoint.hits == 4 and alerter.failed == 2 and alerter.sent == 0
        alerter.close()
    finally:
        endpoint.close()


def test_min_severity_filters_alerts():
    endpoint = Endpoint()
    try:
        pm, alerter = _alerter(endpoint.url, min_severity="critical")
        pm.hooks.alert({**ALERT, "severity": "info"})
        pm.hooks.alert(ALERT)
        alerter.flush()
        assert [r["body"]["severity"] for r in endpoint.received] == ["critical"]
        alerter.close()
    finally:
        endpoint.close()


def test_a_hanging_endpoint_never_blocks_the_caller():
    hold = threading.Event()
    endpoint = Endpoint(hold=hold)
    try:
        pm, alerter = _alerter(endpoint.url, queue_size=5, timeout_s=30)
        for _ in range(50):
            pm.hooks.alert(ALERT)  # returns while the endpoint still holds the first request
        assert not hold.is_set()
        wait_until(lambda: endpoint.hits == 1, 10, what="the first POST to arrive")
        # at most one in flight and five queued; the rest dropped and counted, none lost silently
        dropped = alerter.worker.dropped
        assert dropped in (44, 45) and alerter.worker.submitted + dropped == 50
        hold.set()
        alerter.flush()
        assert alerter.sent == 50 - dropped
        alerter.close()
    finally:
        endpoint.close()


def test_config_refuses_a_non_http_url():
    with pytest.raises(ValueError):
        WebhookConfig(url="ftp://example.com")


def test_drift_alert_reaches_the_webhook(tmp_path):
    import numpy as np

    from monitors_fixtures import DirStore, event

    from mlops_monitors.drift import DriftConfig, DriftMonitor

    endpoint = Endpoint()
    try:
        pm, alerter = _alerter(endpoint.url)
        drift = DriftMonitor(DriftConfig(evaluate_interval_s=0, window_rows=1000, subwindows=2, min_rows=500, alert_severity="critical"),
                             context(pm, "drift"), DirStore(tmp_path))
        pm.register(drift, name="monitor:drift:1")
        rng = np.random.default_rng(0)
        drift.capture_profile("loans", 9, {"income": rng.normal(50, 10, 5000), "term": rng.choice(["36", "60"], 5000)},
                              save=False)
        for _ in range(20):
            pm.hooks.predictions_served(event("loans", 9, {"income": rng.normal(80, 10, 100),
                                                           "term": rng.choice(["36", "60"], 100)}))
        drift.flush()
        alerter.flush()
        [got] = [r["body"] for r in endpoint.received]
        assert got["severity"] == "critical" and got["model"] == "loans" and got["version"] == 9
        assert got["details"]["features"] == ["income"] and got["details"]["worst"]["feature"] == "income"
        drift.close()
        alerter.close()
    finally:
        endpoint.close()
