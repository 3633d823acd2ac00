"""Fixtures of the mlops-server tests: bundles saved with mlops_core.bundle and real server processes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

import mlops_server_testmodels
from mlops_core.bundle import save_bundle
from mlops_server_testkit import DATATYPES, RunningServer, echo_signature, run_server


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def iris_bundle(bundle_dir: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    save_bundle(model, bundle_dir / "iris", example=X[:3])
    return bundle_dir / "iris"


@pytest.fixture(scope="session")
def echo_bundles(bundle_dir: Path) -> dict[str, Path]:
    out = {}
    for dt in DATATYPES:
        path = bundle_dir / f"echo-{dt.lower()}"
        save_bundle(mlops_server_testmodels.Echo(), path, signature=echo_signature(dt))
        out[dt] = path
    return out


@pytest.fixture(scope="session")
def affine_bundle(bundle_dir: Path) -> Path:
    path = bundle_dir / "affine"
    save_bundle(mlops_server_testmodels.Affine(), path, example=np.zeros((2, 5)))
    return path


@pytest.fixture(scope="session")
def misc_bundles(bundle_dir: Path) -> dict[str, Path]:
    import pandas as pd

    m = mlops_server_testmodels
    out = {
        "two": bundle_dir / "two",
        "frame": bundle_dir / "frame",
        "dict": bundle_dir / "dictmodel",
        "rejects": bundle_dir / "rejects",
    }
    save_bundle(m.TwoOutputs(), out["two"], example=np.ones((2, 3)))
    save_bundle(m.FrameModel(), out["frame"], example=pd.DataFrame({"x": [1.0, 2.0], "word": ["a", "bb"]}))
    save_bundle(m.DictModel(), out["dict"], example={"a": np.ones((2, 2)), "b": np.ones((2, 2))})
    save_bundle(m.RejectsNegative(), out["rejects"], example=np.ones((2, 2)))
    return out


@pytest.fixture(scope="module")
def main_server(tmp_path_factory, iris_bundle, echo_bundles, affine_bundle, misc_bundles) -> Iterator[RunningServer]:
    """One server with every functional model; tests must not change its state."""
    bundles = [iris_bundle, affine_bundle, *echo_bundles.values(), *misc_bundles.values()]
    with run_server(bundles, "--max-body-bytes", str(1 << 20), tmp=tmp_path_factory.mktemp("main")) as server:
        yield server
