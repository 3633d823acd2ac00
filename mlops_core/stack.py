"""Stack configuration: one backend per component, from a file, the environment, or defaults.

Resolution order (later wins):

1. embedded defaults: storage ``fsspec``, registry ``sqlite``, builder ``oci``,
   deployer ``process``, batch engine ``local``, no monitors; state under ``./.mlops``;
2. the stack file: ``$MLOPS_CONFIG``, else the first ``mlops.toml`` or
   ``pyproject.toml`` with a ``[tool.mlops]`` table found from the current
   folder upwards, stopping at a repository root (``.git``) or the home folder;
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

Named stacks (profiles) in one file: top-level tables are shared by every profile, and
``[stacks.NAME]`` tables override them component by component::

    default_stack = "local"
    [stacks.local]               # the embedded defaults
    [stacks.prod]
    home = "/var/lib/mlops"
    [stacks.prod.storage]
    backend = "fsspec"
    url = "s3://models/prod"

The active profile is, first found: ``mlops --stack NAME``, ``$MLOPS_STACK``, the name
``mlops stack use NAME`` wrote to ``.mlops-stack`` beside the stack file, the file's
``default_stack``, else none (top-level tables only). A profile without ``home`` (here or at
the top level) keeps its state in ``.mlops/NAME``, so two profiles never share a registry
by accident.

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
import pluggy

from . import hookspecs
from .errors import ConfigError, MlopsError, PluginError
from .events import EventDispatcher, check_plugin
from .interfaces import (ArtifactStore, Backend, BackendContext, BatchEngine, Deployer, ImageBuilder,
                         ModelRegistry, Monitor)
from .plugins import PluginManager, get_plugin_manager

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULTS", "ComponentConfig", "StackConfig", "Stack", "find_config_file", "load_config", "search_folders",
           "list_profiles", "use_profile", "ACTIVE_STACK_FILE"]

#: Written by ``mlops stack use NAME`` beside the stack file: the profile chosen for that project.
ACTIVE_STACK_FILE = ".mlops-stack"

SINGLE_COMPONENTS = ("storage", "registry", "builder", "deployer", "batch")
DEFAULTS: Mapping[str, str] = {"storage": "fsspec", "registry": "sqlite", "builder": "oci", "deployer": "process",
                               "batch": "local"}
_ABC = {"storage": ArtifactStore, "registry": ModelRegistry, "builder": ImageBuilder, "deployer": Deployer,
        "monitor": Monitor, "batch": BatchEngine}


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
    #: The named stack (``[stacks.NAME]``) these settings came from; None without profiles.
    profile: str | None = None
    #: ``[security]``: ``require_signature`` (bool), ``trusted_keys`` (paths of Ed25519 public keys),
    #: ``signing_key`` (path of the private key ``register`` signs with). See docs/security.md.
    security: Mapping[str, Any] = attrs.field(factory=dict)
    #: ``[gc]``: ``older_than`` (seconds, or "1h"): temporaries younger than this are never collected.
    gc: Mapping[str, Any] = attrs.field(factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "profile": self.profile,
            "config_file": str(self.config_file) if self.config_file else None,
            "home": str(self.home),
            **{c: {"backend": cc.backend, **dict(cc.settings)} for c, cc in self.components.items()},
            "monitors": [{"backend": m.backend, **dict(m.settings)} for m in self.monitors],
            **({"security": dict(self.security)} if self.security else {}),
            **({"gc": dict(self.gc)} if self.gc else {}),
        }


def find_config_file(start: Path | None = None) -> Path | None:
    explicit = os.environ.get("MLOPS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"MLOPS_CONFIG points to {path}, which does not exist",
                              hint="fix the path or unset MLOPS_CONFIG to use the embedded defaults")
        return path
    for folder in search_folders(start):
        if (folder / "mlops.toml").is_file():
            return folder / "mlops.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and b"[tool.mlops" in pyproject.read_bytes():
            return pyproject
    return None


def search_folders(start: Path | None = None) -> list[Path]:
    """The folders searched for a stack file: from ``start`` (the current folder) upwards,
    stopping at the first repository root (a folder with ``.git``) or the home folder.

    A stack file can name programs to run (``[deployer] python = ...``), so one in a
    parent of the project (a shared ``/tmp``, another user's folder) must not be picked up.
    """
    here = (start or Path.cwd()).resolve()
    try:
        home = Path.home().resolve()
    except (RuntimeError, KeyError):  # no home folder known
        home = None
    folders = []
    for folder in (here, *here.parents):
        folders.append(folder)
        if (folder / ".git").exists() or folder == home:
            break
    return folders


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


def _profiles(data: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    raw = data.get("stacks", {})
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError(f"'stacks' in {where} must hold tables, one per named stack",
                          hint='for example:\n[stacks.prod.storage]\nbackend = "fsspec"\nurl = "s3://models/prod"')
    return dict(raw)


def _active_profile(data: Mapping[str, Any], path: Path | None, env: Mapping[str, str],
                    explicit: str | None) -> tuple[str | None, str]:
    """(profile name or None, what chose it) by the order in this module's docstring."""
    if explicit:
        return explicit, "--stack"
    if env.get("MLOPS_STACK"):
        return env["MLOPS_STACK"], "MLOPS_STACK"
    if path is not None:
        marker = path.parent / ACTIVE_STACK_FILE
        if marker.is_file():
            name = marker.read_text(encoding="utf-8").strip()
            if name:
                return name, str(marker)
    default = data.get("default_stack")
    if default is not None and not isinstance(default, str):
        raise ConfigError("default_stack must be the name of a [stacks.NAME] table", hint='default_stack = "local"')
    return default, "default_stack"


def _select_profile(data: dict[str, Any], path: Path | None, env: Mapping[str, str],
                    explicit: str | None) -> tuple[dict[str, Any], str | None]:
    where = str(path) if path else "defaults"
    profiles = _profiles(data, where)
    name, chooser = _active_profile(data, path, env, explicit)
    shared = {k: v for k, v in data.items() if k not in ("stacks", "default_stack")}
    if name is None:
        return shared, None
    if name not in profiles:
        available = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"stack {name!r} (from {chooser}) is not defined in {where}",
                          hint=f"defined stacks: {available}; add [stacks.{name}] or pick another with --stack")
    merged = {**shared, **profiles[name]}
    # Profiles must not share state by accident: each gets its own home unless one is set.
    merged.setdefault("home", f".mlops/{name}")
    return merged, name


