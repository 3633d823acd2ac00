"""Stack configuration: defaults, stack files, pyproject, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_core.errors import BackendNotFoundError, ConfigError
from mlops_core.stack import Stack, load_config


def test_embedded_defaults_live_in_dot_mlops(tmp_path):
    config = load_config(env={})
    assert config.source == "embedded defaults"
    assert config.home == tmp_path / ".mlops"
    assert {c: cc.backend for c, cc in config.components.items()} == {
        "storage": "fsspec", "registry": "sqlite", "builder": "oci", "deployer": "process", "batch": "local"}
    assert config.monitors == ()


def test_batch_engine_from_the_stack_file_and_the_environment(tmp_path):
    (tmp_path / "mlops.toml").write_text('[batch]\nbackend = "local"\nworkers = 3\n')
    stack = Stack(load_config(env={}))
    try:
        assert stack.batch_engine.workers() == 3 and "3 worker(s)" in stack.batch_engine.check()
    finally:
        stack.close()
    config = load_config(env={"MLOPS_BATCH": "dask", "MLOPS_BATCH__ADDRESS": "tcp://scheduler:8786"})
    assert config.components["batch"].backend == "dask"
    assert config.components["batch"].settings == {"address": "tcp://scheduler:8786"}


def test_stack_file_found_upwards_and_home_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "mlops.toml").write_text('home = "state"\n[storage]\nbackend = "fsspec"\nurl = "memory://x"\n'
                                         '[[monitors]]\nbackend = "log"\nsample = 0.5\n')
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "deeper")
    config = load_config(env={})
    assert config.source == str(tmp_path / "mlops.toml")
    assert config.home == tmp_path / "state"
    assert config.components["storage"].settings == {"url": "memory://x"}
    assert config.monitors[0].backend == "log" and config.monitors[0].settings == {"sample": 0.5}


def test_pyproject_tool_table(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.mlops.registry]\nbackend = "sqlite"\npath = "r.db"\n')
    config = load_config(env={})
    assert config.components["registry"].settings == {"path": "r.db"}


def test_environment_overrides_file(tmp_path):
    (tmp_path / "mlops.toml").write_text('[storage]\nbackend = "fsspec"\nurl = "memory://file"\n')
    env = {"MLOPS_STORAGE__URL": "memory://env", "MLOPS_REGISTRY": "other", "MLOPS_HOME": "/tmp/h",
           "MLOPS_MONITORS": "log, prometheus"}
    config = load_config(env=env)
    assert config.components["storage"].settings == {"url": "memory://env"}
    assert config.components["registry"].backend == "other"
    assert config.home == Path("/tmp/h")
    assert [m.backend for m in config.monitors] == ["log", "prometheus"]


@pytest.mark.parametrize("text, match", [
    ("[storage\n", "TOML"),
    ('bogus = 1\n', "unknown key"),
    ('[storage]\nurl = "x"\n', "must be a table with a 'backend'"),
    ('monitors = "log"\n', "array of tables"),
])
def test_bad_stack_files_say_what_to_fix(tmp_path, text, match):
    (tmp_path / "mlops.toml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(env={})


def test_missing_explicit_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="MLOPS_CONFIG"):
        load_config()


def test_unknown_backend_and_unknown_setting(tmp_path):
    stack = Stack(load_config(env={"MLOPS_REGISTRY": "nosuch"}))
    with pytest.raises(BackendNotFoundError) as err:
        stack.registry
    assert "sqlite" in err.value.hint  # lists what is installed
    stack = Stack(load_config(env={"MLOPS_REGISTRY__COLOUR": "blue"}))
    with pytest.raises(ConfigError) as err:
        stack.registry
    assert "colour" in err.value.message and "path" in err.value.hint


def test_backends_are_built_lazily_and_once(tmp_path):
    stack = Stack(load_config(env={}))
    assert not (tmp_path / ".mlops").exists()
    assert stack.registry is stack.registry
    assert stack.registry.search_models().items == ()
    assert (tmp_path / ".mlops" / "registry.db").exists()
    stack.close()


def test_relative_settings_follow_the_stack_file(tmp_path, monkeypatch):
    """Running mlops from a subfolder opens the same registry and store as from the project root."""
    (tmp_path / "mlops.toml").write_text('[registry]\nbackend = "sqlite"\npath = "state/reg.db"\n'
                                         '[storage]\nbackend = "fsspec"\nurl = "state/artifacts"\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    stack = Stack(load_config(env={}))
    stack.registry.search_models()
    stack.storage.write_bytes("k", b"v")
    assert (tmp_path / "state" / "reg.db").exists()
    assert (tmp_path / "state" / "artifacts" / "k").read_bytes() == b"v"
    stack.close()


def test_monitors_are_all_or_nothing(tmp_path):
    """A monitor that cannot be built leaves no other monitor registered, and the error names it."""
    from mlops_core import hookimpl
    from mlops_core.interfaces import Monitor
    from mlops_core.plugins import PluginManager

    closed = []

    class Good(Monitor):
        @hookimpl
        def mlops_alias_changed(self, change):
            pass

        def close(self):
            closed.append("good")

    class Provider:
        @hookimpl
        def mlops_register_backends(self, backends):
            backends.add_monitor("good", lambda config, context: Good())
            backends.add_monitor("bad", lambda config, context: (_ for _ in ()).throw(ConfigError("no endpoint")))

    pm = PluginManager(autoload=False)
    pm.register(Provider(), name="provider")
    stack = Stack(load_config(env={"MLOPS_MONITORS": "good,bad"}), pm)
    with pytest.raises(ConfigError, match=r"monitor #2 \('bad'\) cannot be built: no endpoint"):
        stack.start_monitors()
    assert closed == ["good"]
    assert not stack.events.has_listeners("mlops_alias_changed")
    ok = Stack(load_config(env={"MLOPS_MONITORS": "good"}), pm)
    assert len(ok.start_monitors()) == 1 and ok.events.has_listeners("mlops_alias_changed")
    # The stack's monitors are the stack's: the shared manager never lists them.
    assert not pm.hooks.has_listeners("mlops_alias_changed")
    ok.close()
    assert not ok.events.has_listeners("mlops_alias_changed")


def test_context_carries_the_stack_file(tmp_path):
    (tmp_path / "mlops.toml").write_text('[storage]\nbackend = "fsspec"\n')
    stack = Stack(load_config(env={}))
    ctx = stack.context("x")
    assert ctx.config_file == (tmp_path / "mlops.toml").resolve() and ctx.stack is stack
