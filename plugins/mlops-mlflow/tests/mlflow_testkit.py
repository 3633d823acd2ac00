"""A real MLflow tracking server for the tests: SQLite backend store, local artifact root, loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["free_port", "MlflowServer", "start_mlflow_server", "wait_http"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 600.0) -> None:
    # A deadline, not a delay: the server answers as soon as it is up (about 30 s idle, minutes on a loaded machine).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


class MlflowServer:
    def __init__(self, proc: subprocess.Popen, port: int, root: Path, log: Path) -> None:
        self.proc, self.port, self.root, self.log = proc, port, root, log
        self.uri = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_mlflow_server(root: Path) -> MlflowServer:
    """``mlflow server`` on a free loopback port, in its own process group (its workers go with it)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "server.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_cli), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=root)
    server = MlflowServer(proc, port, root, log)
    try:
        wait_http(f"{server.uri}/health", proc, log)
    except BaseException:
        server.stop()
        raise
    return server


class MlopsServe:
    """``mlops serve TARGET`` (the V2 server) in a stack folder, on a free loopback port."""

    def __init__(self, target: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        mlops = Path(sys.executable).with_name("mlops")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(mlops), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                         env={**os.environ, **(env or {})}, start_new_session=True)

    def __enter__(self) -> "MlopsServe":
        try:
            wait_http(f"{self.url}/v2/health/ready", self.proc, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
