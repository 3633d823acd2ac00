"""Every format serves through `mlops serve`, and a standard V2 client (tritonclient) gets the right answers.

The Node.js and Go command models go through exactly the same client checks."""

from __future__ import annotations

import numpy as np
import pytest

from formats_testkit import mlops_serve, triton_infer
from mlops_core.bundle import save_bundle

pytestmark = pytest.mark.slow

pytest.importorskip("tritonclient.http")


def _rows(iris) -> np.ndarray:
    return np.ascontiguousarray(iris[0][::10])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_onnx_serves(tmp_path, sk_model, iris, binary):
    X = _rows(iris)
    info = save_bundle(sk_model, tmp_path / "b", format="onnx", example=X)
    with mlops_serve(info.path, "iris-onnx", tmp_path) as url:
        out = triton_infer(url, "iris-onnx", X, "X", "FP32", binary=binary)
    np.testing.assert_array_equal(out["label"], sk_model.predict(X))
    np.testing.assert_allclose(out["probabilities"], sk_model.predict_proba(X), rtol=1e-4, atol=1e-5)


def test_skops_serves(tmp_path, sk_model, iris):
    X = _rows(iris).astype(np.float64)
    info = save_bundle(sk_model, tmp_path / "b", example=X)
    with mlops_serve(info.path, "iris-skops", tmp_path) as url:
        out = triton_infer(url, "iris-skops", X, "input-0", "FP64")
    np.testing.assert_array_equal(next(iter(out.values())).reshape(-1), sk_model.predict(X))


@pytest.mark.parametrize("fixture", ["xgb_model", "lgb_model"])
def test_tree_models_serve(request, tmp_path, iris, fixture):
    model = request.getfixturevalue(fixture)
    X = _rows(iris)
    info = save_bundle(model, tmp_path / "b", example=X)
    with mlops_serve(info.path, fixture, tmp_path) as url:
        out = triton_infer(url, fixture, X, "input-0", "FP32")
    np.testing.assert_array_equal(next(iter(out.values())).reshape(-1), model.predict(X))


def test_torch_serves(tmp_path, torch_program, iris):
    import torch

    X = _rows(iris)
    info = save_bundle(torch_program, tmp_path / "b", example=X)
    name = info.signature.inputs[0].name
    with mlops_serve(info.path, "torch-mlp", tmp_path) as url:
        out = triton_infer(url, "torch-mlp", X, name, "FP32")
    with torch.inference_mode():
        want = torch_program.module()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(next(iter(out.values())), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("language", ["node", "go"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_command_models_in_other_languages_serve(request, tmp_path, iris, language, binary):
    import command_models as models

    model = models.node_model() if language == "node" else request.getfixturevalue("go_program")
    X = _rows(iris)
    info = save_bundle(model, tmp_path / "b", example=X)
    assert info.manifest["format"] == "command"
    with mlops_serve(info.path, f"linear-{language}", tmp_path) as url:
        out = triton_infer(url, f"linear-{language}", X, "x", "FP32", binary=binary)
    scores, label = models.expected(X)
    np.testing.assert_allclose(out["scores"], scores, rtol=1e-6)
    np.testing.assert_array_equal(out["label"], label)
