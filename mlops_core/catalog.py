"""The backend catalogue and the registrars handed to provider hooks.

* :class:`BackendRegistrar` is what ``mlops_register_backends(backends)`` receives;
  :func:`backend` is the one-decorator shortcut for a backend class in a plugin module.
* :class:`CommandRegistrar` is what ``mlops_add_cli_commands(commands)`` receives.
* :class:`BackendCatalog` keeps every offered backend by component and name.

This module imports nothing of the core but errors, so hook specs, the plugin
manager and backends can all name these types without an import cycle.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, Iterable, Mapping, TypeVar

import attrs

from .errors import BackendNotFoundError, InvalidInputError, PluginError

__all__ = [
    "COMPONENTS",
    "BackendSpec",
    "BackendCatalog",
    "BackendRegistrar",
    "CommandRegistrar",
    "backend",
    "declared_backends",
    "import_string",
]

COMPONENTS = ("storage", "registry", "builder", "deployer", "monitor", "format", "batch")

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
    ("batch", "dask"): "plugins/mlops-batch-dask (pip install mlops-batch-dask)",
    ("batch", "ray"): "plugins/mlops-batch-ray (pip install mlops-batch-ray)",
    ("batch", "spark"): "plugins/mlops-batch-spark (pip install mlops-batch-spark)",
}


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
    #: One line for ``mlops plugins`` (the backend table and ``--json``).
    summary: str = ""
    #: URL schemes the backend serves (``s3``, ``postgresql``...): listed by ``mlops plugins`` and
    #: named in the hint when a stack asks for a backend by a scheme (see ``BackendCatalog.for_scheme``).
    schemes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    plugin: str = ""
    distribution: str | None = None
    version: str | None = None

    def load_factory(self) -> Callable[..., Any]:
        return import_string(self.factory) if isinstance(self.factory, str) else self.factory

    def load_config_class(self) -> type | None:
        return import_string(self.config) if isinstance(self.config, str) else self.config

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

    def for_scheme(self, component: str, scheme: str) -> list[BackendSpec]:
        """Backends of ``component`` that declare URL scheme ``scheme`` (``BackendSpec.schemes``)."""
        return [s for s in self.specs() if s.component == component and scheme in s.schemes]

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
            by_scheme = self.for_scheme(component, name)
            if by_scheme:
                hint += f"; {name}:// URLs are handled by the {component} backend {by_scheme[0].name!r} (set its url)"
            elif known:
                hint += f"; {name!r} is provided by {known}"
            else:
                hint += "; install a plugin that provides it, then check `mlops plugins`"
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
        from .entities import validate_backend_name

        try:
            validate_backend_name(name)
        except InvalidInputError as exc:
            raise PluginError(f"plugin {self._plugin!r} registered an invalid {component} backend name {name!r}",
                              hint=exc.hint) from None
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

    def add_batch_engine(self, name: str, factory: Any, **kw: Any) -> None:
        """Offer a batch scoring engine: ``factory(config, context)`` returns a :class:`~mlops_core.interfaces.BatchEngine`."""
        self.add("batch", name, factory, **kw)




# ------------------------------------------------------------ one decorator
_BACKEND_ATTR = "__mlops_backend__"
T = TypeVar("T")


def backend(component: str, name: str, *, config: "type | None" = None, summary: str | None = None,
            schemes: Iterable[str] = ()) -> Callable[[T], T]:
    """Declare a backend class of a plugin module: the whole registration of a small plugin.

    ::

        @mlops_core.backend("storage", "dir", config=DirConfig)
        class DirStore(ArtifactStore):
            def _write(self, key, source): ...

    The plugin manager finds decorated classes defined in a module it registers
    (from the ``mlops_core.plugins`` entry point or ``MLOPS_PLUGIN_MODULES``), so
    no ``mlops_register_backends`` hook is needed. The class is its own factory:
    it is called as ``cls(config, context)``, which :class:`~mlops_core.interfaces.Backend`
    stores as ``self.config`` and ``self.context``. ``config`` is an attrs class
    (None: the settings as a dict); ``summary`` defaults to the docstring's first
    line. The class is imported with the plugin module, so keep that module light.
    """
    if component not in COMPONENTS:
        raise PluginError(f"@backend: unknown component {component!r}", hint=f"components are {', '.join(COMPONENTS)}")

    def mark(cls: T) -> T:
        doc = (getattr(cls, "__doc__", None) or "").strip().splitlines()
        setattr(cls, _BACKEND_ATTR, (component, name, config, summary if summary is not None else
                                     (doc[0] if doc else ""), tuple(schemes)))
        return cls

    return mark


def declared_backends(plugin: Any) -> list[tuple[str, str, Any, Any, str, tuple[str, ...]]]:
    """``(component, name, factory, config, summary, schemes)`` of each class a plugin module declares with :func:`backend`."""
    module_name = getattr(plugin, "__name__", None)
    if module_name is None or not hasattr(plugin, "__dict__"):
        return []
    out = []
    for value in list(vars(plugin).values()):
        declared = vars(value).get(_BACKEND_ATTR) if isinstance(value, type) else None
        if declared is not None and value.__module__ == module_name:
            component, name, config, summary, schemes = declared
            out.append((component, name, value, config, summary, schemes))
    return out


# ------------------------------------------------------------- CLI commands
class CommandRegistrar:
    """Handed to ``mlops_add_cli_commands``: adds ``mlops`` commands for one plugin.

    ``add`` returns the command's :class:`argparse.ArgumentParser` for its
    arguments; ``group`` returns a registrar for subcommands (``mlops image push``).
    Handlers are ``"module:function"`` strings imported only when the command runs,
    and called as ``function(args) -> int``.
    """

    def __init__(self, subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]", plugin: str = "") -> None:
        self._sub = subparsers
        self._plugin = plugin

    def _check(self, name: str) -> None:
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise PluginError(f"plugin {self._plugin!r} added an invalid command name {name!r}",
                              hint="use letters, digits, '-' and '_'")
        if name in self._sub.choices:
            raise PluginError(f"plugin {self._plugin!r} added the command {name!r}, which exists already",
                              hint="pick another name, or uninstall the plugin that has it")

    def add(self, name: str, *, help: str, handler: "str | Callable[[argparse.Namespace], int]",
            description: str | None = None) -> argparse.ArgumentParser:
        """Add the command ``name``; returns its parser (add arguments to it)."""
        self._check(name)
        if not (callable(handler) or (isinstance(handler, str) and ":" in handler)):
            raise PluginError(f"plugin {self._plugin!r}: the handler of command {name!r} must be 'module:function'",
                              hint="for example handler='my_plugin.cli:run'")
        parser = self._sub.add_parser(name, help=help, description=description or help)
        parser.set_defaults(handler=handler)
        return parser

    def group(self, name: str, *, help: str, description: str | None = None,
              metavar: str = "COMMAND") -> "CommandRegistrar":
        """Add the command ``name`` with subcommands; returns the registrar of its subcommands."""
        self._check(name)
        parser = self._sub.add_parser(name, help=help, description=description or help)
        sub = parser.add_subparsers(dest=f"{name.replace('-', '_')}_command", metavar=metavar, required=True)
        return CommandRegistrar(sub, self._plugin)

    def extend(self, name: str) -> "CommandRegistrar":
        """The registrar of an existing command group's subcommands, to add e.g. ``mlops models import``.

        :raises PluginError: ``name`` is not a command with subcommands.
        """
        parser = self._sub.choices.get(name)
        actions = getattr(parser, "_actions", ()) if parser is not None else ()
        sub = next((a for a in actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            raise PluginError(f"plugin {self._plugin!r} extended the command {name!r}, which has no subcommands",
                              hint="extend a command group such as 'models' or 'deployments', or use group()")
        return CommandRegistrar(sub, self._plugin)

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """argparse's ``add_parser``, for plugins written when this hook received argparse's sub-parsers.

        Deprecated: use :meth:`add` or :meth:`group`.
        """
        self._check(name)
        return self._sub.add_parser(name, **kwargs)
