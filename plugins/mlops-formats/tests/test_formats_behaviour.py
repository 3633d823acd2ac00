"""What each format promises beyond the kit: automatic choice, skops trust, ONNX equals scikit-learn,
graph signatures, requirements for images, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlops_core
from mlops_core.bundle import load_bundle, save_bundle
from mlops_core.errors import IntegrityError, InvalidInputError, MlopsError


class Doubler:  # a plain Python model: only cloudpickle takes it
    def predict(self, x):
        return np.asarray(x) * 2


# ------------------------------------------------------------ automatic choice
def test_formats_are_discovered_through_the_entry_point():
    from mlops_core.plugins import get_plugin_manager

    names = get_plugin_manager().catalog.names("format")
    assert {"onnx", "skops", "xgboost", "lightgbm", "torch", "command", "cloudpickle"} <= set(names)


def test_import_is_light():
    code = "import sys, mlops_formats.plugin; heavy = {'numpy', 'onnx', 'onnxruntime', 'torch', 'sklearn', 'skops', " \
           "'xgboost', 'lightgbm'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("fixture, expected", [
    ("sk_model", "skops"), ("xgb_model", "xgboost"), ("lgb_model", "lightgbm"),
    ("torch_program", "torch"), ("onnx_proto", "onnx"),
])
def test_automatic_choice_by_model_type(request, tmp_path, fixture, expected):
    model = request.getfixturevalue(fixture)
    info = save_bundle(model, tmp_path / "b")
    assert info.manifest["format"] == expected


def test_plain_python_objects_still_go_to_cloudpickle(tmp_path):
    assert save_bundle(Doubler(), tmp_path / "b").manifest["format"] == "cloudpickle"


def test_command_models_choose_the_command_format(tmp_path):
    import command_models as models

    info = save_bundle(models.node_model(), tmp_path / "b")
    assert info.manifest["format"] == "command"
    assert info.signature.to_dict() == {**models.SIGNATURE}
    assert {f["path"] for f in info.manifest["files"]} == {"command.json", "program/model.js", "program/weights.json"}


def test_explicit_format_wins(tmp_path, sk_model):
    assert save_bundle(sk_model, tmp_path / "a", format="cloudpickle").manifest["format"] == "cloudpickle"
    assert save_bundle(sk_model, tmp_path / "b", format="onnx").manifest["format"] == "onnx"


def test_cli_save_with_format_onnx(tmp_path, sk_model):
    """`mlops models save module:attr --format onnx` converts with skl2onnx and registers the version."""
    import cloudpickle

    (tmp_path / "trained.pkl").write_bytes(cloudpickle.dumps(sk_model))
    (tmp_path / "train_mod.py").write_text(
        "import pickle, pathlib\nMODEL = pickle.loads((pathlib.Path(__file__).parent / 'trained.pkl').read_bytes())\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MLOPS_HOME": str(tmp_path / ".mlops")}
    mlops = str(Path(sys.executable).with_name("mlops"))
    out = subprocess.run([mlops, "models", "save", "train_mod:MODEL", "--name", "iris", "--format", "onnx", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    version = json.loads(out.stdout)
    shown = subprocess.run([mlops, "models", "show", f"models:/iris/{version['version']}", "--json"], cwd=tmp_path,
                           env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "onnx" in shown.stdout


def test_unknown_format_name_lists_the_installed_ones(tmp_path, sk_model):
    with pytest.raises(InvalidInputError) as err:
        save_bundle(sk_model, tmp_path / "b", format="tensorflow")
    assert "onnx" in err.value.hint and "skops" in err.value.hint


# ---------------------------------------------------------------------- ONNX
def test_onnx_predictions_equal_sklearn(tmp_path, sk_model, iris):
    X, _ = iris
    info = save_bundle(sk_model, tmp_path / "b", format="onnx", example=X[:10])
    model = load_bundle(info.path).model
    out = model.predict(X)
    np.testing.assert_array_equal(out["label"], sk_model.predict(X))
    np.testing.assert_allclose(out["probabilities"], sk_model.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_onnx_signature_comes_from_the_graph(tmp_path, sk_model, iris):
    info = save_bundle(sk_model, tmp_path / "b", format="onnx", example=iris[0][:5])
    sig = info.signature.to_dict()
    assert sig["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert sig["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [-1]},
                              {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert sig["input_kind"] == "ndarray"
    assert {r["name"] for r in info.manifest["requirements"]} >= {"onnxruntime", "numpy"}


def test_onnx_multi_input_graph_with_named_dynamic_axes(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "add", [a, b], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path = tmp_path / "add.onnx"
    path.write_bytes(proto.SerializeToString())
    info = save_bundle(str(path), tmp_path / "b")  # a .onnx file path is chosen automatically too
    assert info.manifest["format"] == "onnx"
    assert info.signature.input_kind == "dict"
    assert [t.shape for t in info.signature.inputs] == [(-1, 3), (-1, 3)]
    model = load_bundle(info.path).model
    out = model.predict({"a": np.ones((2, 3)), "b": np.full((2, 3), 2.0)})  # float64 is cast to the graph's FP32
    np.testing.assert_array_equal(out["sum"], np.full((2, 3), 3.0, dtype=np.float32))


def test_onnx_session_threads_come_from_settings(tmp_path, onnx_proto, monkeypatch):
    info = save_bundle(onnx_proto, tmp_path / "b")
    monkeypatch.setenv("MLOPS_ONNX_INTRA_OP_THREADS", "2")
    model = load_bundle(info.path).model
    assert model.settings.intra_op_threads == 2
    assert model.session.get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv("MLOPS_ONNX_INTRA_OP_THREADS", "two")
    with pytest.raises(InvalidInputError, match="MLOPS_ONNX_INTRA_OP_THREADS"):
        load_bundle(info.path)


def test_onnx_refuses_an_unfitted_estimator(tmp_path):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(InvalidInputError, match="not fitted"):
        save_bundle(LogisticRegression(), tmp_path / "b", format="onnx")


# ---------------------------------------------------------------------- skops
class Clip:
    """A transformer of the tests' own: not a type skops trusts."""

    def __init__(self, low: float = 0.0, high: float = 5.0):
        self.low, self.high = low, high

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.clip(X, self.low, self.high)

    def get_params(self, deep=True):
        return {"low": self.low, "high": self.high}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self


