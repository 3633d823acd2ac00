"""Issue 13, contract hardening: each test reproduces a problem of the review and fails on the code before it.

Per-stack event dispatchers, refused hook wrappers, the generated typed facade,
immutable and typed entities, the CLI command registrar, and the one-decorator
backend of the plugin guide.
"""

from __future__ import annotations

import argparse
import ast
import copy
import inspect
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from mlops_core import hookimpl, hookspecs
from mlops_core.entities import (Alert, ArtifactRef, Deployment, DeploymentSpec, FrozenDict, ModelVersion,
                                 RegisteredModel)
from mlops_core.errors import InvalidInputError, PluginError
from mlops_core.events import EventDispatcher, event_hook_names
from mlops_core.interfaces import Monitor
from mlops_core.plugins import PluginManager
from mlops_core.stack import ComponentConfig, Stack, StackConfig

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------ per-stack events
class RecordingMonitor(Monitor):
    """A monitor that writes what it hears into a list named by its ``tag`` setting."""

    heard: dict[str, list[tuple[str, Any]]] = {}

    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        self.tag = config["tag"]
        self.closed = False
        RecordingMonitor.heard.setdefault(self.tag, [])

    @hookimpl
    def mlops_alias_changed(self, change: Any) -> None:
        RecordingMonitor.heard[self.tag].append(("alias", change))

    @hookimpl
    def mlops_alert(self, alert: Any) -> None:
        RecordingMonitor.heard[self.tag].append(("alert", alert))

    def close(self) -> None:
        self.closed = True


class WrappingMonitor(Monitor):
    def __init__(self, config: Any, context: Any) -> None:
        super().__init__(config, context)
        self.closed = False

    @hookimpl(wrapper=True)
    def mlops_alias_changed(self, change: Any) -> Any:
        return (yield)

    def close(self) -> None:
        self.closed = True


class MonitorPlugin:
    @hookimpl
    def mlops_register_backends(self, backends: Any) -> None:
        backends.add_monitor("recorder", RecordingMonitor)
        backends.add_monitor("wrapping", WrappingMonitor)


@pytest.fixture
def pm() -> PluginManager:
    manager = PluginManager(autoload=False)
    assert manager.register(MonitorPlugin(), name="monitor-plugin") == "monitor-plugin", manager.failures
    RecordingMonitor.heard = {}
    return manager


def stack_with(pm: PluginManager, tmp_path: Path, *monitors: ComponentConfig) -> Stack:
    config = StackConfig(home=tmp_path / "home", components={"storage": ComponentConfig("fsspec")},
                         monitors=monitors, base_dir=tmp_path)
    return Stack(config, plugins=pm)


def test_two_stacks_with_monitors_each_hear_only_their_own(pm, tmp_path):
    """Before: monitors were plugins of the shared manager, so the second stack failed to register
    'monitor:recorder:0' ("Plugin name already registered"), and every stack heard every event."""
    a = stack_with(pm, tmp_path / "a", ComponentConfig("recorder", {"tag": "a"}))
    b = stack_with(pm, tmp_path / "b", ComponentConfig("recorder", {"tag": "b"}))
    assert len(a.start_monitors()) == 1
    assert len(b.start_monitors()) == 1  # the same monitor name in a second stack is no conflict

    class Everywhere:
        def __init__(self) -> None:
            self.heard: list[Any] = []

        @hookimpl
        def mlops_alias_changed(self, change: Any) -> None:
            self.heard.append(change)

    plugin = Everywhere()
    pm.register(plugin, name="everywhere")
    a.events.alias_changed("from-a")
    b.events.alias_changed("from-b")
    assert RecordingMonitor.heard == {"a": [("alias", "from-a")], "b": [("alias", "from-b")]}
    assert plugin.heard == ["from-a", "from-b"], "installed plugins hear every stack"
    pm.hooks.alias_changed("global")  # the manager's own dispatcher reaches no stack monitor
    assert RecordingMonitor.heard == {"a": [("alias", "from-a")], "b": [("alias", "from-b")]}
    (monitor,) = a.monitors
    a.close()
    assert monitor.closed and a.monitors == []
    b.events.alias_changed("b-again")
    assert RecordingMonitor.heard["b"][-1] == ("alias", "b-again")
    b.close()


