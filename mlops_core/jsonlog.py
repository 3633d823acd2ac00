"""JSON-lines logs on stdout, for container and Kubernetes log collectors (``--log-format json``).

One object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``,
``pid``, and any structured fields a caller passes with ``extra={"fields": {...}}``
(the model server's request records carry ``model``, ``version``,
``request_id``, ``latency_ms``, ``status``...). Exceptions become an ``exc``
string. Only the standard library: the core stays light.

Turned on with :func:`configure` (the server's and deployers' ``log_format =
"json"`` settings, or ``MLOPS_LOG_FORMAT=json`` in the environment).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
from typing import IO, Any

__all__ = ["JsonFormatter", "configure", "wanted", "LOG_FORMATS"]

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newline inside, whatever the message holds)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def wanted(setting: str | None = None) -> bool:
    """Whether JSON logs are asked for: by ``setting`` when given, else by ``MLOPS_LOG_FORMAT``."""
    value = (setting or os.environ.get("MLOPS_LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        from .errors import ConfigError

        raise ConfigError(f"unknown log format {value!r}", hint="use log_format = \"text\" or \"json\"")
    return value == "json"


def configure(level: str | int = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record of the process to ``stream`` (default stdout) as JSON lines; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else getattr(logging, str(level).upper(), logging.INFO))
    return handler
