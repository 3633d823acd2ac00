"""The socket holder: one listening socket per port, shared by successive servers, and the drain of queued connections.

The kernel-level tests use real sockets: a holder process and servers' copies of
its socket taken in this process. Which queue a connection waits in, and whether
a closing copy resets it, is exactly what the holder is for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mlops_core.testing.waiting import wait_until
from mlops_server.listener import HolderError, accept_pending, bind_listener, receive_listener
from mlops_server_testkit import free_port

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCM_RIGHTS and TCP_INFO on Linux")


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


@pytest.fixture
def holder(tmp_path):
    """A real ``python -m mlops_server.holder`` on a free port; (port, Unix socket path, process)."""
    port = free_port()
    # A deep folder: the holder's socket path is longer than sun_path's 108 bytes.
    folder = tmp_path / ("d" * 60) / ("e" * 60)
    folder.mkdir(parents=True)
    path = folder / "listener.sock"
    log = open(tmp_path / "holder.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlops_server.holder", "--port", str(port), "--socket", str(path)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, (tmp_path / "holder.log").read_text()
        assert time.monotonic() < deadline, "the holder never created its socket"
        time.sleep(0.01)
    yield port, path, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    log.close()


@linux_only
def test_servers_share_the_holders_one_queue_and_a_closing_copy_resets_nothing(holder):
    """Clients connect without pause while the old server's copy closes: the new one accepts every connection."""
    port, path, proc = holder
    old = receive_listener(path, host="127.0.0.1", port=port)
    new = receive_listener(path, host="127.0.0.1", port=port)
    assert os.fstat(old.sock.fileno()).st_ino == os.fstat(new.sock.fileno()).st_ino  # one socket, one queue
    clients: list[socket.socket] = []
    errors: list[Exception] = []
    done = threading.Event()
    accepted = [0]

    def connect() -> None:
        while not done.is_set() and len(clients) < 1500:
            try:
                clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError as exc:
                errors.append(exc)
            if len(clients) % 200 == 0:  # accept now and then so the queue never overflows
                accepted[0] += _queued(new)

    def connected(count: int) -> bool:
        assert thread.is_alive() or len(clients) >= count, f"the connecting thread stopped early: {errors[:3]}"
        return len(clients) >= count

    thread = threading.Thread(target=connect)
    thread.start()
    try:
        wait_until(lambda: connected(100), 60, what="100 connections before the old listener closes", interval=0.001)
        drained = old.close()  # takes what is queued, then closes its copy
        wait_until(lambda: connected(400), 60, what="400 connections in all", interval=0.001)
        done.set()
        thread.join()
        _wait_queued([new.sock], len(clients) - accepted[0] - len(drained))
        accepted[0] += len(drained) + _queued(new)
        assert not errors
        assert accepted[0] == len(clients)  # a reset connection would never be accepted
        for c in drained:
            c.close()
        # Every server gone: the holder still keeps the port, a later server takes the queue.
        new.close()
        clients += _connect(port, 5)
        later = receive_listener(path, host="127.0.0.1", port=port)
        assert _queued(later, expect=5) == 5
        later.close()
    finally:
        done.set()
        thread.join()
        for c in clients:
            c.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not path.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_receive_listener_names_the_holder_when_it_is_not_there_or_on_another_port(holder, tmp_path):
    port, path, _proc = holder
    with pytest.raises(HolderError, match="not a listener on 127.0.0.1:1"):
        receive_listener(path, host="127.0.0.1", port=1)
    with pytest.raises(HolderError, match=str(tmp_path / "nowhere.sock")):
        receive_listener(tmp_path / "nowhere.sock", host="127.0.0.1", port=port)


def test_holder_refuses_a_port_in_use_with_status_4(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = subprocess.run([sys.executable, "-m", "mlops_server.holder", "--port", str(taken.getsockname()[1]),
                              "--socket", str(tmp_path / "h.sock")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 4
    assert "cannot listen on 127.0.0.1" in out.stderr


# ----------------------------------------------------------------- real servers
def _start(bundle: Path, port: int, version: str, tmp: Path, *args: str) -> subprocess.Popen:
    log = open(tmp / f"server-{version}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "mlops_server", "--bundle", str(bundle), "--name", "affine",
                             "--model-version", version, "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT)


def _version_on_new_connection(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v2/models/affine", headers={"Connection": "close"})
        return json.loads(conn.getresponse().read())["versions"][0]
    finally:
        conn.close()


def _wait_answers(port: int, version: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"version {version} never answered"
        try:
            if _version_on_new_connection(port) == version:
                return
        except OSError:
            pass
        time.sleep(0.05)


@pytest.mark.slow
@linux_only
@pytest.mark.parametrize("workers", ["1", "2"])
def test_servers_taking_the_held_socket_hand_over_without_a_failed_connection(tmp_path, affine_bundle, holder,
                                                                             workers):
    port, path, _proc = holder
    old = _start(affine_bundle, port, "1", tmp_path, "--listen-from", str(path))
    new = None
    failures: list[str] = []
    answers: list[str] = []
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            try:
                answers.append(_version_on_new_connection(port))
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=hammer)
    try:
        _wait_answers(port, "1", old)
        thread.start()
        new = _start(affine_bundle, port, "2", tmp_path, "--listen-from", str(path), "--workers", workers)
        _wait_answers(port, "2", new)  # both serve from one queue now
        old.send_signal(signal.SIGTERM)
        assert old.wait(30) == 0
        seen = len(answers)
        deadline = time.monotonic() + 60
        while len(answers) < seen + 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        done.set()
        thread.join(30)
        assert not failures, failures[:5]
        assert set(answers[seen:]) == {"2"}
        assert {"1", "2"} <= set(answers)
    finally:
        done.set()
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


@pytest.mark.slow
def test_a_server_whose_model_fails_never_takes_the_socket(tmp_path, holder):
    import mlops_server_testmodels as tm
    from mlops_core.bundle import save_bundle
    from mlops_server_testkit import echo_signature

    port, path, _proc = holder
    bundle = tmp_path / "warmup-fails"
    save_bundle(tm.Broken(), bundle, signature=echo_signature("FP64"))  # raises on its warm-up prediction
    out = subprocess.run([sys.executable, "-m", "mlops_server", "--bundle", str(bundle),
                          "--port", str(port),
                          "--listen-from", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert "not listening on" in out.stderr and "took the listening socket" not in out.stderr


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


@linux_only
def test_the_holder_socket_binds_at_every_path_length_around_sun_paths_limit(tmp_path):
    """Paths just under 108 bytes once failed: the staging name (path + pid + .tmp) overflowed sun_path."""
    from mlops_server.holder import _unix_server

    base = len(os.fsencode(tmp_path / "x" / "listener.sock"))
    for length in range(90, 125):
        folder = tmp_path / ("x" * max(1, length - base + 1))
        folder.mkdir(exist_ok=True)
        path = folder / "listener.sock"
        assert len(os.fsencode(path)) == max(length, base)
        server = _unix_server(str(path))
        try:
            assert path.is_socket() and not list(folder.glob("*.tmp"))
        finally:
            server.close()
            path.unlink()
