"""Stack configuration: one backend per component, from a file, the environment, or defaults.

Resolution order (later wins):

1. embedded defaults: storage ``fsspec``, registry ``sqlite``, builder ``oci``,
   deployer ``process``, no monitors; state under ``./.mlops``;
2. the stack file: ``$MLOPS_CONFIG``, else the first ``mlops.toml`` or
   ``pyproject.toml`` with a ``[tool.mlops]`` table found from the current
   folder upwards;
3. environment: ``MLOPS_HOME``, ``MLOPS_<COMPONENT>=backend`` and
   ``MLOPS_<COMPONENT>__<SETTING>=value`` (e.g. ``MLOPS_STORAGE__URL=s3://b/p``),
   ``MLOPS_MONITORS=log,prometheus``.

Stack file::

    home = ".mlops"              # relative to the file's folder
    [storage]
    backend = "fsspec"
    url = "s3://models/prod"
    [registry]
    backend = "sqlite"
    [[monitors]]
    backend = "prometheus"

Backends are built lazily, on first use, so ``mlops models list`` never imports
the deployer's dependencies.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Mapping

import attrs

from .errors import ConfigError, MlopsError, PluginError
from .interfaces import (ArtifactStore, Backend, BackendContext, Deployer, ImageBuilder, ModelRegistry,
                         Monitor)
from .plugins import PluginManager, get_plugin_manager

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULTS", "ComponentConfig", "StackConfig", "Stack", "find_config_file", "load_config"]

SINGLE_COMPONENTS = ("storage", "registry", "builder", "deployer")
DEFAULTS: Mapping[str, str] = {"storage": "fsspec", "registry": "sqlite", "builder": "oci", "deployer": "process"}
_ABC = {"storage": ArtifactStore, "registry": ModelRegistry, "builder": ImageBuilder, "deployer": Deployer,
        "monitor": Monitor}


@attrs.frozen
class ComponentConfig:
    backend: str
    settings: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class StackConfig:
    home: Path
    components: Mapping[str, ComponentConfig]
    monitors: tuple[ComponentConfig, ...] = ()
    source: str = "embedded defaults"
    #: Folder that relative paths in backend settings are resolved against.
    base_dir: Path = attrs.field(factory=Path.cwd)
    #: The stack file these settings came from (None: embedded defaults and environment only).
    config_file: Path | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "home": str(self.home),
            **{c: {"backend": cc.backend, **dict(cc.settings)} for c, cc in self.components.items()},
            "monitors": [{"backend": m.backend, **dict(m.settings)} for m in self.monitors],
        }


def find_config_file(start: Path | None = None) -> Path | None:
    explicit = os.environ.get("MLOPS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"MLOPS_CONFIG points to {path}, which does not exist",
                              hint="fix the path or unset MLOPS_CONFIG to use the embedded defaults")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "mlops.toml").is_file():
            return folder / "mlops.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and b"[tool.mlops" in pyproject.read_bytes():
            return pyproject
    return None


def _read_table(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read stack file {path}: {exc}", hint="fix the TOML syntax") from None
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("mlops", {})
    return data


def _component(name: str, raw: Any, where: str) -> ComponentConfig:
    if isinstance(raw, str):
        return ComponentConfig(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("backend"), str):
        raise ConfigError(f"[{name}] in {where} must be a table with a 'backend' string",
                          hint=f'for example:\n[{name}]\nbackend = "{DEFAULTS.get(name, "log")}"')
    settings = {k: v for k, v in raw.items() if k != "backend"}
    return ComponentConfig(raw["backend"], settings)


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> StackConfig:
    """Merge defaults, the stack file and the environment into a StackConfig."""
    env = os.environ if env is None else env
    path = path or find_config_file()
    data = _read_table(path) if path else {}
    base = path.parent if path else Path.cwd()
    # [server] holds the model server's own settings (auth token...), read by the server plugin.
    known = {"home", "monitors", "server", *SINGLE_COMPONENTS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {path}",
                          hint=f"valid top-level keys: {', '.join(sorted(known))}")
    where = str(path) if path else "defaults"
    components = {c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS}
    for c in SINGLE_COMPONENTS:
        if c in data:
            components[c] = _component(c, data[c], where)
    monitors_raw = data.get("monitors", [])
    if not isinstance(monitors_raw, list):
        raise ConfigError(f"'monitors' in {where} must be an array of tables", hint='use [[monitors]] with backend = "..."')
    monitors = [_component("monitors", m, where) for m in monitors_raw]

    for c in SINGLE_COMPONENTS:
        key = f"MLOPS_{c.upper()}"
        settings = dict(components[c].settings)
        backend = env.get(key, components[c].backend)
        if env.get(key) and env.get(key) != components[c].backend:
            settings = {}  # settings of another backend do not carry over
        prefix = key + "__"
        for k, v in env.items():
            if k.startswith(prefix):
                settings[k[len(prefix):].lower()] = v
        components[c] = ComponentConfig(backend, settings)
    if "MLOPS_MONITORS" in env:
        monitors = [ComponentConfig(m.strip()) for m in env["MLOPS_MONITORS"].split(",") if m.strip()]

    home = Path(env.get("MLOPS_HOME") or data.get("home") or ".mlops")
    if not home.is_absolute():
        home = (Path.cwd() if env.get("MLOPS_HOME") else base) / home
    return StackConfig(home=home, components=components, monitors=tuple(monitors),
                       source=str(path) if path else "embedded defaults", base_dir=base.resolve(),
                       config_file=path.resolve() if path else None)


class Stack:
    """The backends of one stack, built on first use and closed together."""

    def __init__(self, config: StackConfig | None = None, plugins: PluginManager | None = None) -> None:
        self.config = config or load_config()
        self.plugins = plugins or get_plugin_manager()
        self._built: dict[str, Any] = {}
        self._monitors: list[Monitor] | None = None
        self._monitor_names: list[str] = []
        self._lock = threading.RLock()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "Stack":
        return cls(load_config(Path(path) if path else None))

    @property
    def home(self) -> Path:
        return self.config.home

    @property
    def hooks(self) -> Any:
        return self.plugins.hooks

    def context(self, name: str) -> BackendContext:
        return BackendContext(home=self.config.home, hooks=self.plugins.hooks, name=name,
                              base_dir=self.config.base_dir, stack=self, config_file=self.config.config_file)

    def _build(self, component: str, cc: ComponentConfig) -> Any:
        self.config.home.mkdir(parents=True, exist_ok=True)
        backend = self.plugins.build(component, cc.backend, cc.settings, self.context(cc.backend))
        expected = _ABC[component]
        if not isinstance(backend, expected):
            raise ConfigError(
                f"{component} backend {cc.backend!r} built a {type(backend).__name__}, not a {expected.__name__}",
                hint="the plugin is broken; report it to its authors or choose another backend",
            )
        return backend

    def component(self, component: str) -> Any:
        with self._lock:
            if component not in self._built:
                self._built[component] = self._build(component, self.config.components[component])
            return self._built[component]

    @property
    def storage(self) -> ArtifactStore:
        return self.component("storage")

    @property
    def registry(self) -> ModelRegistry:
        return self.component("registry")

    @property
    def builder(self) -> ImageBuilder:
        return self.component("builder")

    @property
    def deployer(self) -> Deployer:
        return self.component("deployer")

    @property
    def events(self) -> Any:
        """The hook facade, once the stack's monitors are registered, so they hear what happens next.

        Workflows fire lifecycle events through this (registered, alias changed, deployed...);
        reading ``hooks`` instead would skip monitors configured for this stack.
        """
        self.monitors
        return self.plugins.hooks

    @property
    def monitors(self) -> list[Monitor]:
        """Configured monitors, built and registered as plugins so they receive events."""
        with self._lock:
            if self._monitors is None:
                built: list[tuple[str, Monitor]] = []
                try:
                    for i, mc in enumerate(self.config.monitors):
                        name = f"monitor:{mc.backend}:{i}"
                        try:
                            monitor = self._build("monitor", mc)
                        except MlopsError as exc:
                            raise type(exc)(f"monitor #{i + 1} ({mc.backend!r}) cannot be built: {exc.message}",
                                            hint=exc.hint) from exc
                        if self.plugins.register(monitor, name=name) is None:
                            monitor.close()
                            failure = self.plugins.failures[-1]
                            raise PluginError(f"monitor #{i + 1} ({mc.backend!r}) is not a valid plugin: {failure.error}",
                                              hint="fix or report the monitor plugin, or remove it from the stack")
                        built.append((name, monitor))
                except BaseException:
                    # All or nothing: no half-registered set of monitors keeps receiving events.
                    for name, monitor in reversed(built):
                        self.plugins.unregister(name)
                        monitor.close()
                    raise
                self._monitor_names = [name for name, _ in built]
                self._monitors = [monitor for _, monitor in built]
            return self._monitors

    def close(self) -> None:
        with self._lock:
            backends: list[Backend] = list(self._built.values()) + list(self._monitors or [])
            for name in self._monitor_names:
                if self.plugins.pm.has_plugin(name):
                    self.plugins.unregister(name)
            self._built.clear()
            self._monitors = None
            self._monitor_names = []
        for backend in backends:
            backend.close()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
