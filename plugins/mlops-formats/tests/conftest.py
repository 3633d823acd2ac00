"""Fixtures of the mlops-formats tests: small real models of every framework, trained once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "contrib" / "command-models"))


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="session")
def sk_model(iris):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = iris
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


@pytest.fixture(scope="session")
def xgb_model(iris):
    xgb = pytest.importorskip("xgboost")
    X, y = iris
    return xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(X, y)


@pytest.fixture(scope="session")
def lgb_model(iris):
    lgb = pytest.importorskip("lightgbm")
    X, y = iris
    return lgb.LGBMClassifier(n_estimators=8, num_leaves=7, n_jobs=1, verbose=-1).fit(X, y)


@pytest.fixture(scope="session")
def torch_program():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(net, (torch.zeros(2, 4),), dynamic_shapes=({0: batch},))


@pytest.fixture(scope="session")
def onnx_proto(sk_model):
    from mlops_formats.onnx_format import _convert_sklearn

    return _convert_sklearn(sk_model)


@pytest.fixture(scope="session")
def go_program(tmp_path_factory):
    """The Go example model, compiled once (Debian's golang-go)."""
    import command_models as models

    return models.go_model(tmp_path_factory.mktemp("go-build"))
