"""A throwaway redis-server on a free port (no persistence), stopped at the end of the session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> str:
    redis = pytest.importorskip("redis", reason="install the redis client to run the Redis tests")
    server = shutil.which("redis-server")
    if not server:
        pytest.skip("redis-server not found: apt-get install redis-server")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="mlops-redis-")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        from mlops_core.testing import wait_until

        client = redis.Redis.from_url(url)
        wait_until(client.ping, 60, what=f"redis-server to answer PING on {url}", proc=proc,
                   ignore=(redis.ConnectionError,))
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
