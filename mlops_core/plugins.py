"""Plugin discovery, the backend catalogue and the typed hook facade.

Load order (explicit, like tox): entry points of group ``mlops_core.plugins``
(minus blocked ones, or only allow-listed ones), then modules named in
``MLOPS_PLUGIN_MODULES``, then plugins registered in code. Each plugin is loaded,
validated and asked for its backends on its own: one broken plugin is recorded in
``PluginManager.failures`` with its name, distribution, version and the real
error, and every other plugin keeps working.

Environment switches:

``MLOPS_DISABLE_PLUGIN_AUTOLOAD=1``
    load no entry points at all (use ``MLOPS_PLUGIN_MODULES`` to add some back).
``MLOPS_BLOCK_PLUGINS=a,b``
    skip these plugins (entry point name or distribution name).
``MLOPS_PLUGINS=a,b``
    allow-list: load only these plugins.
``MLOPS_PLUGIN_MODULES=pkg.mod,other.mod``
    import and register these modules as plugins (no packaging needed).
``MLOPS_TRACE_HOOKS=1``
    print every hook call, per implementation, with its duration, to stderr.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
import threading
import time
import traceback
from collections import Counter
from importlib import metadata
from typing import Any, Callable, Iterable, Mapping

import attrs
import pluggy

from . import hookspecs
from .errors import BackendNotFoundError, ConfigError, InvalidInputError, PluginError

__all__ = [
    "ENTRY_POINT_GROUP",
    "COMPONENTS",
    "hookimpl",
    "BackendSpec",
    "BackendRegistrar",
    "BackendCatalog",
    "PluginFailure",
    "PluginInfo",
    "Hooks",
    "PluginManager",
    "get_plugin_manager",
    "reset_plugin_manager",
]

log = logging.getLogger("mlops_core.plugins")

ENTRY_POINT_GROUP = "mlops_core.plugins"
COMPONENTS = ("storage", "registry", "builder", "deployer", "monitor", "format")

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT_NAME)

#: Where to find backends this project knows about but that may not be installed.
INSTALL_HINTS: Mapping[tuple[str, str], str] = {
    ("storage", "fsspec"): "plugins/mlops-fsspec-storage (pip install mlops-fsspec-storage)",
    ("registry", "sqlite"): "plugins/mlops-sqlite-registry (pip install mlops-sqlite-registry)",
    ("deployer", "process"): "plugins/mlops-process-deployer (pip install mlops-process-deployer)",
    ("builder", "oci"): "plugins/mlops-oci (pip install mlops-oci)",
    ("builder", "dockerfile"): "plugins/mlops-oci (pip install mlops-oci)",
    ("deployer", "container"): "plugins/mlops-oci (pip install mlops-oci)",
    ("monitor", "prometheus"): "plugins/mlops-monitors (pip install mlops-monitors)",
    ("monitor", "drift"): "plugins/mlops-monitors (pip install mlops-monitors)",
    ("monitor", "log"): "plugins/mlops-monitors (pip install mlops-monitors)",
}


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def import_string(path: str) -> Any:
    """Import ``"package.module:attribute"`` (or a module path without ':')."""
    module_name, _, attr = path.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


# ----------------------------------------------------------------- data types
@attrs.frozen
class BackendSpec:
    """One backend a plugin offers. ``factory`` and ``config`` may be import strings (lazy)."""

    component: str
    name: str
    factory: "str | Callable[..., Any]"
    config: "str | type | None" = None
    summary: str = ""
    schemes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    plugin: str = ""
    distribution: str | None = None
    version: str | None = None

    def load_factory(self) -> Callable[..., Any]:
        return import_string(self.factory) if isinstance(self.factory, str) else self.factory

    def load_config_class(self) -> type | None:
        return import_string(self.config) if isinstance(self.config, str) else self.config


@attrs.frozen
class PluginFailure:
    """A plugin that could not be used, and why (the real error, not a summary)."""

    name: str
    stage: str  # "import", "register", "validate", "backends", "conflict"
    error: str
    distribution: str | None = None
    version: str | None = None
    traceback: str = ""

    def describe(self) -> str:
        origin = f" (distribution {self.distribution} {self.version})" if self.distribution else ""
        return f"plugin {self.name!r}{origin} failed at {self.stage}: {self.error}"


@attrs.frozen
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    backends: tuple[str, ...]  # "component:name"


# --------------------------------------------------------- backend catalogue
class BackendCatalog:
    """Every backend offered by the loaded plugins, by component and name."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], BackendSpec] = {}
        self._conflicts: dict[tuple[str, str], list[BackendSpec]] = {}

    def add(self, spec: BackendSpec) -> None:
        key = (spec.component, spec.name)
        if key in self._conflicts:
            self._conflicts[key].append(spec)
            return
        existing = self._specs.get(key)
        if existing is not None:
            # Neither wins silently: the name becomes unusable until one plugin goes.
            del self._specs[key]
            self._conflicts[key] = [existing, spec]
            return
        self._specs[key] = spec

    def remove_plugin(self, plugin: str) -> None:
        for key in [k for k, s in self._specs.items() if s.plugin == plugin]:
            del self._specs[key]

    def names(self, component: str) -> list[str]:
        return sorted(n for (c, n) in self._specs if c == component)

    def specs(self) -> list[BackendSpec]:
        return sorted(self._specs.values(), key=lambda s: (s.component, s.name))

    @property
    def conflicts(self) -> Mapping[tuple[str, str], list[BackendSpec]]:
        return self._conflicts

    def get(self, component: str, name: str) -> BackendSpec:
        if component not in COMPONENTS:
            raise InvalidInputError(f"unknown component {component!r}", hint=f"components are {', '.join(COMPONENTS)}")
        key = (component, name)
        if key in self._conflicts:
            owners = " and ".join(f"{s.plugin!r} ({s.distribution or 'not packaged'})" for s in self._conflicts[key])
            raise PluginError(
                f"{component} backend {name!r} is offered by more than one plugin: {owners}",
                hint="uninstall one of them, or block one with MLOPS_BLOCK_PLUGINS=<plugin name>",
            )
        try:
            return self._specs[key]
        except KeyError:
            installed = ", ".join(self.names(component)) or "none"
            hint = f"installed {component} backends: {installed}"
            known = INSTALL_HINTS.get(key)
            if known:
                hint += f"; {name!r} is provided by {known}"
            else:
                hint += f"; install a plugin that provides it, then check `mlops plugins`"
            raise BackendNotFoundError(f"no {component} backend named {name!r}", hint=hint) from None


