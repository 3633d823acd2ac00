"""``mlops models export NAME --format mlflow``: the folder is served by the real ``mlflow models serve``
with the same predictions as the bundle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from mlflow_testkit import free_port, wait_http
from mlflow_testmodels import Affine
from mlops_core import api
from mlops_core.errors import AlreadyExistsError
from mlops_mlflow.interop import export_model

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]


def _mlflow_serve(folder: Path, tmp_path: Path):
    port = free_port()
    log = tmp_path / f"mlflow-serve-{port}.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", str(folder), "--env-manager", "local",
                                 "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
                                # mlflow runs `uvicorn` from PATH: the venv's bin must be on it
                                env={**os.environ, "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                                     # the Affine test model's module, as a user's own code would be
                                     "PYTHONPATH": str(Path(__file__).parent)})
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, log)
    except BaseException:
        _stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the session holds mlflow's uvicorn child too
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_export_is_served_by_mlflow_models_serve(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    api.register("iris", api.save(model, example=X[:5]), alias="prod")
    frame = pd.DataFrame({"a": [1.0, -2.0, 0.5], "b": [3.0, 4.0, -1.0]})
    api.register("affine", api.save(Affine(), example=frame))

    iris_dir = export_model("models:/iris@prod", tmp_path / "iris-mlflow")
    affine_dir = export_model("affine", tmp_path / "affine-mlflow")
    assert (iris_dir / "MLmodel").is_file() and (affine_dir / "MLmodel").is_file()
    with pytest.raises(AlreadyExistsError):
        export_model("iris", tmp_path / "iris-mlflow")

    proc, url = _mlflow_serve(iris_dir, tmp_path)
    try:
        rows = X[[0, 55, 140, 3]]
        r = requests.post(f"{url}/invocations", json={"inputs": rows.tolist()}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == model.predict(rows).tolist()
    finally:
        _stop(proc)

    proc, url = _mlflow_serve(affine_dir, tmp_path)
    try:
        r = requests.post(f"{url}/invocations", json={"dataframe_split": frame.to_dict(orient="split")}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], (2 * frame["a"] + frame["b"]).tolist())
    finally:
        _stop(proc)


def test_cli_export(tmp_path):
    api.register("m", api.save(Affine(), example=pd.DataFrame({"a": [1.0], "b": [2.0]})))
    mlops = Path(sys.executable).with_name("mlops")
    out = subprocess.run([str(mlops), "models", "export", "models:/m/1", "--format", "mlflow", "--dest", "out"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "mlflow models serve" in out.stdout
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(str(tmp_path / "out"))
    assert loaded.predict(pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0]})).tolist() == [2.0, 5.0]
    again = subprocess.run([str(mlops), "models", "export", "m", "--format", "mlflow", "--dest", "out"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == AlreadyExistsError.exit_code and "hint:" in again.stderr
