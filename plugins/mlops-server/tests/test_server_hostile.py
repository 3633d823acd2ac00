"""Hostile clients against a real server process: slow headers and bodies, idle connections, huge headers,
too many connections and the open-file limit. Every wait is on an observable event (a reply, a closed
socket), with generous deadlines that only bound a broken run."""

from __future__ import annotations

import os
import resource
import select
import socket
import time
from contextlib import ExitStack

import pytest
import requests

from mlops_server_testkit import run_server

pytestmark = pytest.mark.slow

INFER = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    return s


def read_until_closed(s: socket.socket, timeout: float = 60.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``: a broken run)."""
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def served(server) -> None:
    """A new client gets health and a prediction answered."""
    with requests.Session() as fresh:
        assert fresh.get(server.url + "/v2/health/ready", timeout=30).status_code == 200
        r = fresh.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30)
        assert r.status_code == 200, r.text


@pytest.fixture(autouse=True)
def many_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < 4096 and hard == resource.RLIM_INFINITY):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2200:
        pytest.skip("this test process cannot open 2,200 files (RLIMIT_NOFILE)")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_slow_and_idle_connections_are_timed_out_while_new_clients_are_served(tmp_path, iris_bundle):
    with run_server([iris_bundle], "--header-timeout", "4", "--body-timeout", "4", tmp=tmp_path) as server, \
            ExitStack() as stack:
        held = []
        for i in range(1000):
            s = stack.enter_context(connect(server.port))
            if i % 4 == 0:
                pass  # connects and never sends a byte
            elif i % 4 == 1:  # slowloris: a request head that never ends
                s.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            elif i % 4 == 2:  # a body that never comes
                s.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n{\"inputs\":")
            else:  # a keep-alive connection gone idle after one request
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append((i % 4, s))
        served(server)  # while all 1,000 are held
        answers = {kind: [] for kind in range(4)}
        for kind, s in held:
            answers[kind].append(read_until_closed(s))
        # Each one was closed by the server (else read_until_closed would have timed out), with a 408
        # where a request had begun and nothing else was being answered.
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers[0])
        assert all(a.startswith(b"HTTP/1.1 408") and b"headers not received" in a for a in answers[1])
        assert all(a.startswith(b"HTTP/1.1 408") and b"body not received" in a for a in answers[2])
        assert all(a.startswith(b"HTTP/1.1 200") and b"408" not in a for a in answers[3])
        served(server)


def _send_big_header(port: int, size: int) -> bytes:
    s = connect(port)
    with s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        sent = 0
        reply = b""
        while sent < size:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                reply = read_until_closed(s)
                break
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        return reply or read_until_closed(s)


def test_huge_headers_get_431_and_memory_stays_bounded(tmp_path, iris_bundle):
    with run_server([iris_bundle], tmp=tmp_path) as server:
        served(server)
        before = rss_bytes(server.proc.pid)
        replies = [_send_big_header(server.port, 8 << 20) for _ in range(20)]
        after = rss_bytes(server.proc.pid)
        assert all(r.startswith(b"HTTP/1.1 431") for r in replies), replies[:3]
        assert after - before < 64 << 20, f"RSS grew by {(after - before) >> 20} MiB for 20 x 8 MiB headers"
        ok = requests.get(server.url + "/v2/health/live", headers={"X-Fine": "a" * 60_000}, timeout=30)
        assert ok.status_code == 200  # just under the 64 KiB default
        served(server)


def test_connections_beyond_the_limit_get_503_and_the_others_keep_working(tmp_path, iris_bundle):
    with run_server([iris_bundle], "--max-connections", "20", tmp=tmp_path) as server, ExitStack() as stack:
        keep = requests.Session()
        assert keep.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30).status_code == 200
        idle = [stack.enter_context(connect(server.port)) for _ in range(25)]
        extra = connect(server.port)
        extra.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(extra)
        assert reply.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in reply.lower(), reply
        # the connection that was already open keeps being served
        assert keep.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30).status_code == 200
        for s in idle:
            s.close()
        deadline = time.monotonic() + 60
        while True:  # the server notices the closed connections on its own schedule
            r = requests.get(server.url + "/v2/health/live", timeout=30)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
        assert r.status_code == 200
        keep.close()


def test_at_the_file_limit_new_connections_are_refused_without_crash_or_spin(tmp_path, iris_bundle):
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    # --max-connections above what the descriptors allow, so the kernel limit itself is reached.
    with run_server([iris_bundle], "--max-connections", "1000", "--header-timeout", "60", tmp=tmp_path,
                    preexec_fn=low_limit) as server, ExitStack() as stack:
        keep = requests.Session()
        assert keep.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30).status_code == 200
        flood = []
        for _ in range(400):
            try:
                flood.append(stack.enter_context(connect(server.port)))
            except OSError:
                break
        # Connections beyond the limit are accepted and closed at once by the loop (libuv's reserve
        # descriptor): wait until one of the last ones is seen closed.
        assert read_until_closed(flood[-1], timeout=60) == b""
        cpu_before = cpu_seconds(server.proc.pid)
        probe = time.monotonic()
        while time.monotonic() - probe < 2.0:  # hold the flood while measuring CPU, not to synchronise
            time.sleep(0.2)
        spent = cpu_seconds(server.proc.pid) - cpu_before
        assert spent < 1.0, f"the server used {spent:.2f} s of CPU in 2 s at its file limit (accept loop spin?)"
        assert server.proc.poll() is None
        assert keep.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30).status_code == 200
        stack.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                served(server)
                break
            except (requests.ConnectionError, AssertionError):
                if time.monotonic() > deadline:
                    raise
        keep.close()