class BackendRegistrar:
    """Handed to ``mlops_register_backends``; bound to one plugin so every backend knows its origin."""

    def __init__(self, catalog: BackendCatalog, plugin: str, distribution: str | None, version: str | None):
        self._catalog = catalog
        self._plugin = plugin
        self._distribution = distribution
        self._version = version

    def add(
        self,
        component: str,
        name: str,
        factory: "str | Callable[..., Any]",
        *,
        config: "str | type | None" = None,
        summary: str = "",
        schemes: Iterable[str] = (),
    ) -> None:
        """Offer a backend. ``factory(config, context)`` must return an instance of the component's ABC."""
        if component not in COMPONENTS:
            raise PluginError(f"plugin {self._plugin!r} registered unknown component {component!r}",
                              hint=f"components are {', '.join(COMPONENTS)}")
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise PluginError(f"plugin {self._plugin!r} registered an invalid {component} backend name {name!r}",
                              hint="use letters, digits, '-' and '_'")
        if not (callable(factory) or (isinstance(factory, str) and factory.strip())):
            raise PluginError(f"plugin {self._plugin!r}: factory of {component} {name!r} must be callable or 'module:attr'")
        self._catalog.add(
            BackendSpec(component, name, factory, config, summary, tuple(schemes),
                        self._plugin, self._distribution, self._version)
        )

    def add_storage(self, name: str, factory: Any, **kw: Any) -> None:
        self.add("storage", name, factory, **kw)

    def add_registry(self, name: str, factory: Any, **kw: Any) -> None:
        self.add("registry", name, factory, **kw)

    def add_builder(self, name: str, factory: Any, **kw: Any) -> None:
        self.add("builder", name, factory, **kw)

    def add_deployer(self, name: str, factory: Any, **kw: Any) -> None:
        self.add("deployer", name, factory, **kw)

    def add_monitor(self, name: str, factory: Any, **kw: Any) -> None:
        self.add("monitor", name, factory, **kw)

    def add_format(self, name: str, factory: Any, **kw: Any) -> None:
        self.add("format", name, factory, **kw)


