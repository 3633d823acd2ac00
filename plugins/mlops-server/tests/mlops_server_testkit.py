"""Helpers of the mlops-server tests: start a real server process on a free loopback port, and stop it.

A uniquely named module (not conftest) so that test files can import it without clashing with
other plugins' conftest modules."""

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
import requests

import mlops_server_testmodels

cloudpickle.register_pickle_by_value(mlops_server_testmodels)

from mlops_core.entities import Signature, TensorSpec  # noqa: E402

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path, *, scheme: str = "http",
                 verify: Any = None, cert: Any = None, headers: dict[str, str] | None = None) -> None:
        self.proc = proc
        self.port = port
        self.url = f"{scheme}://127.0.0.1:{port}"
        self.log = log
        self.session = requests.Session()
        self.probe_kw: dict[str, Any] = {}
        if verify is not None:
            self.session.verify = self.probe_kw["verify"] = verify
        if cert is not None:
            self.session.cert = self.probe_kw["cert"] = cert
        if headers:
            self.session.headers.update(headers)
            self.probe_kw["headers"] = headers

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=30, **self._tls(kw))

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.session.post(self.url + path, timeout=30, **self._tls(kw))

    def _tls(self, kw: dict[str, Any]) -> dict[str, Any]:
        # Per request: requests lets $REQUESTS_CA_BUNDLE override a session's own `verify`.
        if "verify" in self.probe_kw:
            kw.setdefault("verify", self.probe_kw["verify"])
        return kw

    def infer(self, model: str, inputs: list[dict], **extra: Any) -> requests.Response:
        return self.post(f"/v2/models/{model}/infer", json={"inputs": inputs, **extra})

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/v2/health/ready", timeout=2, **self.probe_kw).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/v2/health/live", timeout=2, **self.probe_kw).status_code == 200:
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
               env: dict[str, str] | None = None, preexec_fn: Any = None,
               scheme: str = "http", verify: Any = None, cert: Any = None,
               headers: dict[str, str] | None = None) -> Iterator[RunningServer]:
    port = free_port()
    cmd = [sys.executable, "-m", "mlops_server"]
    for b in bundles:
        cmd += ["--bundle", str(b)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info", *args]
    log = tmp / f"server-{port}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, preexec_fn=preexec_fn)
    server = RunningServer(proc, port, log, scheme=scheme, verify=verify, cert=cert, headers=headers)
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