def list_profiles(path: Path | None = None) -> list[str]:
    """Names of the ``[stacks.NAME]`` tables of the stack file (empty without one)."""
    path = path or find_config_file()
    if path is None:
        return []
    return sorted(_profiles(_read_table(path), str(path)))


def use_profile(name: str, path: Path | None = None) -> Path:
    """Make ``name`` the project's active stack (``mlops stack use``); returns the file written."""
    path = path or find_config_file()
    if path is None:
        raise ConfigError("no stack file here to choose a stack from",
                          hint="create mlops.toml with [stacks.NAME] tables first")
    names = list_profiles(path)
    if name not in names:
        raise ConfigError(f"stack {name!r} is not defined in {path}",
                          hint=f"defined stacks: {', '.join(names) or 'none'}")
    marker = path.parent / ACTIVE_STACK_FILE
    tmp = marker.with_name(f"{marker.name}.tmp-{os.getpid()}")
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, marker)  # atomic: a reader sees the old name or the new one
    return marker


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                profile: str | None = None) -> StackConfig:
    """Merge defaults, the stack file (its active profile) and the environment into a StackConfig."""
    env = os.environ if env is None else env
    path = path or find_config_file()
    data = _read_table(path) if path else {}
    data, profile = _select_profile(data, path, env, profile)
    base = path.parent if path else Path.cwd()
    # [server] holds the model server's own settings (auth token...), read by the server plugin.
    known = {"home", "monitors", "security", "gc", "server", *SINGLE_COMPONENTS}
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

    tables: dict[str, dict[str, Any]] = {}
    for table in ("security", "gc"):
        raw = data.get(table, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"'{table}' in {where} must be a table", hint=f"use [{table}] with key = value lines")
        tables[table] = dict(raw)
    unknown_security = sorted(set(tables["security"]) - {"require_signature", "trusted_keys", "signing_key"})
    if unknown_security:
        raise ConfigError(f"unknown key(s) {', '.join(unknown_security)} in [security] of {where}",
                          hint="valid keys: require_signature, trusted_keys, signing_key")
    for key in ("trusted_keys", "signing_key"):  # paths follow the stack file, like backend settings
        value = tables["security"].get(key)
        if isinstance(value, str):
            value = [value] if key == "trusted_keys" else value
        if key == "trusted_keys" and value is not None:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[security] trusted_keys in {where} must be a list of paths")
            tables["security"][key] = [str(base / Path(v).expanduser()) for v in value]
        elif key == "signing_key" and value is not None:
            tables["security"][key] = str(base / Path(value).expanduser())
    if "MLOPS_REQUIRE_SIGNATURE" in env:
        tables["security"]["require_signature"] = env["MLOPS_REQUIRE_SIGNATURE"].lower() in ("1", "true", "yes")
    if "MLOPS_GC_OLDER_THAN" in env:
        tables["gc"]["older_than"] = env["MLOPS_GC_OLDER_THAN"]
    if not isinstance(tables["security"].get("require_signature", False), bool):
        raise ConfigError(f"[security] require_signature in {where} must be true or false")

    home = Path(env.get("MLOPS_HOME") or data.get("home") or ".mlops")
    if not home.is_absolute():
        home = (Path.cwd() if env.get("MLOPS_HOME") else base) / home
    return StackConfig(home=home, components=components, monitors=tuple(monitors),
                       source=str(path) if path else "embedded defaults", base_dir=base.resolve(),
                       config_file=path.resolve() if path else None, profile=profile, security=tables["security"],
                       gc=tables["gc"])


