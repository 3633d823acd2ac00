"""The ``webhook`` alerter: POSTs every ``mlops_alert`` as JSON to a URL, off the caller's thread.

Retries connection errors, 429 and 5xx answers with exponential backoff and
jitter (``backoff_s * 2**attempt``, capped at ``backoff_max_s``, honouring a
numeric ``Retry-After``); other 4xx answers are not retried. Alerts wait in a
bounded queue: when the endpoint is down for long, new alerts are dropped and
counted rather than piling up in memory, and the caller never waits.

Body: the alert itself (``severity``, ``title``, ``model``, ``version``,
``details``) plus ``"source": "mlops"`` and an ISO ``"time"``; Slack/Teams
style adapters can sit behind a tiny proxy or a subclass overriding ``payload``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from typing import Any, Mapping

import attrs

from mlops_core.entities import to_json, utcnow
from mlops_core.plugins import hookimpl

from ._base import MonitorBase
from ._worker import BackgroundWorker

__all__ = ["WebhookConfig", "WebhookAlerter", "create_monitor"]

log = logging.getLogger("mlops_monitors.webhook")

SEVERITIES = ("info", "warning", "critical")


@attrs.frozen
class WebhookConfig:
    """Settings of ``[[monitors]] backend = "webhook"``: ``url`` (required), ``headers``,
    ``min_severity``, ``timeout_s``, ``max_attempts``, ``backoff_s``, ``backoff_max_s``, ``queue_size``."""

    url: str = attrs.field(validator=attrs.validators.matches_re(r"https?://\S+"))
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=dict)
    min_severity: str = attrs.field(default="info", validator=attrs.validators.in_(SEVERITIES))
    timeout_s: float = 5.0
    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    queue_size: int = 100


class WebhookAlerter(MonitorBase):
    """Delivers alerts to one HTTP endpoint; ``sent``/``failed`` count outcomes, drops are the worker's."""

    kind = "webhook"

    def __init__(self, config: WebhookConfig, context: Any = None) -> None:
        super().__init__(context)
        self.config = config
        self.sent = 0
        self.failed = 0
        self.attempts = 0
        self._rng = random.Random()
        # one alert at a time: an alert being retried holds its place, later ones wait in the queue
        self.worker = BackgroundWorker("webhook", lambda alerts: [self._deliver(a) for a in alerts],
                                       maxsize=config.queue_size, batch_max=1)

    @hookimpl
    def mlops_alert(self, alert: dict[str, Any]) -> None:
        severity = alert.get("severity", "warning")
        if SEVERITIES.index(severity if severity in SEVERITIES else "warning") >= SEVERITIES.index(
                self.config.min_severity):
            self.worker.submit(dict(alert))

    def payload(self, alert: Mapping[str, Any]) -> bytes:
        body = {"source": "mlops", "time": utcnow().isoformat(), **to_json(dict(alert))}
        return json.dumps(body, default=str).encode("utf-8")

    def _deliver(self, alert: Mapping[str, Any]) -> None:
        data = self.payload(alert)
        headers = {"Content-Type": "application/json", "User-Agent": "mlops-monitors-webhook", **self.config.headers}
        for attempt in range(self.config.max_attempts):
            self.attempts += 1
            retry_after: float | None = None
            try:
                req = urllib.request.Request(self.config.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                    resp.read()
                self.sent += 1
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    self.failed += 1
                    log.error("webhook %s refused an alert: HTTP %s (not retried)", self.config.url, exc.code)
                    return
                value = exc.headers.get("Retry-After") if exc.headers else None
                retry_after = float(value) if value and value.strip().isdigit() else None
                reason = f"HTTP {exc.code}"
            except OSError as exc:  # refused, reset, timeout
                reason = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < self.config.max_attempts:
                delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** attempt)
                delay = retry_after if retry_after is not None else delay * (0.5 + self._rng.random() / 2)
                log.warning("webhook %s failed (%s); retry %d in %.2fs", self.config.url, reason, attempt + 1, delay)
                time.sleep(min(delay, self.config.backoff_max_s))
        self.failed += 1
        log.error("webhook %s: alert %r not delivered after %d attempts", self.config.url,
                  alert.get("title"), self.config.max_attempts)


def create_monitor(config: WebhookConfig, context: Any) -> WebhookAlerter:
    return WebhookAlerter(config, context)
