"""Hand-over of a shared port (SO_REUSEPORT) between server generations, and the drain of queued connections.

The kernel-level tests use real sockets in this process: which listener's accept queue a new
connection lands in is exactly what the steering program decides.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlops_core.testing.waiting import wait_until
from mlops_server.handover import (accept_pending, bind_listener, kernel_leave, steering_program,
                                   steering_supported)
from mlops_server_testkit import free_port

linux_only = pytest.mark.skipif(not steering_supported(), reason="reuseport steering needs Linux and /proc/net/tcp")


# ----------------------------------------------------------------- pure parts
def test_steering_program_shapes():
    assert steering_program([3], 4) == [(0x06, 0, 0, 3)]
    uniform = steering_program(range(3), 3)
    assert uniform[-1] == (0x16, 0, 0, 0) and uniform[1] == (0x94, 0, 0, 3)
    picked = steering_program([1, 4], 5)
    assert picked[1] == (0x94, 0, 0, 2)
    assert picked[2:] == [(0x15, 0, 1, 0), (0x06, 0, 0, 1), (0x06, 0, 0, 4)]
    with pytest.raises(ValueError):
        steering_program([], 2)


def test_kernel_leave_moves_the_last_listener_into_the_freed_slot():
    socks = [{"inode": i} for i in (10, 11, 12, 13)]
    assert [s["inode"] for s in kernel_leave(socks, 11)] == [10, 13, 12]
    assert [s["inode"] for s in kernel_leave(socks, 13)] == [10, 11, 12]


# ----------------------------------------------------------------- kernel
def _connect(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def _backlog(sock: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue (Linux: tcpi_unacked of TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("<I", info, 24)[0]


def _wait_queued(socks: list[socket.socket], expected: int, timeout: float = 30.0) -> None:
    """Wait until the kernel has queued ``expected`` connections on ``socks`` (handshakes complete)."""
    deadline = time.monotonic() + timeout
    while sum(_backlog(s) for s in socks) < expected:
        assert time.monotonic() < deadline, f"{expected} connections never reached the accept queues"
        time.sleep(0.005)


def _queued(listener, expect: int | None = None) -> int:
    if expect is not None:
        _wait_queued([listener.sock], expect)
    conns = accept_pending(listener.sock)
    for c in conns:
        c.close()
    return len(conns)


def test_accept_pending_takes_every_queued_connection():
    listener = bind_listener("127.0.0.1", 0, reuse_port=False)
    clients = _connect(listener.port, 7)
    try:
        assert _queued(listener, expect=7) == 7
        clients += _connect(listener.port, 3)
        _wait_queued([listener.sock], 3)
        drained = listener.close()  # accepts what is queued, then closes
        assert len(drained) == 3
        assert listener.close() == []  # idempotent
    finally:
        for c in clients:
            c.close()


@linux_only
def test_newest_generation_takes_new_connections_and_its_workers_share_them():
    old = bind_listener("127.0.0.1", 0, reuse_port=True, generation="old")
    port = old.port
    clients = []
    try:
        assert old.mode == "steering"
        clients += _connect(port, 5)
        assert _queued(old, expect=5) == 5
        new1 = bind_listener("127.0.0.1", port, reuse_port=True, generation="new")
        new2 = bind_listener("127.0.0.1", port, reuse_port=True, generation="new")
        clients += _connect(port, 200)
        _wait_queued([old.sock, new1.sock, new2.sock], 200)
        got = (_queued(old), _queued(new1), _queued(new2))
        assert got[0] == 0 and got[1] + got[2] == 200
        assert got[1] > 20 and got[2] > 20  # random pick: both workers get a share
        assert old.close() == []  # nothing was queued on it
        clients += _connect(port, 200)
        _wait_queued([new1.sock, new2.sock], 200)
        after = (_queued(new1), _queued(new2))
        assert sum(after) == 200 and min(after) > 0
        # The newest generation leaving (a failed update) gives the port back to what remains.
        new2.close()
        clients += _connect(port, 20)
        assert _queued(new1, expect=20) == 20
        new1.close()
    finally:
        for c in clients:
            c.close()


@linux_only
@pytest.mark.parametrize("new_workers", [1, 2])
def test_no_connection_is_lost_while_the_old_listener_closes(new_workers):
    """Clients connect without pause while the old listener leaves: every connection lands in a queue."""
    import threading

    old = bind_listener("127.0.0.1", 0, reuse_port=True, generation="old")
    port = old.port
    new = [bind_listener("127.0.0.1", port, reuse_port=True, generation="new") for _ in range(new_workers)]
    clients: list[socket.socket] = []
    errors: list[Exception] = []
    done = threading.Event()

    def connect() -> None:
        while not done.is_set() and len(clients) < 1500:
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError as exc:
                errors.append(exc)
            # drain the new queues now and then so they never overflow
            if len(clients) % 200 == 0:
                accepted[0] += sum(_queued(n) for n in new)

    def connected(count: int) -> bool:
        assert thread.is_alive() or len(clients) >= count, f"the connecting thread stopped early: {errors[:3]}"
        return len(clients) >= count

    accepted = [0]
    thread = threading.Thread(target=connect)
    thread.start()
    try:
        wait_until(lambda: connected(100), 60, what="100 connections before the old listener closes", interval=0.001)
        drained = old.close()
        wait_until(lambda: connected(400), 60, what="400 connections in all", interval=0.001)
        done.set()
        thread.join()
        _wait_queued([n.sock for n in new], len(clients) - accepted[0] - len(drained))
        accepted[0] += len(drained) + sum(_queued(n) for n in new)
        assert not errors
        assert accepted[0] == len(clients)  # a connection reset in a closing queue is never accepted
        for c in drained:
            c.close()
    finally:
        done.set()
        thread.join()
        for n in new:
            n.close()
        for c in clients:
            c.close()


@linux_only
def test_a_listener_the_state_does_not_know_turns_steering_off_safely():
    old = bind_listener("127.0.0.1", 0, reuse_port=True, generation="old")
    port = old.port
    foreign = socket.socket()
    foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    foreign.bind(("127.0.0.1", port))
    foreign.listen(256)  # not recorded: the group order is unknown from now on
    foreign.setblocking(False)
    clients = []
    try:
        new = bind_listener("127.0.0.1", port, reuse_port=True, generation="new")
        clients += _connect(port, 90)
        _wait_queued([old.sock, foreign, new.sock], 90)
        counts = [len(accept_pending(s)) for s in (old.sock, foreign, new.sock)]
        assert sum(counts) == 90 and all(c > 0 for c in counts)  # spread over all, like the kernel's hash
        new.close()
        old.close()
    finally:
        foreign.close()
        for c in clients:
            c.close()


# ----------------------------------------------------------------- real servers
def _start(bundle: Path, port: int, version: str, tmp: Path, *args: str) -> subprocess.Popen:
    log = open(tmp / f"server-{version}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "mlops_server", "--bundle", str(bundle), "--name", "affine",
                             "--model-version", version, "--port", str(port), "--reuse-port", *args],
                            stdout=log, stderr=subprocess.STDOUT)


def _version_on_new_connection(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v2/models/affine", headers={"Connection": "close"})
        return json.loads(conn.getresponse().read())["versions"][0]
    finally:
        conn.close()


def _wait_listeners(port: int, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    from mlops_server.handover import listening_inodes

    deadline = time.monotonic() + timeout
    while len(listening_inodes(socket.AF_INET, "127.0.0.1", port) or ()) < count:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{count} listeners never appeared"
        time.sleep(0.05)


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_new_server_on_the_port_answers_every_new_connection(tmp_path, affine_bundle, workers):
    port = free_port()
    old = _start(affine_bundle, port, "1", tmp_path)
    new = None
    try:
        _wait_listeners(port, 1, old)
        assert {_version_on_new_connection(port) for _ in range(10)} == {"1"}
        new = _start(affine_bundle, port, "2", tmp_path, "--workers", workers)
        _wait_listeners(port, 1 + int(workers), new)
        assert {_version_on_new_connection(port) for _ in range(40)} == {"2"}
        # The new one stops (a failed update is discarded): the old one gets the port back.
        new.send_signal(signal.SIGTERM)
        assert new.wait(30) == 0
        assert {_version_on_new_connection(port) for _ in range(20)} == {"1"}
    finally:
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    assert old.returncode == 0


@pytest.mark.slow
def test_connections_queued_when_sigterm_arrives_are_answered(tmp_path, affine_bundle):
    """Stop the server, queue requests in its accept backlog, then SIGTERM + SIGCONT: all are answered."""
    port = free_port()
    proc = _start(affine_bundle, port, "1", tmp_path)
    clients = []
    try:
        import requests

        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 5],
                                       "data": [1.0, 2.0, 3.0, 4.0, 5.0]}]}).encode()
        request = (f"POST /v2/models/affine/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        proc.send_signal(signal.SIGSTOP)
        clients = _connect(port, 20)
        for c in clients:
            c.sendall(request)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        for c in clients:
            c.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            assert b"[3.0,5.0,7.0,9.0,11.0]" in data
        assert proc.wait(30) == 0
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
