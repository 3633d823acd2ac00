"""Event dispatch: one dispatcher per stack, linked to the process-wide plugins.

An :class:`EventDispatcher` delivers each event hook to every implementation in
its *sources* (pluggy managers), one implementation at a time: a listener that
raises is logged and counted in ``event_errors`` and never stops the operation
that fired the event, nor the other listeners.

* The plugin manager's dispatcher (``get_plugin_manager().hooks``) has one
  source: the installed plugins.
* Each :class:`~mlops_core.stack.Stack` has its own dispatcher (``stack.events``)
  with two sources: the stack's monitors, then the installed plugins. So two
  stacks in one process each hear their own monitors only, while every plugin
  hears both. The stack dispatcher's *parent* is the plugin manager's, whose
  call monitors (test recorders) see the stack's events too, and whose
  ``event_errors`` count them as well.

The typed methods (``version_registered``, ``alias_changed``...) are generated
from :mod:`mlops_core.hookspecs` into :mod:`mlops_core._event_calls`
(``docs/gen_reference.py`` writes it; a test fails when it is stale). Events
are broadcasts of isolated listeners, so hook wrappers (``wrapper=True`` or
``hookwrapper=True``) are refused when a plugin registers (see
:func:`check_plugin`).
"""

from __future__ import annotations

import difflib
import logging
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Mapping

import pluggy

from . import hookspecs
from ._event_calls import EventCalls
from .errors import InvalidInputError, PluginError

__all__ = ["EventDispatcher", "check_plugin", "event_hook_names", "PROVIDER_HOOKS"]

log = logging.getLogger("mlops_core.events")

#: Hooks called once per plugin by the core (``PluginManager.call_each``), not broadcast as events.
PROVIDER_HOOKS = ("mlops_register_backends", "mlops_add_cli_commands")

CallMonitor = Callable[[str, "dict[str, Any]", "list[str]"], None]


def _known_hooks() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("mlops_"))


def event_hook_names() -> list[str]:
    """Every hook the dispatcher broadcasts (all but the provider hooks), in hookspecs order."""
    return [name for name, fn in vars(hookspecs).items()
            if name.startswith("mlops_") and callable(fn) and name not in PROVIDER_HOOKS]


