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

import importlib
import logging
import os
import threading
import traceback
from importlib import metadata
from typing import Any, Callable, Mapping

import attrs
import pluggy

from . import hookspecs
# Re-exported: these lived here before mlops_core.catalog existed.
from .catalog import (COMPONENTS, INSTALL_HINTS, BackendCatalog, BackendRegistrar, BackendSpec,  # noqa: F401
                      CommandRegistrar, declared_backends, import_string)
from .errors import ConfigError, PluginError
from .events import EventDispatcher, check_plugin

__all__ = [
    "ENTRY_POINT_GROUP",
    "COMPONENTS",
    "hookimpl",
    "BackendSpec",
    "BackendRegistrar",
    "BackendCatalog",
    "CommandRegistrar",
    "EventDispatcher",
    "PluginFailure",
    "PluginInfo",
    "Hooks",
    "PluginManager",
    "get_plugin_manager",
    "reset_plugin_manager",
]

log = logging.getLogger("mlops_core.plugins")

ENTRY_POINT_GROUP = "mlops_core.plugins"

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT_NAME)


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


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


# ---------------------------------------------------------------- hook facade
#: The typed event facade; the name of :class:`~mlops_core.events.EventDispatcher` before stacks had their own.
Hooks = EventDispatcher


# -------------------------------------------------------------- the manager
class PluginManager:
    """Loads plugins, keeps failures and the backend catalogue, and exposes ``hooks``."""

    def __init__(self, *, autoload: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        #: The dispatcher of the installed plugins; each Stack links its own to it (``stack.events``).
        self.hooks = EventDispatcher([self.pm], trace=_env_flag("MLOPS_TRACE_HOOKS"))
        self.failures: list[PluginFailure] = []
        self.catalog = BackendCatalog()
        self._origins: dict[str, tuple[str | None, str | None]] = {}
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
            check_plugin(self.pm, plugin, name)
            self.pm.register(plugin, name=name)
        except Exception as exc:  # PluginValidationError, a misspelled hook, a wrapper, a duplicate name
            self._fail(name, "validate", exc, distribution, version)
            return None
        self._origins[name] = (distribution, version)
        registrar = BackendRegistrar(self.catalog, name, distribution, version)
        try:
            for component, backend_name, factory, config, summary, schemes in declared_backends(plugin):
                registrar.add(component, backend_name, factory, config=config, summary=summary, schemes=schemes)
        except Exception as exc:
            self._fail(name, "backends", exc, distribution, version)
            self.catalog.remove_plugin(name)
            return name
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

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
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