def _custom_pipeline(iris):
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clip_type = type("Clip", (TransformerMixin, BaseEstimator, Clip), {"__module__": __name__})
    globals()["Clip"] = clip_type  # importable by its qualified name, as a user's own class would be
    X, y = iris
    return make_pipeline(clip_type(), LogisticRegression(max_iter=300)).fit(X, y)


def test_skops_refuses_an_untrusted_type_then_loads_it_when_trusted(tmp_path, iris, monkeypatch):
    from mlops_formats.skops_format import TRUST_ENV, UntrustedTypesError

    model = _custom_pipeline(iris)
    # The automatic choice leaves a model that would need trust to cloudpickle; asked for, skops saves it.
    assert save_bundle(model, tmp_path / "auto").manifest["format"] == "cloudpickle"
    info = save_bundle(model, tmp_path / "b", format="skops")
    assert info.manifest["format"] == "skops"
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UntrustedTypesError) as err:
        load_bundle(info.path)
    assert f"{__name__}.Clip" in str(err.value)
    assert TRUST_ENV in err.value.hint and f"{__name__}.Clip" in err.value.hint
    assert isinstance(err.value, IntegrityError)
    monkeypatch.setenv(TRUST_ENV, f"{__name__}.Clip")
    loaded = load_bundle(info.path).model
    np.testing.assert_array_equal(loaded.predict(iris[0]), model.predict(iris[0]))


def test_skops_declines_what_it_cannot_write(tmp_path, iris):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from mlops_formats.skops_format import SkopsFormat

    model = make_pipeline(FunctionTransformer(lambda x: x * 2), LogisticRegression(max_iter=300)).fit(*iris)
    assert SkopsFormat().can_save(model) is False
    assert save_bundle(model, tmp_path / "b").manifest["format"] == "cloudpickle"


def test_skops_trusts_scikit_learns_own_compiled_types(tmp_path, iris):
    """skops leaves sklearn.tree._tree.Tree out of its defaults; scikit-learn's own types are trusted here."""
    import skops.io as sio
    from sklearn.tree import DecisionTreeClassifier

    model = DecisionTreeClassifier(max_depth=2, random_state=0).fit(*iris)
    assert "sklearn.tree._tree.Tree" in sio.get_untrusted_types(data=sio.dumps(model))
    info = save_bundle(model, tmp_path / "b")
    assert info.manifest["format"] == "skops"
    np.testing.assert_array_equal(load_bundle(info.path).model.predict(iris[0]), model.predict(iris[0]))