def check_plugin(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Refuse what pluggy would accept but the core would mishandle; PluginError names the plugin.

    * a method named like a hook that is not one (a typo) gets a "did you mean";
    * a hook wrapper (``@hookimpl(wrapper=True)`` or ``hookwrapper=True``): the core
      calls every listener on its own, isolated, so a wrapper would be skipped silently.
    """
    known = set(_known_hooks())
    for attr in dir(plugin):
        if not attr.startswith("mlops_"):
            continue
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        if attr not in known:
            close = difflib.get_close_matches(attr, sorted(known), n=1)
            suggestion = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"plugin {name!r}: {attr!r} is not a known mlops hook{suggestion}",
                              hint="see docs/hooks.md for the list of hooks")
        if opts.get("wrapper") or opts.get("hookwrapper"):
            raise PluginError(
                f"plugin {name!r}: {attr} is a hook wrapper, which mlops hooks do not support",
                hint="the core calls each implementation on its own, with failures isolated; "
                     "drop wrapper=True/hookwrapper=True and implement the hook as a plain function",
            )


def _coerce_alert(kwargs: dict[str, Any]) -> None:
    from .entities import Alert

    kwargs["alert"] = Alert.coerce(kwargs["alert"])


def _check_action(kwargs: dict[str, Any]) -> None:
    from .entities import Deployment

    if kwargs["action"] not in Deployment.ACTIONS:
        raise InvalidInputError(f"unknown deployment action {kwargs['action']!r}",
                                hint=f"actions are {', '.join(Deployment.ACTIONS)}")


def _check_drift_report(kwargs: dict[str, Any]) -> None:
    from .entities import DriftReport

    if not isinstance(kwargs["report"], DriftReport):
        raise InvalidInputError(f"a drift report must be a DriftReport, not {type(kwargs['report']).__name__}",
                                hint="give it model, version, drifted and to_dict() (mlops_core.entities.DriftReport)")


#: Checks and conversions of event arguments, before any listener runs (the typed contract).
_ARGUMENT_CHECKS: Mapping[str, Callable[[dict[str, Any]], None]] = {
    "mlops_alert": _coerce_alert,
    "mlops_deployment_changed": _check_action,
    "mlops_drift_detected": _check_drift_report,
}


#: Served predictions, routed per plugin between the per-call and the batch hook (see ``_route_predictions``).
_PREDICTION_HOOKS = frozenset({"mlops_predictions_served", "mlops_predictions_batch"})


class EventDispatcher(EventCalls):
    """Delivers events to the implementations in ``sources``, each isolated (see the module docstring)."""

    def __init__(self, sources: Iterable[pluggy.PluginManager], *, parent: "EventDispatcher | None" = None,
                 trace: bool = False) -> None:
        self._sources = tuple(sources)
        self._parent = parent
        #: Print every delivery with its duration to stderr (``MLOPS_TRACE_HOOKS=1``).
        self.trace = trace
        self._lock = threading.Lock()
        #: Failures of listeners, by (plugin name, hook name).
        self.event_errors: Counter[tuple[str, str]] = Counter()
        self._call_monitors: list[CallMonitor] = []

    def add_call_monitor(self, before: CallMonitor) -> Callable[[], None]:
        """Call ``before(hook_name, kwargs, plugin_names)`` ahead of every event broadcast.

        For test recorders and debugging tools; a monitor on the plugin manager's
        dispatcher also sees every stack's events. Returns a function that removes
        the monitor. Costs one empty-list check per event when no monitor is set.
        """
        self._call_monitors.append(before)
        return lambda: self._call_monitors.remove(before) if before in self._call_monitors else None

    def _impls(self, hook_name: str) -> list[Any]:
        """Implementations in call order: each source's last registered first, sources in order."""
        out: list[Any] = []
        for pm in self._sources:
            out.extend(reversed(getattr(pm.hook, hook_name).get_hookimpls()))
        return out

    def has_listeners(self, hook_name: str) -> bool:
        return any(getattr(pm.hook, hook_name).get_hookimpls() for pm in self._sources)

    def _monitors(self) -> list[CallMonitor]:
        """This dispatcher's call monitors and its parents' (no copy when there are none)."""
        if self._parent is None:
            return self._call_monitors
        inherited = self._parent._monitors()
        return self._call_monitors + inherited if inherited else self._call_monitors

    def _count_error(self, key: tuple[str, str]) -> None:
        with self._lock:
            self.event_errors[key] += 1
        if self._parent is not None:
            self._parent._count_error(key)

    def _broadcast(self, hook_name: str, _impls: list[Any] | None = None, **kwargs: Any) -> list[Any]:
        if _impls is None and hook_name in _PREDICTION_HOOKS:
            return self._route_predictions(hook_name, kwargs)
        check = _ARGUMENT_CHECKS.get(hook_name)
        if check is not None:
            check(kwargs)
        impls = self._impls(hook_name) if _impls is None else _impls
        monitors = self._monitors()
        if monitors:
            names = [i.plugin_name for i in impls]
            for monitor in list(monitors):  # a monitor may remove itself
                monitor(hook_name, kwargs, names)
        results = []
        trace = self.trace
        for impl in impls:
            start = time.perf_counter() if trace else 0.0
            try:
                results.append(impl.function(*[kwargs[a] for a in impl.argnames]))
            except Exception:
                self._count_error((impl.plugin_name, hook_name))
                log.exception("plugin %r raised in %s; the operation goes on", impl.plugin_name, hook_name)
            finally:
                if trace:
                    ms = (time.perf_counter() - start) * 1000
                    print(f"[mlops trace] {hook_name} -> {impl.plugin_name} ({ms:.3f} ms)", file=sys.stderr)
        return results

    # served predictions: batches to batch listeners, calls to the others ----------
    def _prediction_split(self) -> tuple[list[Any], list[Any]]:
        """(plugins taking ``mlops_predictions_batch``, plugins taking only ``mlops_predictions_served``)."""
        batch = self._impls("mlops_predictions_batch")
        takes_batches = {i.plugin_name for i in batch}
        per_call = [i for i in self._impls("mlops_predictions_served") if i.plugin_name not in takes_batches]
        return batch, per_call

    def has_prediction_listeners(self) -> bool:
        """Whether any plugin listens for served predictions (per call or per batch)."""
        return self.has_listeners("mlops_predictions_batch") or self.has_listeners("mlops_predictions_served")

    def _route_predictions(self, hook_name: str, kwargs: dict[str, Any]) -> list[Any]:
        """Served predictions reach each plugin once, in the form it takes.

        A plugin implementing ``mlops_predictions_batch`` gets batches only (a single
        served event as a batch of one); a plugin implementing only
        ``mlops_predictions_served`` gets a batch call by call.
        """
        takes_batches, per_call = self._prediction_split()
        results: list[Any] = []
        if hook_name == "mlops_predictions_served":
            if per_call:
                results += self._broadcast(hook_name, per_call, **kwargs)
            if takes_batches:
                from .entities import PredictionBatch

                results += self._broadcast("mlops_predictions_batch", takes_batches,
                                           batch=PredictionBatch.from_events([kwargs["event"]]))
            return results
        if takes_batches:
            results += self._broadcast(hook_name, takes_batches, **kwargs)
        if per_call:
            for event in kwargs["batch"].events():
                results += self._broadcast("mlops_predictions_served", per_call, event=event)
        return results

    # hooks that return something: aggregated by hand ---------------------------
    def collect_metrics(self) -> str:
        """Every listener's Prometheus text, concatenated (each part ends with a newline)."""
        parts = [p for p in self._broadcast("mlops_collect_metrics") if p]
        return "".join(p if p.endswith("\n") else p + "\n" for p in parts)