# ---------------------------------------------------------------- hook facade
class Hooks:
    """Typed facade over the hooks: core code calls one method per event.

    Events go to each implementation separately; a failing implementation is
    logged and counted in ``event_errors`` (keyed by plugin and hook) and never
    propagates. Calls cost one attribute lookup and an empty-list check when no
    plugin listens.
    """

    def __init__(self, pm: pluggy.PluginManager, trace: bool = False) -> None:
        self._pm = pm
        self._trace = trace
        self._lock = threading.Lock()
        self.event_errors: Counter[tuple[str, str]] = Counter()
        self._call_monitors: list[Callable[[str, dict[str, Any], list[str]], None]] = []
        #: Bumped whenever a plugin is registered or unregistered, so hot paths can
        #: cache ``has_listeners`` answers and re-check only when this changes.
        self.generation = 0
        self._split_cache: tuple[int, list[Any], list[Any]] | None = None

    def add_call_monitor(self, before: Callable[[str, dict[str, Any], list[str]], None]) -> Callable[[], None]:
        """Call ``before(hook_name, kwargs, plugin_names)`` ahead of every event broadcast.

        For test recorders and debugging tools. Returns a function that removes the
        monitor. Costs one empty-list check per event when no monitor is set.
        """
        self._call_monitors.append(before)
        return lambda: self._call_monitors.remove(before) if before in self._call_monitors else None

    def _impls(self, hook_name: str) -> list[Any]:
        return getattr(self._pm.hook, hook_name).get_hookimpls()

    def has_listeners(self, hook_name: str) -> bool:
        return bool(self._impls(hook_name))

    def _broadcast(self, hook_name: str, _impls: list[Any] | None = None, **kwargs: Any) -> list[Any]:
        results = []
        impls = self._impls(hook_name) if _impls is None else _impls
        if self._call_monitors:
            names = [i.plugin_name for i in reversed(impls) if not (i.hookwrapper or i.wrapper)]
            for monitor in list(self._call_monitors):
                monitor(hook_name, kwargs, names)
        trace = self._trace
        for impl in reversed(impls):  # pluggy order: last registered first
            if impl.hookwrapper or impl.wrapper:
                continue
            start = time.perf_counter() if trace else 0.0
            try:
                results.append(impl.function(*[kwargs[a] for a in impl.argnames]))
            except Exception:
                with self._lock:
                    self.event_errors[(impl.plugin_name, hook_name)] += 1
                log.exception("plugin %r raised in %s; the operation goes on", impl.plugin_name, hook_name)
            finally:
                if trace:
                    ms = (time.perf_counter() - start) * 1000
                    print(f"[mlops trace] {hook_name} -> {impl.plugin_name} ({ms:.3f} ms)", file=sys.stderr)
        return results

    # events ---------------------------------------------------------------
    def bundle_saved(self, path: Any, manifest: dict[str, Any]) -> None:
        self._broadcast("mlops_bundle_saved", path=path, manifest=manifest)

    def version_registered(self, version: Any) -> None:
        self._broadcast("mlops_version_registered", version=version)

    def alias_changed(self, change: Any) -> None:
        self._broadcast("mlops_alias_changed", change=change)

    def version_deleted(self, model: str, version: int) -> None:
        self._broadcast("mlops_version_deleted", model=model, version=version)

    def image_built(self, version: Any, image: Any) -> None:
        self._broadcast("mlops_image_built", version=version, image=image)

    def deployment_changed(self, deployment: Any, action: str) -> None:
        self._broadcast("mlops_deployment_changed", deployment=deployment, action=action)

    def _prediction_split(self) -> tuple[list[Any], list[Any]]:
        """(batch listeners, per-call-only listeners), recomputed only when plugins change."""
        cached = self._split_cache
        if cached is not None and cached[0] == self.generation:
            return cached[1], cached[2]
        batch = self._impls("mlops_predictions_batch")
        takes_batches = {i.plugin_name for i in batch}
        per_call = [i for i in self._impls("mlops_predictions_served") if i.plugin_name not in takes_batches]
        self._split_cache = (self.generation, batch, per_call)
        return batch, per_call

    def has_prediction_listeners(self) -> bool:
        """Whether any plugin listens for served predictions (per call or per batch)."""
        batch, per_call = self._prediction_split()
        return bool(batch or per_call)

    def predictions_served(self, event: Any) -> None:
        batch, per_call = self._prediction_split()
        if per_call:
            self._broadcast("mlops_predictions_served", per_call, event=event)
        if batch:
            from .entities import PredictionBatch

            self._broadcast("mlops_predictions_batch", batch, batch=PredictionBatch.from_events([event]))

    def predictions_batch(self, batch: Any) -> None:
        """Deliver a :class:`~mlops_core.entities.PredictionBatch`: whole to plugins that take batches,
        call by call to plugins that implement only ``mlops_predictions_served``."""
        takes_batches, per_call = self._prediction_split()
        if takes_batches:
            self._broadcast("mlops_predictions_batch", takes_batches, batch=batch)
        if per_call:
            for event in batch.events():
                self._broadcast("mlops_predictions_served", per_call, event=event)

    def drift_detected(self, report: Any) -> None:
        self._broadcast("mlops_drift_detected", report=report)

    def alert(self, alert: dict[str, Any]) -> None:
        self._broadcast("mlops_alert", alert=alert)

    def collect_metrics(self) -> str:
        parts = [p for p in self._broadcast("mlops_collect_metrics") if p]
        return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


