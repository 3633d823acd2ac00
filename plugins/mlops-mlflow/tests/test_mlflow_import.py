"""``mlops models import mlflow:/...``: MLflow models from a real tracking server (and a folder) become
verified bundles, registered in the current stack and served by ``mlops serve`` with the right predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

import mlflow_testmodels
from mlflow_testkit import MlopsServe
from mlops_core import api
from mlops_core.bundle import read_manifest
from mlops_core.errors import NotFoundError
from mlops_mlflow.interop import import_model

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return X, LogisticRegression(max_iter=1000).fit(X, y)


@pytest.fixture(scope="module")
def logged_sklearn(mlflow_server, iris):
    """An sklearn model logged to a run on the server (and registered there as version 1)."""
    import mlflow
    import mlflow.sklearn

    X, model = iris
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_experiment("mlops-import")
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(model, name="model", input_example=X[:3],
                                 registered_model_name="mlflow-iris")
    return run.info.run_id


@pytest.fixture(scope="module")
def logged_pyfunc(mlflow_server, tmp_path_factory):
    """A custom PythonModel with an artifact and its code, logged and registered on the server."""
    import mlflow
    import mlflow.pyfunc

    offset = tmp_path_factory.mktemp("pyfunc") / "offset.txt"
    offset.write_text("0.5")
    example = pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0]})
    mlflow.set_tracking_uri(mlflow_server.uri)
    mlflow.set_experiment("mlops-import")
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="affine", python_model=mlflow_testmodels.AffineModel(),
                                artifacts={"offset": str(offset)}, code_paths=[str(HERE / "mlflow_testmodels.py")],
                                input_example=example, registered_model_name="mlflow-affine",
                                pip_requirements=["mlflow"])
    return run.info.run_id


def _infer(url: str, model: str, inputs: list[dict]) -> dict:
    r = requests.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_sklearn_run_imports_natively_and_serves(tmp_path, mlflow_server, logged_sklearn, iris):
    X, model = iris
    version = import_model(f"mlflow:/runs:/{logged_sklearn}/model", "iris", alias="prod",
                           tracking_uri=mlflow_server.uri)
    assert (version.model, version.version, version.aliases) == ("iris", 1, ("prod",))
    assert version.lineage.source_run == logged_sklearn
    assert version.tags["mlflow.flavor"] == "sklearn"
    _, bundle = api.resolve_bundle("models:/iris@prod")
    manifest, _ = read_manifest(bundle)
    assert manifest["format"] == "cloudpickle" and manifest["signature"] is not None
    loaded = api.load("models:/iris@prod")
    assert type(loaded).__name__ == "LogisticRegression"
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))

    with MlopsServe("models:/iris@prod", tmp_path) as server:
        spec = manifest["signature"]["inputs"][0]
        rows = X[[0, 60, 120, 7]]
        out = _infer(server.url, "iris", [{"name": spec["name"], "shape": list(rows.shape),
                                           "datatype": spec["datatype"], "data": rows.reshape(-1).tolist()}])
        assert out["outputs"][0]["data"] == model.predict(rows).tolist()


def test_registry_uri_imports_and_serves(tmp_path, mlflow_server, logged_sklearn, iris):
    X, model = iris
    version = import_model("mlflow:/models:/mlflow-iris/1", "iris-reg", tracking_uri=mlflow_server.uri)
    assert version.tags["mlflow.source"] == "models:/mlflow-iris/1"
    np.testing.assert_array_equal(api.load("models:/iris-reg/1").predict(X), model.predict(X))


def test_custom_pyfunc_imports_as_mlflow_pyfunc_and_serves(tmp_path, mlflow_server, logged_pyfunc):
    version = import_model(f"mlflow:/runs:/{logged_pyfunc}/affine", "affine", tracking_uri=mlflow_server.uri)
    _, bundle = api.resolve_bundle(version.uri)
    manifest, _ = read_manifest(bundle)
    assert manifest["format"] == "mlflow-pyfunc"
    assert any(f["path"] == "mlflow_model/MLmodel" for f in manifest["files"])
    assert any(r["name"] == "mlflow" for r in manifest["requirements"])
    frame = pd.DataFrame({"a": [1.0, -3.0, 0.25], "b": [10.0, 1.0, 4.0]})
    expected = (2 * frame["a"] + frame["b"] + 0.5).tolist()
    assert api.load(version.uri).predict(frame).tolist() == expected

    sig = manifest["signature"]
    assert sig["input_kind"] == "dataframe", sig
    with MlopsServe(version.uri, tmp_path, env={"PYTHONPATH": ""}) as server:
        inputs = [{"name": col, "shape": [3], "datatype": "FP64", "data": frame[col].tolist()} for col in ("a", "b")]
        out = _infer(server.url, "affine", inputs)
        assert out["outputs"][0]["data"] == expected


def test_local_folder_imports(tmp_path, iris):
    import mlflow.sklearn

    X, model = iris
    mlflow.sklearn.save_model(model, str(tmp_path / "folder"))
    version = import_model(f"mlflow:{tmp_path / 'folder'}", "from-folder")
    assert version.lineage.source_run is None
    np.testing.assert_array_equal(api.load(version.uri).predict(X), model.predict(X))


def test_cli_import_and_clear_errors(tmp_path, mlflow_server, logged_sklearn):
    mlops = Path(sys.executable).with_name("mlops")
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    ok = subprocess.run([str(mlops), "models", "import", f"mlflow:/runs:/{logged_sklearn}/model", "--name", "cli-iris",
                         "--json"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["version"] == 1
    missing = subprocess.run([str(mlops), "models", "import", "mlflow:/models:/no-such-model/1", "--name", "x"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    assert missing.returncode == NotFoundError.exit_code, missing.stderr
    assert "error:" in missing.stderr and "hint:" in missing.stderr
    bad = subprocess.run([str(mlops), "models", "import", "mlflow:/not/a/folder", "--name", "x"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "MLmodel" in bad.stderr
