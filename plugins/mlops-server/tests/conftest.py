"""Fixtures of the mlops-server tests: bundles saved with mlops_core.bundle and real server processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import cloudpickle
import numpy as np
import pytest
import requests

import mlops_server_testmodels

cloudpickle.register_pickle_by_value(mlops_server_testmodels)

from mlops_core.bundle import save_bundle  # noqa: E402
from mlops_core.entities import Signature, TensorSpec  # noqa: E402

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.session = requests.Session()

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **kw)

    def infer(self, model: str, inputs: list[dict], **extra: Any) -> requests.Response:
        return self.post(f"/v2/models/{model}/infer", json={"inputs": inputs, **extra})

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/v2/health/live", timeout=2).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not live after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        self.session.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@contextlib.contextmanager
def run_server(bundles: list[Path], *args: str, tmp: Path, wait: str = "ready",
               env: dict[str, str] | None = None) -> Iterator[RunningServer]:
    port = free_port()
    cmd = [sys.executable, "-m", "mlops_server"]
    for b in bundles:
        cmd += ["--bundle", str(b)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info", *args]
    log = tmp / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    server = RunningServer(proc, port, log)
    try:
        if wait == "ready":
            server.wait_ready()
        elif wait == "live":
            server.wait_live()
        yield server
    finally:
        server.stop()


def echo_signature(datatype: str, shape: tuple[int, ...] = (-1, 3)) -> Signature:
    spec = TensorSpec("input-0", datatype, shape)
    return Signature(inputs=[spec], outputs=[TensorSpec("output-0", datatype, shape)], input_kind="ndarray")


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
