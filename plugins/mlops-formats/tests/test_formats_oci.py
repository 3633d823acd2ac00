"""ONNX and command (Go, Node.js) models through a real image: debootstrap base -> registry -> oci build ->
podman (Docker API) -> V2 predictions with tritonclient.

The fixtures are mlops-oci's own (its tests' conftest), loaded under a unique module name so
that this plugin's tests do not depend on being collected together with mlops-oci's.
Slow (a cold run makes the base image and downloads onnxruntime's wheels); CI runs it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import mlops_core.api as api
from formats_testkit import triton_infer

pytestmark = pytest.mark.slow

_OCI_TESTS = Path(__file__).resolve().parents[2] / "mlops-oci" / "tests"
sys.path.insert(0, str(_OCI_TESTS))
_spec = importlib.util.spec_from_file_location("mlops_oci_test_fixtures", _OCI_TESTS / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
registry = _fixtures.registry
python_base = _fixtures.python_base
podman_service = _fixtures.podman_service

from oci_testkit import make_stack  # noqa: E402  (mlops-oci's test helpers, on the path above)


@pytest.fixture
def stack(tmp_path, registry, python_base, podman_service):
    return make_stack(
        tmp_path / "home", base=python_base, repository=f"{registry.host}/models",
        deployer={"base_url": podman_service.base_url, "network_mode": "host",
                  "ulimits": '{"nofile": "1024:1024", "nproc": "1024:1024"}'},
    )


def _deploy_and_check(stack, name, model, example, check, **save):
    bundle = api.save(model, example=example, stack=stack, **save)
    version = api.register(name, bundle, stack=stack)
    dep = api.deploy(version.uri, name=name, wait=240, stack=stack)
    try:
        assert dep.state == "ready", api.deployment_logs(name, stack=stack)
        check(dep.url)
    finally:
        api.undeploy(name, stack=stack)


def test_onnx_model_in_an_image(stack, iris, sk_model):
    X = np.ascontiguousarray(iris[0][::10])

    def check(url):
        out = triton_infer(url, "iris-onnx", X, "X", "FP32", binary=True)
        np.testing.assert_array_equal(out["label"], sk_model.predict(X))
        np.testing.assert_allclose(out["probabilities"], sk_model.predict_proba(X), rtol=1e-4, atol=1e-5)

    _deploy_and_check(stack, "iris-onnx", sk_model, X, check, format="onnx")


def test_go_command_model_in_an_image(stack, iris, tmp_path):
    import command_models as models

    X = np.ascontiguousarray(iris[0][::10])

    def check(url):
        out = triton_infer(url, "linear-go", X, "x", "FP32")
        scores, label = models.expected(X)
        np.testing.assert_allclose(out["scores"], scores, rtol=1e-6)
        np.testing.assert_array_equal(out["label"], label)

    _deploy_and_check(stack, "linear-go", models.go_model(tmp_path / "go"), X, check)


def test_node_command_model_in_an_image(stack, iris, tmp_path):
    """The base image has no Node.js: the bundle carries the node executable next to model.js."""
    import command_models as models

    X = np.ascontiguousarray(iris[0][::10])

    def check(url):
        out = triton_infer(url, "linear-node", X, "x", "FP32", binary=True)
        scores, label = models.expected(X)
        np.testing.assert_allclose(out["scores"], scores, rtol=1e-6)
        np.testing.assert_array_equal(out["label"], label)

    _deploy_and_check(stack, "linear-node", models.node_model_with_runtime(tmp_path / "node"), X, check)