def test_the_plugin_managers_recorders_and_error_counts_see_every_stack(pm, tmp_path):
    seen: list[tuple[str, list[str]]] = []
    undo = pm.hooks.add_call_monitor(lambda hook, kwargs, names: seen.append((hook, names)))
    stack = stack_with(pm, tmp_path, ComponentConfig("recorder", {"tag": "r"}))
    stack.start_monitors()

    class Broken:
        @hookimpl
        def mlops_alias_changed(self, change: Any) -> None:
            raise RuntimeError("listener bug")

    pm.register(Broken(), name="broken")
    stack.events.alias_changed("x")
    undo()
    stack.events.alias_changed("y")
    assert seen == [("mlops_alias_changed", ["monitor:recorder:0", "broken"])]
    assert RecordingMonitor.heard["r"] == [("alias", "x"), ("alias", "y")], "a failing listener stops no other"
    assert stack.events.event_errors[("broken", "mlops_alias_changed")] == 2
    assert pm.hooks.event_errors[("broken", "mlops_alias_changed")] == 2
    stack.close()


def test_monitors_start_only_when_asked(pm, tmp_path):
    """Before: reading ``stack.events`` (a bare ``s.events`` in api.save) built and registered monitors."""
    stack = stack_with(pm, tmp_path, ComponentConfig("recorder", {"tag": "x"}))
    stack.events  # an attribute now: no side effect
    stack.hooks
    assert stack.monitors == [] and not stack.monitors_started and RecordingMonitor.heard == {}
    stack.events.alias_changed("before start")
    assert RecordingMonitor.heard == {}
    first = stack.start_monitors()
    assert stack.start_monitors() == first, "start_monitors is idempotent"
    stack.events.alias_changed("after start")
    assert RecordingMonitor.heard == {"x": [("alias", "after start")]}
    stack.close()


def test_api_workflows_start_the_stack_monitors(pm, tmp_path):
    from mlops_core import api
    from mlops_core.testing.models import DoublingModel

    stack = stack_with(pm, tmp_path, ComponentConfig("recorder", {"tag": "api"}))
    pm.register(_cloudpickle_format_plugin(), name="formats")
    try:
        info = api.save(DoublingModel(), tmp_path / "bundle", stack=stack)
        assert info.path.is_dir() and stack.monitors_started
    finally:
        stack.close()


def test_formats_are_built_from_the_stack_not_mlops_home(pm, tmp_path, monkeypatch):
    """Before: bundle formats got ``$MLOPS_HOME`` (or ./.mlops) as home and the shared manager's hooks."""
    from mlops_core import api
    from mlops_core.formats.cloudpickle_format import CloudpickleFormat
    from mlops_core.testing.models import DoublingModel

    homes: list[Any] = []

    class RecordingFormat(CloudpickleFormat):
        name = "recording"

        def __init__(self, config: Any, context: Any) -> None:
            homes.append((context.home, context.hooks, context.stack))

    class FormatPlugin:
        @hookimpl
        def mlops_register_backends(self, backends: Any) -> None:
            backends.add_format("recording", RecordingFormat)

    pm.register(FormatPlugin(), name="format-plugin")
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "somewhere-else"))
    stack = stack_with(pm, tmp_path)
    api.save(DoublingModel(), tmp_path / "bundle", format="recording", stack=stack)
    assert homes and all(h == (stack.home, stack.events, stack) for h in homes)
    stack.close()


def _cloudpickle_format_plugin() -> Any:
    import mlops_core.formats.cloudpickle_format as formats

    return formats


def test_a_monitor_with_a_hook_wrapper_is_refused_and_nothing_stays_started(pm, tmp_path):
    stack = stack_with(pm, tmp_path, ComponentConfig("recorder", {"tag": "ok"}), ComponentConfig("wrapping"))
    with pytest.raises(PluginError) as err:
        stack.start_monitors()
    assert "monitor #2 ('wrapping')" in err.value.message and "wrapper" in err.value.message
    assert stack.monitors == [] and not stack.monitors_started
    stack.events.alias_changed("after failure")
    assert RecordingMonitor.heard == {"ok": []}, "the first monitor was closed and disconnected again"


