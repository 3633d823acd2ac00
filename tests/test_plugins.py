"""Plugin discovery, isolation of broken plugins, conflicts, env switches and event isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from mlops_core import hookimpl
from mlops_core.errors import BackendNotFoundError, PluginError
from mlops_core.plugins import PluginManager

# ---------------------------------------------------------------- third-party distributions
GOOD = '''
from mlops_core import hookimpl

@hookimpl
def mlops_register_backends(backends):
    backends.add_storage("hello", "mlops_hello.store:make", summary="a third-party store")

@hookimpl
def mlops_version_registered(version):
    pass
'''
GOOD_STORE = '''
import io
from mlops_core.interfaces import ArtifactStore
from mlops_core.errors import NotFoundError

class HelloStore(ArtifactStore):
    uri = "hello://"
    def __init__(self):
        self.blobs = {}
    def _write(self, key, source):
        self.blobs[key] = source.read()
    def _open(self, key):
        if key not in self.blobs:
            raise NotFoundError(key)
        return io.BytesIO(self.blobs[key])
    def _exists(self, key):
        return key in self.blobs
    def _list(self, prefix):
        return [k for k in self.blobs if k.startswith(prefix)]
    def _delete(self, key):
        self.blobs.pop(key, None)

IMPORTED = True

def make(config, context):
    return HelloStore()
'''
BROKEN_IMPORT = "import a_module_that_does_not_exist_anywhere\n"
RAISING = '''
from mlops_core import hookimpl

@hookimpl
def mlops_register_backends(backends):
    raise RuntimeError("boom while registering")
'''


def _dist(root: Path, dist: str, package: str, files: dict[str, str]) -> Path:
    src = root / dist
    pkg = src / package
    pkg.mkdir(parents=True)
    for name, text in files.items():
        (pkg / name).write_text(textwrap.dedent(text))
    (src / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n')
    (src / "setup.cfg").write_text(textwrap.dedent(f"""
        [metadata]
        name = {dist}
        version = 1.2.3
        [options]
        packages = {package}
        [options.entry_points]
        mlops_core.plugins =
            {dist.removeprefix("mlops-")} = {package}.plugin
    """))
    return src


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> Path:
    """Three separately built and installed distributions: one good, one that fails to import, one that raises."""
    root = tmp_path_factory.mktemp("dists")
    sources = [
        _dist(root, "mlops-hello", "mlops_hello", {"__init__.py": "", "plugin.py": GOOD, "store.py": GOOD_STORE}),
        _dist(root, "mlops-broken", "mlops_broken", {"__init__.py": "", "plugin.py": BROKEN_IMPORT}),
        _dist(root, "mlops-raiser", "mlops_raiser", {"__init__.py": "", "plugin.py": RAISING}),
    ]
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), *map(str, sources)], check=True, capture_output=True)
    return target


def test_builtin_plugins_listed_with_hooks_and_backends(run_cli):
    result = run_cli("plugins", "--json")
    data = json.loads(result.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["cloudpickle"]["distribution"] == "mlops-core"
    assert "format:cloudpickle" in by_name["cloudpickle"]["backends"]
    assert "mlops_register_backends" in by_name["cloudpickle"]["hooks"]
    assert "storage:fsspec" in by_name["fsspec"]["backends"]
    assert "registry:sqlite" in by_name["sqlite"]["backends"]
    assert result.returncode == 0, result.stderr
    assert data["failures"] == []


def test_third_party_discovered_and_broken_ones_reported(run_cli, third_party, tmp_path):
    env = {"PYTHONPATH": str(third_party)}
    result = run_cli("plugins", "--json", env=env)
    data = json.loads(result.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["hello"]["distribution"] == "mlops-hello"
    assert by_name["hello"]["version"] == "1.2.3"
    assert by_name["hello"]["backends"] == ["storage:hello"]
    assert set(by_name["hello"]["hooks"]) == {"mlops_register_backends", "mlops_version_registered"}
    failures = {f["name"]: f for f in data["failures"]}
    assert failures["broken"]["distribution"] == "mlops-broken"
    assert failures["broken"]["stage"] == "import"
    assert "a_module_that_does_not_exist_anywhere" in failures["broken"]["error"]
    assert failures["raiser"]["distribution"] == "mlops-raiser"
    assert "boom while registering" in failures["raiser"]["error"]
    assert result.returncode == 4
    # The other plugins keep working: the table form names the broken ones on stderr.
    table = run_cli("plugins", env=env)
    assert "hello" in table.stdout and "BROKEN plugin 'broken'" in table.stderr
    # doctor reports them too, and the third-party store is usable as the stack's storage.
    doctor = run_cli("doctor", "--json", "storage", "registry", env={**env, "MLOPS_STORAGE": "hello"})
    checks = {c["check"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert not checks["plugin broken"]["ok"] and "a_module_that_does_not_exist_anywhere" in checks["plugin broken"]["detail"]
    assert not checks["plugin raiser"]["ok"]
    assert checks["storage (hello)"]["ok"]
    assert checks["registry (sqlite)"]["ok"]
    assert doctor.returncode == 4


def test_backends_import_lazily(third_party, monkeypatch):
    monkeypatch.syspath_prepend(str(third_party))
    pm = PluginManager()
    assert "storage:hello" in {b for p in pm.plugins() for b in p.backends}
    assert "mlops_hello.store" not in sys.modules  # discovery imported only the plugin module
    from mlops_core.stack import Stack, load_config

    monkeypatch.setenv("MLOPS_STORAGE", "hello")
    stack = Stack(load_config(), pm)
    stack.storage.write_bytes("a/b", b"x")
    assert "mlops_hello.store" in sys.modules
    assert stack.storage.read_bytes("a/b") == b"x"


def test_allow_list_block_and_disable(run_cli, third_party):
    env = {"PYTHONPATH": str(third_party)}
    only = json.loads(run_cli("plugins", "--json", env={**env, "MLOPS_PLUGINS": "hello,cloudpickle"}).stdout)
    assert {p["name"] for p in only["plugins"]} == {"hello", "cloudpickle"} and only["failures"] == []
    blocked = json.loads(run_cli("plugins", "--json", env={**env, "MLOPS_BLOCK_PLUGINS": "broken,mlops-raiser"}).stdout)
    assert "hello" in {p["name"] for p in blocked["plugins"]} and blocked["failures"] == []
    none = run_cli("plugins", "--json", env={**env, "MLOPS_DISABLE_PLUGIN_AUTOLOAD": "1",
                                             "MLOPS_PLUGIN_MODULES": "mlops_hello.plugin"})
    data = json.loads(none.stdout)
    assert [p["name"] for p in data["plugins"]] == ["mlops_hello.plugin"] and none.returncode == 0


def test_trace_prints_hook_calls(run_cli, third_party, tmp_path):
    (tmp_path / "model.py").write_text("class M:\n    def predict(self, x):\n        return x\nmodel = M()\n")
    result = run_cli("models", "save", "model:model", "--name", "traced",
                     env={"PYTHONPATH": str(third_party), "MLOPS_TRACE_HOOKS": "1", "MLOPS_BLOCK_PLUGINS": "broken,raiser"})
    assert result.returncode == 0, result.stderr
    assert "[mlops trace] mlops_version_registered -> hello" in result.stderr


# ------------------------------------------------------------------ in-process checks
def _plugin(name: str, **attrs) -> types.SimpleNamespace:
    return types.SimpleNamespace(__name__=name, **attrs)


def test_misspelled_hook_fails_loudly_with_suggestion():
    class Typo:
        @hookimpl
        def mlops_version_registerd(self, version):  # missing "e"
            pass

    pm = PluginManager(autoload=False)
    assert pm.register(Typo(), name="typo") is None
    (failure,) = pm.failures
    assert failure.name == "typo" and failure.stage == "validate"
    assert "mlops_version_registerd" in failure.error and "mlops_version_registered" in failure.error
    assert not pm.pm.has_plugin("typo")


def test_wrong_hook_arguments_are_reported():
    class BadArgs:
        @hookimpl
        def mlops_version_registered(self, version, extra):
            pass

    pm = PluginManager(autoload=False)
    assert pm.register(BadArgs(), name="badargs") is None
    assert "extra" in pm.failures[0].error


def test_duplicate_backend_names_both_plugins():
    def provider(name):
        class P:
            @hookimpl
            def mlops_register_backends(self, backends):
                backends.add_registry("same", lambda c, ctx: None)
        return P()

    pm = PluginManager(autoload=False)
    pm.register(provider("a"), name="first-plugin")
    pm.register(provider("b"), name="second-plugin")
    with pytest.raises(PluginError) as err:
        pm.catalog.get("registry", "same")
    assert "first-plugin" in str(err.value) and "second-plugin" in str(err.value)
    (conflict,) = pm.conflict_failures()
    assert "first-plugin" in conflict.error and "second-plugin" in conflict.error


def test_unknown_backend_lists_installed_and_names_package():
    pm = PluginManager()
    with pytest.raises(BackendNotFoundError) as err:
        pm.catalog.get("registry", "postgres-nope")
    assert "sqlite" in err.value.hint
    with pytest.raises(BackendNotFoundError) as err:
        PluginManager(autoload=False).catalog.get("deployer", "process")
    assert "mlops-process-deployer" in err.value.hint


def test_raising_event_hook_is_isolated_and_counted():
    seen = []

    class Raiser:
        @hookimpl
        def mlops_alias_changed(self, change):
            raise RuntimeError("monitor bug")

    class Listener:
        @hookimpl
        def mlops_alias_changed(self, change):
            seen.append(change)

    pm = PluginManager(autoload=False)
    pm.register(Raiser(), name="raiser")
    pm.register(Listener(), name="listener")
    pm.hooks.alias_changed("c1")
    pm.hooks.alias_changed("c2")
    assert seen == ["c1", "c2"]
    assert pm.hooks.event_errors[("raiser", "mlops_alias_changed")] == 2
    assert not pm.hooks.has_listeners("mlops_predictions_served")


def test_collect_metrics_concatenates_fragments():
    class A:
        @hookimpl
        def mlops_collect_metrics(self):
            return "a_total 1"

    class B:
        @hookimpl
        def mlops_collect_metrics(self):
            return None

    pm = PluginManager(autoload=False)
    pm.register(A(), name="a")
    pm.register(B(), name="b")
    assert pm.hooks.collect_metrics() == "a_total 1\n"


# The meta-test of documented and fired hooks is tests/test_contract.py::test_every_hook_is_fired_somewhere
# (the one here looked for the hook's name anywhere in the source, docstrings included: it could not fail).


def test_reentrant_manager_use_is_a_clear_error(monkeypatch):
    """A plugin that asks for the manager while plugins load gets an error, not a deadlock."""
    from mlops_core import plugins

    class Greedy:
        @hookimpl
        def mlops_register_backends(self, backends):
            plugins.get_plugin_manager()

    monkeypatch.setenv("MLOPS_DISABLE_PLUGIN_AUTOLOAD", "1")
    real_init = plugins.PluginManager.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.register(Greedy(), name="greedy")

    monkeypatch.setattr(plugins.PluginManager, "__init__", init)
    plugins.reset_plugin_manager(None)
    pm = plugins.get_plugin_manager()
    (failure,) = pm.failures
    assert failure.name == "greedy" and "while plugins are being loaded" in failure.error


def test_listeners_are_seen_as_plugins_come_and_go():
    pm = PluginManager(autoload=False)

    class Listener:
        @hookimpl
        def mlops_predictions_served(self, event):
            pass

    pm.register(Listener(), name="l")
    assert pm.hooks.has_listeners("mlops_predictions_served")
    pm.unregister("l")
    assert not pm.hooks.has_listeners("mlops_predictions_served")


def test_a_plugin_whose_cli_hook_raises_is_reported_and_other_commands_work(run_cli, tmp_path):
    (tmp_path / "badcli.py").write_text(
        "from mlops_core import hookimpl\n\n@hookimpl\ndef mlops_add_cli_commands(subparsers):\n"
        "    raise RuntimeError('cannot add my command')\n")
    env = {"MLOPS_PLUGIN_MODULES": "badcli", "PYTHONPATH": str(tmp_path)}
    result = run_cli("plugins", "--json", env=env)
    failures = {f["name"]: f for f in json.loads(result.stdout)["failures"]}
    assert failures["badcli"]["stage"] == "mlops_add_cli_commands"
    assert "cannot add my command" in failures["badcli"]["error"]
    assert run_cli("models", "list", env=env).returncode == 0


def test_prediction_batches_reach_batch_listeners_whole_and_others_call_by_call() -> None:
    """(#12) ``mlops_predictions_batch``: one call per batch for plugins that take batches, per call for the rest."""
    from mlops_core.entities import PredictionBatch, PredictionEvent
    from mlops_core.plugins import PluginManager, hookimpl

    seen: dict[str, list] = {"per_call": [], "batches": [], "both_batches": [], "both_calls": []}

    class PerCall:
        @hookimpl
        def mlops_predictions_served(self, event):
            seen["per_call"].append(event.request_id)

    class Batches:
        @hookimpl
        def mlops_predictions_batch(self, batch):
            seen["batches"].append(list(batch.request_ids))

    class Both:  # implements both: gets batches only, never the same call twice
        @hookimpl
        def mlops_predictions_served(self, event):
            seen["both_calls"].append(event.request_id)

        @hookimpl
        def mlops_predictions_batch(self, batch):
            seen["both_batches"].append(batch.count)

    pm = PluginManager(autoload=False)
    assert not pm.hooks.has_prediction_listeners()
    pm.register(PerCall(), name="per-call")
    assert pm.hooks.has_prediction_listeners()
    pm.register(Batches(), name="batches")
    pm.register(Both(), name="both")
    events = [PredictionEvent(model="m", version=1, inputs={"x": [i]}, outputs={}, latency_s=0.001 * i,
                              request_id=f"r{i}", traceparent=None) for i in range(3)]
    pm.hooks.predictions_served(events[0])
    pm.hooks.predictions_batch(PredictionBatch.from_events(events))
    assert seen["per_call"] == ["r0", "r0", "r1", "r2"]
    assert seen["batches"] == [["r0"], ["r0", "r1", "r2"]]
    assert seen["both_batches"] == [1, 3] and seen["both_calls"] == []
    back = list(PredictionBatch.from_events(events).events())
    assert back == events  # columns and events convert both ways without loss
