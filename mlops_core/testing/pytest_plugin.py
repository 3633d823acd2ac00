"""pytest fixtures for testing mlops plugins and code that uses mlops-core.

Opt in with the ``pytest11`` entry point (``mlops = mlops_core.testing.pytest_plugin``,
active wherever mlops-core is installed) or per run with
``pytest -p mlops_core.testing.pytest_plugin``, or in a conftest:
``pytest_plugins = ["mlops_core.testing.pytest_plugin"]``.

Fixtures:

``mlops_plugin_manager``
    a fresh :class:`~mlops_core.plugins.PluginManager` with no autoloaded
    plugins, installed as the process-wide manager for the test and replaced by
    the previous one afterwards.
``mlops_register_plugin``
    ``mlops_register_plugin(obj, name=None) -> name``: register a plugin object
    or module for this test only (in the process-wide manager); it fails loudly
    if the plugin does not validate.
``mlops_hook_recorder``
    a :class:`HookRecorder` of every hook call made during the test: events
    fired through the core's hook facade, direct ``pm.hook.<name>(...)`` calls,
    and the provider hook run at registration.
``mlops_stack``
    a :class:`~mlops_core.stack.Stack` of the embedded backends (those that are
    installed) living in ``tmp_path``, set as the stack of the Python API for the test.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs
import pytest

pytest.register_assert_rewrite(
    *(f"mlops_core.testing.suites.{m}" for m in ("_base", "storage", "registry", "builder", "deployer", "monitor",
                                                  "formats")),
    "mlops_core.testing.stateful",
)

__all__ = ["HookCall", "HookRecorder"]

#: Environment switches that would leak the developer's setup into a test.
_ISOLATED_ENV = ("MLOPS_PLUGIN_MODULES", "MLOPS_PLUGINS", "MLOPS_BLOCK_PLUGINS", "MLOPS_DISABLE_PLUGIN_AUTOLOAD",
                 "MLOPS_TRACE_HOOKS")


@attrs.frozen
class HookCall:
    """One hook implementation called (``plugin`` is None when the hook fired with no listener)."""

    name: str
    kwargs: dict[str, Any]
    plugin: str | None

    def __getattr__(self, item: str) -> Any:  # call.event, call.version... like pytester's ParsedCall
        try:
            return self.kwargs[item]
        except KeyError:
            raise AttributeError(item) from None


class HookRecorder:
    """Every hook call of the test, in order, one entry per implementation called."""

    def __init__(self) -> None:
        self.calls: list[HookCall] = []
        self._lock = threading.Lock()

    def record(self, name: str, kwargs: dict[str, Any], plugins: list[str | None]) -> None:
        with self._lock:
            for plugin in plugins or [None]:
                self.calls.append(HookCall(name, dict(kwargs), plugin))

    def names(self) -> list[str]:
        """Hook names in call order, one per call (not per implementation)."""
        out: list[str] = []
        for call in self.calls:
            if not out or out[-1] != call.name or call.plugin is None:
                out.append(call.name)
        return out

    def getcalls(self, name: str) -> list[HookCall]:
        return [c for c in self.calls if c.name == name]

    def getcall(self, name: str) -> HookCall:
        """The only call of ``name``; fails if there were none or several."""
        calls = self.getcalls(name)
        assert len(calls) == 1, f"expected one call of {name}, got {len(calls)}: {calls}"
        return calls[0]

    def assert_called(self, name: str, **kwargs: Any) -> HookCall:
        """The first call of ``name`` whose kwargs include ``kwargs``."""
        for call in self.getcalls(name):
            if all(call.kwargs.get(k) == v for k, v in kwargs.items()):
                return call
        raise AssertionError(f"no call of {name} with {kwargs}; calls: {[c.name for c in self.calls]}")

    def assert_not_called(self, name: str) -> None:
        assert not self.getcalls(name), f"{name} was called: {self.getcalls(name)}"

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


@pytest.fixture
def mlops_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from mlops_core import plugins

    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    manager = plugins.PluginManager(autoload=False)
    previous = plugins.reset_plugin_manager(manager)
    try:
        yield manager
    finally:
        plugins.reset_plugin_manager(previous)


@pytest.fixture
def mlops_register_plugin() -> Iterator[Callable[..., str]]:
    from mlops_core.plugins import get_plugin_manager

    registered: list[tuple[Any, str]] = []

    def register(plugin: Any, name: str | None = None) -> str:
        manager = get_plugin_manager()
        failures_before = len(manager.failures)
        result = manager.register(plugin, name=name)
        new = manager.failures[failures_before:]
        if result is None or new:
            raise AssertionError("the plugin failed to register: " + "; ".join(f.describe() for f in new))
        registered.append((manager, result))
        return result

    yield register
    for manager, name in reversed(registered):
        if manager.pm.has_plugin(name):
            manager.unregister(name)


@pytest.fixture
def mlops_hook_recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[HookRecorder]:
    from mlops_core import plugins

    recorder = HookRecorder()

    # Provider hooks run once per plugin at registration, outside pluggy's call path.
    original_register = plugins.PluginManager.register

    def register(self: Any, plugin: Any, name: str | None = None, **kw: Any) -> str | None:
        result = original_register(self, plugin, name, **kw)
        if result is not None:
            impls = [i for i in self.pm.hook.mlops_register_backends.get_hookimpls() if i.plugin_name == result]
            if impls:
                backends = tuple(s for s in self.catalog.specs() if s.plugin == result)
                recorder.record("mlops_register_backends", {"backends": backends}, [result])
        return result

    monkeypatch.setattr(plugins.PluginManager, "register", register)

    # Direct pm.hook.<name>(...) calls (the CLI's mlops_add_cli_commands, for one),
    # on the current manager and on every manager created during the test.
    undo: list[Callable[[], None]] = []

    def monitor(manager: Any) -> None:
        def before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
            recorder.record(hook_name, kwargs, [i.plugin_name for i in reversed(hook_impls)])

        undo.append(manager.pm.add_hookcall_monitoring(before, lambda *a: None))
        # Events go through the facade, which calls each implementation on its own.
        undo.append(manager.hooks.add_call_monitor(recorder.record))

    original_init = plugins.PluginManager.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        monitor(self)

    monkeypatch.setattr(plugins.PluginManager, "__init__", init)
    current = plugins.reset_plugin_manager(None)
    plugins.reset_plugin_manager(current)
    if current is not None:
        monitor(current)
    yield recorder
    for fn in undo:
        fn()


@pytest.fixture
def mlops_stack(tmp_path: Path) -> Iterator[Any]:
    from mlops_core import api
    from mlops_core.stack import DEFAULTS, SINGLE_COMPONENTS, ComponentConfig, Stack, StackConfig

    home = tmp_path / ".mlops"
    # Built directly, not from load_config: no stack file or MLOPS_* variable of the developer leaks in.
    config = StackConfig(home=home, components={c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS},
                         source=f"mlops_stack fixture ({home})")
    stack = Stack(config)
    try:
        with api.use_stack(stack):
            yield stack
    finally:
        stack.close()