# ------------------------------------------------------------------- wrappers
@pytest.mark.parametrize("opts", [{"wrapper": True}, {"hookwrapper": True}])
def test_hook_wrappers_are_refused_at_registration_naming_the_plugin(opts):
    """Before: a wrapper registered fine and was then skipped by the event loop, silently."""

    class Wrapper:
        @hookimpl(**opts)
        def mlops_alias_changed(self, change: Any) -> Any:
            yield

    manager = PluginManager(autoload=False)
    assert manager.register(Wrapper(), name="timing-wrapper") is None
    (failure,) = manager.failures
    assert failure.name == "timing-wrapper" and failure.stage == "validate"
    assert "timing-wrapper" in failure.error and "wrapper" in failure.error
    assert not manager.hooks.has_listeners("mlops_alias_changed")


# ------------------------------------------------------------- typed facade
def test_the_facade_is_generated_from_the_hookspecs():
    """Every event hook has a method with the spec's parameters and annotations; nothing is hand-copied."""
    from mlops_core import _event_calls

    source = Path(_event_calls.__file__).read_text()
    assert source.startswith('"""Typed event methods') and "Generated by docs/gen_reference.py" in source
    for hook in event_hook_names():
        method = getattr(EventDispatcher, hook[len("mlops_"):])
        spec = inspect.signature(getattr(hookspecs, hook))
        got = inspect.signature(method)
        assert list(got.parameters)[1:] == list(spec.parameters), hook
        for name, param in spec.parameters.items():
            assert str(got.parameters[name].annotation).strip("'\"") == str(param.annotation).strip("'\""), \
                (hook, name)
        if hook != "mlops_collect_metrics":
            assert method.__qualname__.startswith("EventCalls."), f"{hook} is written by hand"
    assert "generation" not in vars(EventDispatcher) and not hasattr(PluginManager(autoload=False).hooks,
                                                                     "generation")