class Stack:
    """The backends of one stack, built on first use and closed together.

    Each stack has its own event dispatcher, ``events``: it delivers to the
    stack's monitors, then to the installed plugins, so two stacks in one
    process never hear each other's monitors. Monitors run once
    :meth:`start_monitors` was called (the API's workflows and the server call
    it); building a stack or reading an attribute never starts them.
    """

    def __init__(self, config: StackConfig | None = None, plugins: PluginManager | None = None) -> None:
        self.config = config or load_config()
        self.plugins = plugins or get_plugin_manager()
        self._built: dict[str, Any] = {}
        self._monitors: list[Monitor] | None = None
        self._lock = threading.RLock()
        # The stack's own plugin space: its monitors register here, never in the shared manager.
        self._local = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._local.add_hookspecs(hookspecs)
        #: The stack's event dispatcher: its monitors, then every installed plugin.
        self.events = EventDispatcher([self._local, self.plugins.pm], parent=self.plugins.hooks,
                                      trace=self.plugins.hooks.trace)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, profile: str | None = None) -> "Stack":
        """The stack of a file (default: the one found from here) and profile (default: the active one)."""
        return cls(load_config(Path(path) if path else None, profile=profile))

    @property
    def home(self) -> Path:
        return self.config.home

    def ensure_home(self) -> Path:
        """Create the stack's home folder if needed, private to its owner (mode 0700).

        It holds the registry, saved bundles, the cache of bundles that get
        unpickled and temporaries: nobody else should be able to write there.
        """
        if not self.config.home.is_dir():
            self.config.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.config.home

    @property
    def hooks(self) -> EventDispatcher:
        """The stack's event dispatcher (the same object as ``events``)."""
        return self.events

    def context(self, name: str) -> BackendContext:
        return BackendContext(home=self.config.home, hooks=self.events, name=name,
                              base_dir=self.config.base_dir, stack=self, config_file=self.config.config_file)

    def _build(self, component: str, cc: ComponentConfig) -> Any:
        self.ensure_home()
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
    def batch_engine(self) -> BatchEngine:
        """The stack's batch scoring engine (``[batch] backend``, default ``local``)."""
        return self.component("batch")

    @property
    def monitors(self) -> list[Monitor]:
        """The started monitors (empty until :meth:`start_monitors`); reading this starts nothing."""
        return list(self._monitors or [])

    @property
    def monitors_started(self) -> bool:
        return self._monitors is not None

    def start_monitors(self) -> list[Monitor]:
        """Build the configured monitors and connect them to ``events``; idempotent.

        All or nothing: when one monitor cannot be built or is not a valid plugin,
        the ones built so far are closed and the error names the monitor.
        """
        with self._lock:
            if self._monitors is not None:
                return list(self._monitors)
            built: list[tuple[str, Monitor]] = []
            try:
                for i, mc in enumerate(self.config.monitors):
                    name = f"monitor:{mc.backend}:{i}"
                    try:
                        monitor = self._build("monitor", mc)
                    except MlopsError as exc:
                        raise type(exc)(f"monitor #{i + 1} ({mc.backend!r}) cannot be built: {exc.message}",
                                        hint=exc.hint) from exc
                    built.append((name, monitor))
                    try:
                        check_plugin(self._local, monitor, name)
                        self._local.register(monitor, name=name)
                    except Exception as exc:
                        raise PluginError(f"monitor #{i + 1} ({mc.backend!r}) is not a valid plugin: "
                                          f"{getattr(exc, 'message', exc)}",
                                          hint="fix or report the monitor plugin, or remove it from the stack") from exc
            except BaseException:
                for name, monitor in reversed(built):
                    if self._local.has_plugin(name):
                        self._local.unregister(name=name)
                    monitor.close()
                raise
            self._monitors = [monitor for _, monitor in built]
            return list(self._monitors)

    def close(self) -> None:
        with self._lock:
            backends: list[Backend] = list(self._built.values()) + list(self._monitors or [])
            for name, _plugin in list(self._local.list_name_plugin()):
                self._local.unregister(name=name)
            self._built.clear()
            self._monitors = None
        for backend in backends:
            backend.close()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