def test_skops_bundle_has_no_pickle(tmp_path, sk_model):
    info = save_bundle(sk_model, tmp_path / "b")
    payload = (info.path / "model.skops").read_bytes()
    assert payload[:2] == b"PK"  # a zip of JSON schemas and .npy arrays
    import zipfile

    with zipfile.ZipFile(info.path / "model.skops") as z:
        assert "schema.json" in z.namelist()
        assert all(not n.endswith((".pkl", ".pickle")) for n in z.namelist())


# ------------------------------------------------------------- trees, torch
def test_xgboost_booster_and_json_files(tmp_path, iris, monkeypatch):
    xgb = pytest.importorskip("xgboost")
    X, y = iris
    booster = xgb.train({"objective": "reg:squarederror", "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(X, label=y.astype(float)), num_boost_round=5)
    monkeypatch.setenv("MLOPS_XGBOOST_FILE_FORMAT", "json")
    info = save_bundle(booster, tmp_path / "b", example=X[:4])
    assert info.manifest["format"] == "xgboost"
    assert "model.json" in {f["path"] for f in info.manifest["files"]}
    assert "scikit-learn" not in {r["name"] for r in info.manifest["requirements"]}
    json.loads((info.path / "model.json").read_text())  # XGBoost's own JSON model, readable anywhere
    loaded = load_bundle(info.path).model
    np.testing.assert_allclose(loaded.predict(X), booster.inplace_predict(X), rtol=1e-6)


@pytest.mark.parametrize("fixture, needs_sklearn", [("xgb_model", True), ("lgb_model", False)])
def test_tree_requirements_name_scikit_learn_only_when_loading_imports_it(request, tmp_path, iris, fixture,
                                                                          needs_sklearn):
    """XGBClassifier imports scikit-learn when it is rebuilt (found by the image test: the image lacked it);
    the LightGBM wrapper here rebuilds a bare Booster, and a bare XGBoost Booster needs no scikit-learn."""
    info = save_bundle(request.getfixturevalue(fixture), tmp_path / "b", example=iris[0][:4])
    names = {r["name"] for r in info.manifest["requirements"]}
    assert ("scikit-learn" in names) is needs_sklearn, names


def test_lightgbm_regressor_text_file(tmp_path, iris):
    lgb = pytest.importorskip("lightgbm")
    X, y = iris
    reg = lgb.LGBMRegressor(n_estimators=5, num_leaves=5, verbose=-1).fit(X, y.astype(float))
    info = save_bundle(reg, tmp_path / "b", example=X[:4])
    assert (info.path / "model.txt").read_text().startswith("tree")
    np.testing.assert_allclose(load_bundle(info.path).model.predict(X), reg.predict(X), rtol=1e-6)


def test_torch_signature_has_a_dynamic_batch(tmp_path, torch_program):
    info = save_bundle(torch_program, tmp_path / "b")
    sig = info.signature
    assert sig.inputs[0].datatype == "FP32" and sig.inputs[0].shape == (-1, 4)
    assert sig.outputs[0].shape == (-1, 3)


def test_torch_refuses_a_plain_module_with_a_hint(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidInputError) as err:
        save_bundle(torch.nn.Linear(2, 2), tmp_path / "b", format="torch")
    assert "torch.export.export" in err.value.hint


def test_torchscript_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    from mlops_core.entities import Signature, TensorSpec

    scripted = torch.jit.script(torch.nn.Linear(3, 2).eval())
    sig = Signature([TensorSpec("x", "FP32", (-1, 3))], [TensorSpec("y", "FP32", (-1, 2))])
    info = save_bundle(scripted, tmp_path / "b", signature=sig)
    assert info.manifest["format"] == "torch"
    x = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    with torch.inference_mode():
        want = scripted(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(load_bundle(info.path).model.predict(x), want, rtol=1e-6)


# -------------------------------------------------------------------- command
def test_command_program_that_fails_to_start_is_a_clear_error(tmp_path):
    from mlops_core.entities import Signature, TensorSpec
    from mlops_formats.command_format import CommandModel, CommandModelError

    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "crash.js").write_text("process.exit(3)\n")
    sig = Signature([TensorSpec("x", "FP32", (-1, 1))], [TensorSpec("y", "FP32", (-1, 1))])
    info = save_bundle(CommandModel(prog, ["node", "crash.js"], sig), tmp_path / "b")
    with pytest.raises(CommandModelError, match="exited with code 3"):
        load_bundle(info.path)


def test_command_that_is_not_installed_is_a_clear_error(tmp_path):
    from mlops_core.entities import Signature, TensorSpec
    from mlops_formats.command_format import CommandModel, CommandModelError

    prog = tmp_path / "prog"
    prog.mkdir()
    (prog / "model.R").write_text("# R\n")
    sig = Signature([TensorSpec("x", "FP32", (-1, 1))], [TensorSpec("y", "FP32", (-1, 1))])
    info = save_bundle(CommandModel(prog, ["no-such-runtime-xyz", "model.R"], sig), tmp_path / "b")
    with pytest.raises(CommandModelError, match="not installed") as err:
        load_bundle(info.path)
    assert "install" in err.value.hint


def test_command_model_errors_come_back_as_errors(tmp_path, iris):
    import command_models as models

    info = save_bundle(models.node_model(), tmp_path / "b")
    model = load_bundle(info.path).model
    try:
        with pytest.raises(MlopsError, match="shape"):
            model.predict(np.zeros((2, 5), dtype=np.float32))
        scores, label = models.expected(iris[0])
        out = model.predict(iris[0])
        np.testing.assert_allclose(out["scores"], scores, rtol=1e-6)
        np.testing.assert_array_equal(out["label"], label)
    finally:
        model.close()
    assert not model.alive and not model.run_dir.exists()


def test_command_tampered_program_is_refused_before_it_runs(tmp_path):
    import command_models as models

    info = save_bundle(models.node_model(), tmp_path / "b")
    victim = info.path / "program" / "model.js"
    victim.write_text(victim.read_text().replace("label = argmax", "label = argmin"))
    with pytest.raises(IntegrityError, match="model.js"):
        load_bundle(info.path)


def test_command_model_loaded_in_a_short_lived_thread_keeps_running(tmp_path, iris):
    """The server loads models in a thread; the program must outlive it (PDEATHSIG is per thread on Linux)."""
    import threading

    import command_models as models

    info = save_bundle(models.node_model(), tmp_path / "b")
    from mlops_core.testing.waiting import wait_until

    box = {}
    loader = threading.Thread(target=lambda: box.setdefault("model", load_bundle(info.path).model))
    loader.start()
    loader.join()
    model = box["model"]
    try:
        import socket

        # join() returns before the OS thread is gone; PDEATHSIG is sent when the kernel ends it, so wait
        # for its task entry to disappear: from then on a program tied to that thread has been signalled.
        wait_until(lambda: not os.path.exists(f"/proc/self/task/{loader.native_id}"), 30,
                   what="the loader thread to end in the kernel")
        # The Node program handles SIGTERM by closing its listener; a signalled program runs that handler
        # before it can finish answering a request, so a fresh connection after an answer is then refused.
        np.testing.assert_array_equal(model.predict(iris[0][:3])["label"], models.expected(iris[0][:3])[1])
        socket.create_connection(("127.0.0.1", model.port), timeout=10).close()
        assert model.alive
    finally:
        model.close()


def test_command_program_dies_with_the_process(tmp_path):
    """A process that exits without closing its models leaves no program behind."""
    import command_models as models

    info = save_bundle(models.node_model(), tmp_path / "b")
    code = ("import os, sys, mlops_core.bundle as b; m = b.load_bundle(sys.argv[1]).model; "
            "print(m.proc.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code, str(info.path)], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        raise AssertionError("the model program outlived the process that started it")


def test_a_missing_system_library_is_a_clear_error(tmp_path, monkeypatch):
    """A framework whose import loads a system library that is absent (LightGBM without libgomp1 in an image)."""
    from mlops_core.errors import PluginError
    from mlops_formats._common import require

    (tmp_path / "needs_a_system_lib.py").write_text("import ctypes\nctypes.CDLL('libmlops-not-installed.so.1')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as err:
        require("needs_a_system_lib", "lightgbm")
    assert "libmlops-not-installed.so.1" in err.value.message
    assert "libgomp1" in err.value.hint
