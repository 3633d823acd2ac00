"""Helpers of the mlops-formats tests: serve a bundle with `mlops serve` and ask it with tritonclient.

A uniquely named module (not conftest) so that test files can import it."""

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

import numpy as np

MLOPS = [str(Path(sys.executable).with_name("mlops"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None, log: Path | None, timeout: float = 120.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text() if log else ''}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s:\n{log.read_text() if log else ''}")


@contextlib.contextmanager
def mlops_serve(bundle: Path, name: str, tmp: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlops serve BUNDLE --name NAME` on a free loopback port; yields its URL and stops it."""
    port = free_port()
    log = tmp / f"serve-{name}-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*MLOPS, "serve", str(bundle), "--name", name, "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def triton_infer(url: str, model: str, x: np.ndarray, input_name: str, datatype: str,
                 binary: bool = False) -> dict[str, np.ndarray]:
    """One inference with the standard V2 client; returns every output by name."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        assert client.is_server_ready() and client.is_model_ready(model)
        meta = client.get_model_metadata(model)
        inp = httpclient.InferInput(input_name, list(x.shape), datatype)
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
        result = client.infer(model, [inp], outputs=outputs or None)
        names = [o["name"] for o in meta["outputs"]] or [o["name"] for o in result.get_response()["outputs"]]
        return {n: result.as_numpy(n) for n in names}
    finally:
        client.close()
