"""Every format through a real image: debootstrap base -> registry -> oci build -> podman (Docker API) ->
V2 predictions with tritonclient, equal to the same bundle's predictions in-process.

One parametrised test over the formats; each model's image is built once (one module-wide stack,
so the wheel cache and the runtime layer are shared between the images) and asked in both the
JSON and the binary tensor encodings. The test also lists the image's site-packages: every
requirement of the bundle is there at exactly the version recorded in its manifest (for torch,
the local CPU build ``+cpu``), and no CUDA wheel crept in.

The fixtures are mlops-oci's own (its tests' conftest), loaded under a unique module name so
that this plugin's tests do not depend on being collected together with mlops-oci's.
Slow (a cold run makes the base image, downloads each framework's wheels and pulls every image
into podman's vfs storage); CI runs it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from packaging.utils import canonicalize_name

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

_NUMPY = {"FP32": np.float32, "FP64": np.float64}


def _command(which: str) -> Callable[[pytest.FixtureRequest, Path], Any]:
    def make(request: pytest.FixtureRequest, tmp: Path) -> Any:
        import command_models as models

        # The base image has no Node.js: that bundle carries the node executable next to model.js.
        return models.go_model(tmp) if which == "go" else models.node_model_with_runtime(tmp)
    return make


def _fixture(name: str) -> Callable[[pytest.FixtureRequest, Path], Any]:
    return lambda request, tmp: request.getfixturevalue(name)


# image name -> (model factory, save options, the format the bundle must get)
CASES: dict[str, tuple[Callable[[pytest.FixtureRequest, Path], Any], dict[str, Any], str]] = {
    "iris-onnx": (_fixture("sk_model"), {"format": "onnx"}, "onnx"),
    "iris-skops": (_fixture("sk_model"), {}, "skops"),
    "iris-xgboost": (_fixture("xgb_model"), {}, "xgboost"),
    "iris-lightgbm": (_fixture("lgb_model"), {}, "lightgbm"),
    "mlp-torch": (_fixture("torch_program"), {}, "torch"),
    "linear-go": (_command("go"), {}, "command"),
    "linear-node": (_command("node"), {}, "command"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, registry, python_base, podman_service):
    return make_stack(
        tmp_path_factory.mktemp("formats-oci") / "home", base=python_base, repository=f"{registry.host}/models",
        deployer={"base_url": podman_service.base_url, "network_mode": "host",
                  "ulimits": '{"nofile": "1024:1024", "nproc": "1024:1024"}'},
    )


def _by_output(predicted: Any, names: list[str]) -> dict[str, np.ndarray]:
    """An in-process prediction (a dict by output name, a tuple, or one array) by the served output names."""
    if isinstance(predicted, dict):
        return {k: np.asarray(v) for k, v in predicted.items()}
    if isinstance(predicted, tuple):
        return {n: np.asarray(v) for n, v in zip(names, predicted)}
    return {names[0]: np.asarray(predicted)}


def _image_distributions(podman_service, container: str) -> dict[str, str]:
    """{canonical name: version} of the wheels unpacked into the image's deps layer."""
    listing = podman_service.podman("exec", container, "ls", "/opt/mlops/site-packages").stdout.split()
    dists = [entry.removesuffix(".dist-info").rsplit("-", 1) for entry in listing if entry.endswith(".dist-info")]
    return {canonicalize_name(name): version for name, version in dists}


@pytest.mark.parametrize("name", list(CASES))
def test_format_serves_from_an_image(request, stack, podman_service, iris, tmp_path, name):
    make, save_options, fmt = CASES[name]
    bundle = api.save(make(request, tmp_path), example=np.ascontiguousarray(iris[0][:5]), stack=stack,
                      **save_options)
    assert bundle.manifest["format"] == fmt
    spec = bundle.signature.inputs[0]
    X = np.ascontiguousarray(iris[0][::10], dtype=_NUMPY[spec.datatype])
    model = api.load(bundle.path, stack=stack)
    try:
        in_process = model.predict(X)
    finally:
        getattr(model, "close", lambda: None)()

    version = api.register(name, bundle.path, stack=stack)
    dep = api.deploy(version.uri, name=name, wait=300, stack=stack)
    try:
        assert dep.state == "ready", api.deployment_logs(name, stack=stack)
        for binary in (False, True):
            served = triton_infer(dep.url, name, X, spec.name, spec.datatype, binary=binary)
            want = _by_output(in_process, list(served))
            assert set(want) == set(served)
            for out, value in served.items():
                np.testing.assert_allclose(value.reshape(want[out].shape), want[out], rtol=1e-6, atol=1e-7,
                                           err_msg=f"{name} output {out!r} (binary={binary})")
        installed = _image_distributions(podman_service, dep.details["container"])
        for req in bundle.manifest["requirements"]:
            assert installed.get(canonicalize_name(req["name"])) == req["version"], (req, installed)
        assert not [d for d in installed if d.startswith("nvidia-")], installed
    finally:
        api.undeploy(name, stack=stack)
