"""The main job through the real CLI, across plugins: save, deploy, predict by deployment name, roll back, delete."""

from __future__ import annotations

import json

import numpy as np
import pytest

TRAIN = """
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

def make(C=1.0):
    X, y = load_iris(return_X_y=True)
    return LogisticRegression(C=C, max_iter=500).fit(X, y)

def make_weak():
    return make(C=0.001)
"""


@pytest.mark.slow
def test_save_deploy_predict_rollback_delete(run_cli, tmp_path):
    pytest.importorskip("mlops_process_deployer", reason="needs the process deployer plugin")
    from sklearn.datasets import load_iris

    X, _ = load_iris(return_X_y=True)
    (tmp_path / "train.py").write_text(TRAIN)
    np.save(tmp_path / "ex.npy", X)
    (tmp_path / "rows.csv").write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
    assert run_cli("models", "save", "train:make", "--name", "iris", "--example", "ex.npy").returncode == 0
    assert run_cli("models", "save", "train:make_weak", "--name", "iris", "--example", "ex.npy").returncode == 0
    try:
        first = json.loads(run_cli("deploy", "models:/iris/1", "--name", "iris", "--json").stdout)
        assert first["state"] == "ready" and first["version"] == 1
        predicted = run_cli("predict", "iris", "--input", "rows.csv", "--json")
        assert predicted.returncode == 0, predicted.stderr
        assert json.loads(predicted.stdout)["outputs"][0]["data"] == [0, 2]
        updated = json.loads(run_cli("deploy", "models:/iris/2", "--name", "iris", "--json").stdout)
        assert (updated["version"], updated["previous_version"], updated["url"]) == (2, 1, first["url"])
        status = json.loads(run_cli("deployments", "status", "iris", "--json").stdout)
        assert status["version"] == 2 and status["state"] == "ready"
        rolled = json.loads(run_cli("deployments", "rollback", "iris", "--json").stdout)
        assert rolled["version"] == 1
        assert run_cli("deployments", "logs", "iris", "--tail", "5").returncode == 0
        listed = json.loads(run_cli("deployments", "list", "--json").stdout)
        assert [(d["name"], d["version"]) for d in listed] == [("iris", 1)]
    finally:
        run_cli("deployments", "delete", "iris")
    assert json.loads(run_cli("deployments", "list", "--json").stdout) == []
    missing = run_cli("deployments", "status", "iris")
    assert missing.returncode == 5 and "Traceback" not in missing.stderr