def test_every_hook_is_fired_somewhere():
    """Meta-test (it can fail): every event hook's facade method is called, every provider hook is asked for.

    Before, this test looked for the hook's name anywhere in the source, docstrings included.
    """
    called: set[str] = set()
    asked: set[str] = set()
    files = [p for p in (REPO / "mlops_core").rglob("*.py") if p.name not in ("_event_calls.py", "hookspecs.py")]
    files += list((REPO / "plugins").glob("*/mlops_*/*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                called.add(node.func.attr)
                if node.func.attr == "call_each" and node.args and isinstance(node.args[0], ast.Constant):
                    asked.add(node.args[0].value)
    for hook in (n for n in dir(hookspecs) if n.startswith("mlops_")):
        doc = getattr(hookspecs, hook).__doc__ or ""
        assert len(doc.strip().splitlines()) >= 3, f"{hook} is not documented"
        if hook in ("mlops_register_backends", "mlops_add_cli_commands"):
            assert hook in asked, f"{hook} is never asked for with call_each"
        else:
            assert hook[len("mlops_"):] in called, f"{hook} is never fired through its facade method"


def test_event_arguments_are_checked_before_any_listener():
    manager = PluginManager(autoload=False)
    seen: list[Any] = []

    class Alerter:
        @hookimpl
        def mlops_alert(self, alert: Any) -> None:
            seen.append(alert)

    manager.register(Alerter(), name="alerter")
    manager.hooks.alert({"severity": "critical", "title": "disk full", "model": "m", "version": 2,
                         "details": {"free": 0}})
    (alert,) = seen
    assert isinstance(alert, Alert) and alert["severity"] == "critical" and alert.get("model") == "m"
    assert dict(alert)["details"] == {"free": 0}
    with pytest.raises(InvalidInputError):
        manager.hooks.alert({"severity": "urgent", "title": "x"})
    with pytest.raises(InvalidInputError):
        manager.hooks.deployment_changed(_deployment(), "exploded")
    with pytest.raises(InvalidInputError):
        manager.hooks.drift_detected({"model": "m"})
    assert len(seen) == 1


# ------------------------------------------------------------------ entities
def _version() -> ModelVersion:
    import datetime as dt

    return ModelVersion(model="m", version=1, artifact=ArtifactRef("memory://x", "sha256:" + "0" * 64),
                        tags={"team": "a"}, created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))


def _deployment(**kw: Any) -> Deployment:
    return Deployment(**{"name": "d", "model": "m", "version": 1, "backend": "b", "state": "ready", **kw})


def test_frozen_entities_are_hashable_and_their_mappings_immutable():
    """Before: ``hash(ModelVersion)`` raised TypeError (a dict field) and ``v.tags[k] = x`` worked."""
    v = _version()
    assert hash(v) == hash(_version()) and len({v, _version()}) == 1
    with pytest.raises(TypeError):
        v.tags["team"] = "b"
    with pytest.raises(TypeError):
        v.tags.update(team="b")
    with pytest.raises(TypeError):
        del v.tags["team"]
    assert v.tags == {"team": "a"} and isinstance(v.tags, dict)
    assert json.loads(json.dumps(v.tags)) == {"team": "a"}
    assert pickle.loads(pickle.dumps(v)) == v and copy.deepcopy(v) == v
    model = RegisteredModel(name="m", tags={"a": "b"}, aliases={"prod": 1})
    with pytest.raises(TypeError):
        model.aliases["prod"] = 2  # type: ignore[index]
    d = _deployment(details={"pid": 1, "ports": [1, 2], "nested": {"a": [1]}})
    hash(d)
    assert hash(d.details) == hash(FrozenDict({"pid": 1, "ports": [1, 2], "nested": {"a": [1]}}))
    assert d.details["ports"] == [1, 2], "values compare as before (a list stays a list)"
    with pytest.raises(TypeError):
        d.details["nested"]["a"] = 2  # nested mappings are frozen too
    spec = DeploymentSpec(name="d", model="m", version=1, options={"workers": 2})
    with pytest.raises(TypeError):
        spec.options["workers"] = 3  # type: ignore[index]


def test_deployment_states_and_options_are_typed():
    with pytest.raises(InvalidInputError):
        _deployment(state="sleeping")
    assert set(Deployment.STATES) == {"starting", "ready", "failed", "stopped", "unknown"}
    assert _deployment(options={"workers": 2}).options == {"workers": 2}
    # A deployer written before ``options`` existed (details["options"]) still round-trips through rollback.
    legacy = _deployment(details={"options": {"workers": 3}})
    assert legacy.options == {"workers": 3}


# ------------------------------------------------------------------- the CLI
def _cli_plugin(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text("from mlops_core import hookimpl\n\n" + inspect.cleandoc(body) + "\n")


def test_cli_command_registrar_and_old_plugins(run_cli, tmp_path):
    _cli_plugin(tmp_path, "newcli", """
        @hookimpl
        def mlops_add_cli_commands(commands):
            hello = commands.add("hello", help="say hello", handler="newcli:hello")
            hello.add_argument("who")
            tools = commands.group("tools", help="some tools")
            tools.add("ping", help="answer pong", handler="newcli:ping")

        def hello(args):
            print("hello", args.who)
            return 0

        def ping(args):
            print("pong")
            return 0
        """)
    _cli_plugin(tmp_path, "oldcli", """
        @hookimpl
        def mlops_add_cli_commands(subparsers):
            p = subparsers.add_parser("legacy", help="written for argparse's sub-parsers")
            p.set_defaults(handler="oldcli:run")

        def run(args):
            print("legacy works")
            return 0
        """)
    _cli_plugin(tmp_path, "dupcli", """
        @hookimpl
        def mlops_add_cli_commands(commands):
            commands.add("hello", help="again", handler="dupcli:run")
        """)
    env = {"MLOPS_PLUGIN_MODULES": "newcli,oldcli,dupcli", "PYTHONPATH": str(tmp_path)}
    assert run_cli("hello", "world", env=env).stdout.strip() == "hello world"
    assert run_cli("tools", "ping", env=env).stdout.strip() == "pong"
    assert run_cli("legacy", env=env).stdout.strip() == "legacy works"
    plugins = json.loads(run_cli("plugins", "--json", env=env).stdout)
    (failure,) = [f for f in plugins["failures"] if f["name"] == "dupcli"]
    assert "dupcli" in failure["error"] and "'hello'" in failure["error"] and "exists already" in failure["error"]


def test_the_hookspec_no_longer_names_a_private_argparse_type():
    spec = inspect.signature(hookspecs.mlops_add_cli_commands)
    assert "_SubParsersAction" not in str(spec)
    from mlops_core.catalog import CommandRegistrar

    parser = argparse.ArgumentParser()
    registrar = CommandRegistrar(parser.add_subparsers(dest="command"), "p")
    with pytest.raises(PluginError, match="invalid command name"):
        registrar.add("bad name", help="x", handler="m:f")
    with pytest.raises(PluginError, match="module:function"):
        registrar.add("good", help="x", handler="not-importable")


# ------------------------------------------------------------ backend catalog
def test_backend_schemes_and_summary_are_used():
    class Plugin:
        @hookimpl
        def mlops_register_backends(self, backends: Any) -> None:
            backends.add_storage("objects", "x:Y", schemes=("s3", "gs"), summary="object stores")

    manager = PluginManager(autoload=False)
    manager.register(Plugin(), name="objects-plugin")
    assert [s.name for s in manager.catalog.for_scheme("storage", "s3")] == ["objects"]
    from mlops_core.errors import BackendNotFoundError

    with pytest.raises(BackendNotFoundError) as err:
        manager.catalog.get("storage", "s3")
    assert "'objects'" in err.value.hint


def test_package_all_lists_every_api_function():
    import mlops_core
    from mlops_core import api

    missing = sorted(set(api.__all__) - set(mlops_core.__all__))
    assert not missing, f"mlops_core.__all__ lacks {missing}"
    for name in mlops_core.__all__:
        assert getattr(mlops_core, name) is not None


def test_canonical_json_is_defined_once():
    defined = [p.relative_to(REPO) for p in [*REPO.glob("mlops_core/**/*.py"), *REPO.glob("plugins/*/mlops_*/*.py")]
               if "def canonical_json(" in p.read_text(encoding="utf-8")]
    assert defined == [Path("mlops_core/bundle.py")]


# ------------------------------------------------------------- registry template
from mlops_core.interfaces import REGISTRY_PRIMITIVES, ModelRegistry  # noqa: E402
from mlops_core.testing.reference_registry import InMemoryRegistry  # noqa: E402
from mlops_core.testing.suites import RegistrySuite  # noqa: E402
from mlops_core.testing.suites.registry import artifact  # noqa: E402


class CountingRegistry(InMemoryRegistry):
    """Records what reaches the primitives."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def _create_version(self, *args: Any) -> Any:
        self.seen.append(("create", args))
        return super()._create_version(*args)

    def _search_versions(self, *args: Any) -> Any:
        self.seen.append(("search", args))
        return super()._search_versions(*args)


def test_the_registry_validates_once_and_primitives_get_clean_input():
    from mlops_core.entities import Lineage

    registry = CountingRegistry()
    for bad in (dict(model="bad name!"), dict(model="m", tags={"bad key!": "x"}), dict(model="m", description=3),
                dict(model="m", lineage="run-1")):
        with pytest.raises(InvalidInputError):
            registry.create_version(bad.pop("model"), artifact(1), **bad)
    with pytest.raises(InvalidInputError):
        registry.create_version("m", "not an artifact")  # type: ignore[arg-type]
    assert registry.seen == [], "invalid input never reaches a primitive"
    registry.create_version("m", artifact(1))
    assert registry.seen == [("create", ("m", artifact(1), "", {}, Lineage()))]
    for i in range(2, 5):
        registry.create_version("m", artifact(i))
    registry.seen.clear()
    page = registry.search_versions("m", page_size=2)
    assert [v.version for v in page.items] == [4, 3] and page.next_token
    assert registry.seen == [("search", ("m", {}, 3, None))], "the core asks for one more than the page"
    registry.search_versions("m", page_size=2, page_token=page.next_token)
    assert registry.seen[-1] == ("search", ("m", {}, 3, ("m", 3)))


def _delegate(name: str) -> Any:
    return lambda self, *args, **kwargs: getattr(self.inner, name)(*args, **kwargs)


class LegacyRegistry(ModelRegistry):
    """A registry written before the template layer: it overrides every public method."""

    def __init__(self) -> None:
        self.inner = InMemoryRegistry()

    for _public in REGISTRY_PRIMITIVES:
        locals()[_public] = _delegate(_public)
    del _public


def test_a_registry_overriding_the_public_methods_keeps_working():
    registry = LegacyRegistry()  # not abstract: the template notices the overrides
    registry.create_version("m", artifact(1))
    assert registry.resolve("models:/m").version == 1  # derived methods go through its public ones
    with pytest.raises(NotImplementedError, match="LegacyRegistry overrides create_version"):
        registry._create_version("m", artifact(1), "", {}, None)

    class Incomplete(ModelRegistry):
        def create_version(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # neither the public method nor the primitive: still abstract


class TestLegacyRegistryPassesTheKit(RegistrySuite):
    state_machine = False  # the delegate is InMemoryRegistry itself: nothing to compare

    @pytest.fixture
    def backend(self):
        return LegacyRegistry()
