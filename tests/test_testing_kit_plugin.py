"""The pytest plugin's fixtures, and the kit's Hypothesis strategies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_core import plugins
from mlops_core.bundle import load_bundle, save_bundle, schema_path, validate_manifest
from mlops_core.entities import Signature
from mlops_core.testing import strategies as mst


def _installed_as_pytest11() -> bool:
    from importlib.metadata import entry_points

    return any(ep.value == "mlops_core.testing.pytest_plugin" for ep in entry_points(group="pytest11"))


# Once mlops-core's pytest11 entry point is installed the fixtures are already there:
# naming the module again would register it twice.
pytest_plugins = ["pytester"] + ([] if _installed_as_pytest11() else ["mlops_core.testing.pytest_plugin"])
#: For inner runs: the same plugin whether or not the entry point is installed.
WITH_KIT = ("-p", "no:mlops", "-p", "mlops_core.testing.pytest_plugin")


# ----------------------------------------------------------------- the fixtures
def test_plugin_manager_fixture_is_isolated_and_restored(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from mlops_core import plugins

        def test_isolated(mlops_plugin_manager, monkeypatch):
            assert plugins.get_plugin_manager() is mlops_plugin_manager
            assert mlops_plugin_manager.plugins() == []
            assert mlops_plugin_manager.catalog.specs() == []

        def test_restored_after():
            pm = plugins.get_plugin_manager()
            assert "cloudpickle" in pm.catalog.names("format"), "the autoloaded manager came back"
    """)
    result = pytester.runpytest_subprocess(*WITH_KIT, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_manager_fixture_ignores_the_developers_switches(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_PLUGIN_MODULES", "mlops_core.formats.cloudpickle_format")
    pytester.makepyfile("""
        def test_no_modules_from_env(mlops_plugin_manager):
            assert mlops_plugin_manager.plugins() == []
    """)
    pytester.runpytest_subprocess(*WITH_KIT).assert_outcomes(passed=1)


def test_register_plugin_is_undone_after_the_test(mlops_plugin_manager, mlops_register_plugin) -> None:
    from mlops_core.formats import cloudpickle_format

    name = mlops_register_plugin(cloudpickle_format, name="cp")
    assert name == "cp" and mlops_plugin_manager.catalog.names("format") == ["cloudpickle"]


def test_register_plugin_fails_loudly_on_a_misspelled_hook(mlops_plugin_manager, mlops_register_plugin) -> None:
    class Typo:
        @plugins.hookimpl
        def mlops_version_registred(self, version):
            pass

    with pytest.raises(AssertionError, match="did you mean 'mlops_version_registered'"):
        mlops_register_plugin(Typo())


def test_registration_lasts_one_test_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from mlops_core.plugins import hookimpl

        class Listener:
            @hookimpl
            def mlops_alert(self, alert):
                pass

        def test_one(mlops_plugin_manager, mlops_register_plugin):
            mlops_register_plugin(Listener(), name="listener")
            assert mlops_plugin_manager.pm.has_plugin("listener")

        def test_two(mlops_plugin_manager):
            assert not mlops_plugin_manager.pm.has_plugin("listener")
    """)
    pytester.runpytest_subprocess(*WITH_KIT).assert_outcomes(passed=2)


def test_hook_recorder_sees_events_providers_and_direct_calls(mlops_plugin_manager, mlops_register_plugin,
                                                              mlops_hook_recorder) -> None:
    from mlops_core.entities import AliasChange
    from mlops_core.formats import cloudpickle_format

    class Listener:
        seen: list = []

        @plugins.hookimpl
        def mlops_alias_changed(self, change):
            self.seen.append(change)

    mlops_register_plugin(cloudpickle_format, name="cp")
    mlops_register_plugin(Listener(), name="listener")
    change = AliasChange("m", "prod", 2, 1)
    mlops_plugin_manager.hooks.alias_changed(change)
    mlops_plugin_manager.hooks.alert({"severity": "info", "title": "t", "model": None, "version": None,
                                      "details": {}})
    mlops_plugin_manager.pm.hook.mlops_collect_metrics()

    provider = mlops_hook_recorder.getcall("mlops_register_backends")
    assert provider.plugin == "cp" and [s.name for s in provider.backends] == ["cloudpickle"]
    call = mlops_hook_recorder.getcall("mlops_alias_changed")
    assert (call.plugin, call.change) == ("listener", change)
    assert mlops_hook_recorder.getcall("mlops_alert").plugin is None  # fired, nobody listened
    assert mlops_hook_recorder.names() == ["mlops_register_backends", "mlops_alias_changed", "mlops_alert",
                                           "mlops_collect_metrics"]
    mlops_hook_recorder.assert_called("mlops_alias_changed", change=change)
    mlops_hook_recorder.assert_not_called("mlops_version_registered")


def test_stack_fixture_runs_the_main_job_and_the_recorder_sees_it(mlops_stack, mlops_hook_recorder, tmp_path) -> None:
    import mlops_core
    from mlops_core.testing.models import EXAMPLE_INPUT, EXPECTED_OUTPUT, DoublingModel

    assert mlops_stack.home == tmp_path / ".mlops"
    version = mlops_core.register("doubler", DoublingModel(), example=EXAMPLE_INPUT, alias="staging")
    assert version.version == 1
    assert mlops_core.load("models:/doubler@staging").predict(EXAMPLE_INPUT) == EXPECTED_OUTPUT
    assert (tmp_path / ".mlops").is_dir()
    assert mlops_hook_recorder.getcall("mlops_version_registered").version.model == "doubler"
    mlops_hook_recorder.assert_called("mlops_alias_changed")
    mlops_hook_recorder.assert_called("mlops_bundle_saved")


# ---------------------------------------------------------------- the strategies
@settings(max_examples=60, deadline=None)
@given(mst.manifests())
def test_generated_manifests_are_valid(manifest) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validate_manifest(manifest)
    jsonschema.validate(manifest, json.loads(schema_path().read_text()))


@settings(max_examples=60, deadline=None)
@given(mst.signatures())
def test_generated_signatures_round_trip(signature) -> None:
    assert Signature.from_dict(json.loads(json.dumps(signature.to_dict()))) == signature


@settings(max_examples=60, deadline=None)
@given(mst.v2_tensors())
def test_generated_tensors_fit_their_shape(tensor) -> None:
    size = 1
    for d in tensor["shape"]:
        size *= d
    assert len(tensor["data"]) == size


@settings(max_examples=30, deadline=None)
@given(mst.numpy_arrays())
def test_generated_arrays_have_v2_datatypes(array) -> None:
    from mlops_core.signature import numpy_datatype

    assert numpy_datatype(array.dtype) in {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                                           "INT64", "FP16", "FP32", "FP64"}


@settings(max_examples=15, deadline=None)
@given(model=mst.doubling_models(), name=mst.model_names(), alias=mst.aliases(), tags=mst.tag_dicts(),
       key=mst.artifact_keys())
def test_generated_names_pass_the_core_validators(model, name, alias, tags, key, tmp_path_factory) -> None:
    from mlops_core.entities import validate_alias, validate_model_name, validate_tag_key
    from mlops_core.interfaces import validate_key

    validate_model_name(name)
    validate_alias(alias)
    validate_key(key)
    for k in tags:
        validate_tag_key(k)
    info = save_bundle(model, tmp_path_factory.mktemp("b") / "bundle")
    assert load_bundle(info.path).model == model


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_bundle_files_never_nest_a_file_in_a_file(data) -> None:
    files = data.draw(mst.bundle_files())
    assert not any(b.startswith(a + "/") for a in files for b in files)


# ------------------------------------------- the reference stack, end to end
def test_reference_stack_runs_the_main_job_and_fires_every_lifecycle_event(
        mlops_plugin_manager, mlops_register_plugin, mlops_hook_recorder, tmp_path) -> None:
    """Build and deploy through the core API on the kit's reference backends; the events arrive in order."""
    import mlops_core
    from mlops_core import api
    from mlops_core.formats import cloudpickle_format
    from mlops_core.stack import ComponentConfig, Stack, StackConfig
    from mlops_core.testing import reference_plugin
    from mlops_core.testing.models import EXAMPLE_INPUT, DoublingModel
    from mlops_core.testing.suites.deployer import v2_request

    class Audit:
        actions: list = []

        @plugins.hookimpl
        def mlops_image_built(self, version, image):
            self.actions.append(("built", version.version, image.digest))

        @plugins.hookimpl
        def mlops_deployment_changed(self, deployment, action):
            self.actions.append((action, deployment.version))

    mlops_register_plugin(cloudpickle_format, name="cloudpickle")
    mlops_register_plugin(reference_plugin, name="kit")
    audit = Audit()
    mlops_register_plugin(audit, name="audit")
    config = StackConfig(home=tmp_path / ".mlops", components={
        "storage": ComponentConfig("kit-memory"), "registry": ComponentConfig("kit-memory"),
        "builder": ComponentConfig("kit-tarball"), "deployer": ComponentConfig("kit-thread")})
    with Stack(config, plugins=mlops_plugin_manager) as stack, api.use_stack(stack):
        v1 = mlops_core.register("doubler", DoublingModel("one"), example=EXAMPLE_INPUT)
        v2 = mlops_core.register("doubler", DoublingModel("two"), example=EXAMPLE_INPUT)
        image = mlops_core.build(v1.uri)
        assert mlops_core.build(v1.uri).digest == image.digest
        d = mlops_core.deploy(v1.uri, name="doubler")
        assert v2_request(d.url, "/v2/health/ready")[0] == 200
        assert mlops_core.deploy(v2.uri, name="doubler").previous_version == 1
        assert mlops_core.rollback("doubler").version == 1
        mlops_core.undeploy("doubler")
    assert audit.actions == [("built", 1, image.digest), ("built", 1, image.digest), ("deployed", 1),
                             ("updated", 2), ("rolled_back", 1), ("deleted", 1)]
    assert [c.action for c in mlops_hook_recorder.getcalls("mlops_deployment_changed")] == \
        ["deployed", "updated", "rolled_back", "deleted"]
    assert mlops_hook_recorder.getcalls("mlops_image_built")[0].image.digest == image.digest
    assert not mlops_plugin_manager.hooks.event_errors
