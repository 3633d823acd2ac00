"""Registers the stack's configured monitors in a host process that does not do it itself.

``mlops_core.stack.Stack.monitors`` builds the ``[[monitors]]`` of the stack and
registers them with the plugin manager; a model server must ask for them once.
Until every host does, load this module as a plugin::

    MLOPS_PLUGIN_MODULES=mlops_monitors.stack_bridge python -m mlops_server --bundle ...

On the first event (or the first scrape) it builds the monitors of the
process-wide stack, hands them that first event, and from then on they receive
every event directly; this module's own hooks return at once. Monitors are
closed at interpreter exit, so buffered logs and drift reports are written.
Building cannot happen at import: plugin modules are imported while the
process-wide plugin manager is still being constructed.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from mlops_core.plugins import hookimpl

__all__ = ["mlops_predictions_served", "mlops_collect_metrics", "monitors"]

log = logging.getLogger("mlops_monitors.stack_bridge")

_lock = threading.Lock()
_built = False
_monitors: list[Any] = []


def monitors() -> list[Any]:
    """Build (once) and return the process-wide stack's monitors."""
    global _built
    if _built:
        return _monitors
    with _lock:
        if not _built:
            _built = True
            try:
                from mlops_core.api import get_stack

                stack = get_stack()
                _monitors.extend(stack.monitors)
                atexit.register(stack.close)
                log.info("registered %d stack monitor(s): %s", len(_monitors),
                         ", ".join(type(m).__name__ for m in _monitors))
            except Exception:
                log.exception("could not build the stack's monitors; monitoring is off in this process")
    return _monitors


@hookimpl
def mlops_predictions_served(event: Any) -> None:
    if _built:
        return
    for monitor in monitors():
        handler = getattr(monitor, "mlops_predictions_served", None)
        if handler is not None:
            handler(event)  # the one event that arrived before they were registered


@hookimpl
def mlops_collect_metrics() -> str | None:
    if _built:
        return None
    parts = [getattr(m, "mlops_collect_metrics", lambda: None)() for m in monitors()]
    return "".join(p for p in parts if p) or None