# -------------------------------------------------------------- the manager
class PluginManager:
    """Loads plugins, keeps failures and the backend catalogue, and exposes ``hooks``."""

    def __init__(self, *, autoload: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.hooks = Hooks(self.pm, trace=_env_flag("MLOPS_TRACE_HOOKS"))
        self.failures: list[PluginFailure] = []
        self.catalog = BackendCatalog()
        self._origins: dict[str, tuple[str | None, str | None]] = {}
        self._known_hooks = {n for n in dir(hookspecs) if n.startswith("mlops_")}
        if autoload is None:
            autoload = not _env_flag("MLOPS_DISABLE_PLUGIN_AUTOLOAD")
        if autoload:
            self._load_entry_points()
        for module_name in _env_list("MLOPS_PLUGIN_MODULES"):
            self._load(module_name, lambda m=module_name: importlib.import_module(m), None, None)

    # loading ---------------------------------------------------------------
    def _load_entry_points(self) -> None:
        blocked = set(_env_list("MLOPS_BLOCK_PLUGINS"))
        allowed = set(_env_list("MLOPS_PLUGINS"))
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            dist_version = dist.version if dist is not None else None
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            if ep.name in blocked or (dist_name and dist_name in blocked):
                continue
            if allowed and ep.name not in allowed and dist_name not in allowed:
                continue
            self._load(ep.name, ep.load, dist_name, dist_version)

    def _fail(self, name: str, stage: str, exc: BaseException, dist: str | None, version: str | None) -> None:
        failure = PluginFailure(
            name=name, stage=stage, error=f"{type(exc).__name__}: {exc}", distribution=dist, version=version,
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        self.failures.append(failure)
        log.warning("%s", failure.describe())

    def _load(self, name: str, loader: Callable[[], Any], dist: str | None, version: str | None) -> None:
        try:
            plugin = loader()
        except Exception as exc:  # ImportError and whatever the module raises at import
            self._fail(name, "import", exc, dist, version)
            return
        self.register(plugin, name=name, distribution=dist, version=version)

    def register(self, plugin: Any, name: str | None = None, *,
                 distribution: str | None = None, version: str | None = None) -> str | None:
        """Register a plugin object or module; returns its name, or None if it failed (see ``failures``)."""
        name = name or self.pm.get_canonical_name(plugin)
        try:
            self._check_hook_names(plugin)
            self.pm.register(plugin, name=name)
        except Exception as exc:  # PluginValidationError, a misspelled hook, a duplicate name
            self._fail(name, "validate", exc, distribution, version)
            return None
        self._origins[name] = (distribution, version)
        self.hooks.generation += 1
        registrar = BackendRegistrar(self.catalog, name, distribution, version)
        if self.call_each("mlops_register_backends", only=name, backends=registrar):
            self.catalog.remove_plugin(name)
        return name

    def call_each(self, hook_name: str, *, only: str | None = None, **kwargs: Any) -> list[str]:
        """Call a provider hook on each plugin separately (or only on plugin ``only``).

        A plugin whose implementation raises is recorded in ``failures`` under the
        hook's name; the others still run. Returns the names of the plugins that failed.
        """
        failed = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if only is not None and impl.plugin_name != only:
                continue
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:
                failed.append(impl.plugin_name)
                self._fail(impl.plugin_name, hook_name, exc, *self._origins.get(impl.plugin_name, (None, None)))
        return failed

    def _check_hook_names(self, plugin: Any) -> None:
        for attr in dir(plugin):
            if not attr.startswith("mlops_") or attr in self._known_hooks:
                continue
            if self.pm.parse_hookimpl_opts(plugin, attr) is None:
                continue
            close = difflib.get_close_matches(attr, sorted(self._known_hooks), n=1)
            suggestion = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(f"{attr!r} is not a known mlops hook{suggestion}",
                              hint="see docs/hooks.md for the list of hooks")

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.hooks.generation += 1
        self.catalog.remove_plugin(name)
        self._origins.pop(name, None)

    # inspection -----------------------------------------------------------
    def conflict_failures(self) -> list[PluginFailure]:
        out = []
        for (component, name), specs in self.catalog.conflicts.items():
            owners = ", ".join(s.plugin for s in specs)
            out.append(PluginFailure(name=specs[-1].plugin, stage="conflict",
                                     error=f"{component} backend {name!r} is offered by several plugins: {owners}",
                                     distribution=specs[-1].distribution, version=specs[-1].version))
        return out

    def all_failures(self) -> list[PluginFailure]:
        return self.failures + self.conflict_failures()

    def plugins(self) -> list[PluginInfo]:
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda p: str(p[0])):
            if plugin is None:
                continue
            dist, version = self._origins.get(name, (None, None))
            hooks = sorted(hc.name for hc in (self.pm.get_hookcallers(plugin) or []))
            backends = tuple(f"{s.component}:{s.name}" for s in self.catalog.specs() if s.plugin == name)
            out.append(PluginInfo(name, dist, version, tuple(hooks), backends))
        return out

    def build(self, component: str, name: str, settings: Mapping[str, Any], context: Any) -> Any:
        """Build backend ``name`` of ``component``: import its factory now, validate settings, construct."""
        spec = self.catalog.get(component, name)
        try:
            factory = spec.load_factory()
            config_class = spec.load_config_class()
        except Exception as exc:
            raise PluginError(
                f"{component} backend {name!r} from plugin {spec.plugin!r} cannot be imported: {type(exc).__name__}: {exc}",
                hint=f"reinstall {spec.distribution or spec.plugin} and its dependencies",
            ) from exc
        config = make_config(config_class, settings, f"{component} backend {name!r}")
        return factory(config, context)


def make_config(config_class: type | None, settings: Mapping[str, Any], what: str) -> Any:
    """Build an attrs config from settings, with errors that list the valid keys."""
    if config_class is None:
        return dict(settings)
    if attrs.has(config_class):
        valid = {f.name for f in attrs.fields(config_class)}
        unknown = sorted(set(settings) - valid)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} for {what}",
                              hint=f"valid settings: {', '.join(sorted(valid)) or 'none'}")
    try:
        return config_class(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings for {what}: {exc}", hint="check the stack file (mlops stack show)") from None


_MANAGER: PluginManager | None = None
_MANAGER_LOCK = threading.RLock()
_LOADING = threading.local()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _MANAGER
    if _MANAGER is None:
        with _MANAGER_LOCK:
            if getattr(_LOADING, "active", False):
                # A plugin asked for the manager from inside its own loading: a deadlock
                # with a plain lock, an infinite recursion without one.
                raise PluginError(
                    "get_plugin_manager() was called while plugins are being loaded",
                    hint="a plugin's module or mlops_register_backends must not use the manager; "
                         "register import strings and build things lazily",
                )
            if _MANAGER is None:
                _LOADING.active = True
                try:
                    _MANAGER = PluginManager()
                finally:
                    _LOADING.active = False
    return _MANAGER


def reset_plugin_manager(manager: PluginManager | None = None) -> PluginManager | None:
    """Replace (or drop, to reload on next use) the process-wide manager; returns the previous one."""
    global _MANAGER
    with _MANAGER_LOCK:
        previous, _MANAGER = _MANAGER, manager
    return previous
