"""The deployment front (mlops_oci.front), run as the real process the container deployer starts.

Backends are real HTTP/1.1 servers on loopback; clients are ``http.client``
connections (keep-alive: one connection reused until the server says close).
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import free_port
from mlops_oci.deployer import FrontClient


class Backend:
    """A keep-alive HTTP server answering its name; ``drop_second`` closes a connection on its 2nd request unanswered."""

    def __init__(self, name: str, *, drop_second: bool = False) -> None:
        self.name = name
        self.requests = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.served = 0

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self.served += 1
                if drop_second and self.served == 2:
                    self.close_connection = True  # read the request, answer nothing, close: a draining race
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                backend.requests += 1
                out = json.dumps({"backend": backend.name, "echo": len(body)}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = "127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def front(tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[subprocess.Popen, FrontClient]] = []

    def start(target: str) -> tuple[int, FrontClient]:
        port = free_port()
        control = tmp_path / f"front-{len(started)}.sock"
        proc = subprocess.Popen([sys.executable, "-m", "mlops_oci.front", "--listen", f"127.0.0.1:{port}",
                                 "--target", target, "--control", str(control)])
        client = FrontClient(control)
        started.append((proc, client))
        deadline = time.monotonic() + 15
        while client.call("ping", timeout=1) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the front did not start"
            time.sleep(0.02)
        return port, client

    yield start
    for proc, client in started:
        client.call("stop")
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ask(conn: http.client.HTTPConnection, body: bytes = b"x") -> str:
    conn.request("POST", "/", body)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert data["echo"] == len(body)
    return data["backend"]


def test_switch_moves_new_and_keepalive_connections_at_the_next_request(front: Any) -> None:
    a, b = Backend("a"), Backend("b")
    try:
        port, control = front(a.address)
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert [_ask(kept) for _ in range(3)] == ["a", "a", "a"]
        answer = control.call("switch", target=b.address)
        assert answer and answer["ok"] and answer["generation"] == 1
        assert _ask(kept) == "b"  # same client connection, next request: the new backend
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert _ask(fresh, b"y" * 300_000) == "b"
        a.stop()  # the old backend is gone entirely; nothing reaches it any more
        assert [_ask(kept) for _ in range(3)] == ["b", "b", "b"]
        ping = control.call("ping")
        assert ping["target"] == b.address and ping["replays"] == 0
    finally:
        b.stop()


def test_a_request_the_backend_closed_unanswered_is_sent_again(front: Any) -> None:
    a = Backend("a", drop_second=True)
    try:
        port, control = front(a.address)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert _ask(conn) == "a"
        # The backend reads the 2nd request of this connection and closes it without an answer:
        # the client must still get its answer (from a new backend connection).
        assert _ask(conn, b"z" * 1000) == "a"
        assert control.call("ping")["replays"] == 1
        assert a.requests == 2
    finally:
        a.stop()


def test_control_socket_rejects_bad_commands(front: Any) -> None:
    a = Backend("a")
    try:
        _, control = front(a.address)
        assert control.call("switch") == {"ok": False, "error": "switch needs a target HOST:PORT"}
        assert control.call("fly")["ok"] is False
        assert control.call("ping")["target"] == a.address
    finally:
        a.stop()
