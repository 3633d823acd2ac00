"""A client loop that hammers a deployment while it is updated: the zero-failure rolling-update check.

Deployer authors (and this repository's process and container deployer tests) run
:class:`LoadGenerator` against a deployment's stable URL while they update it:

    with LoadGenerator(url, "/v2/models/m/infer", body, identify=version_of) as load:
        load.wait_for(200)
        deployer.deploy(new_spec)
        load.wait_for(200)
    assert not load.failures()

Two kinds of clients run side by side, and no client retries anything (any error
is a failed request):

* keep-alive clients (``http.client``, one persistent connection each), reopened
  only when the server says ``Connection: close`` or after an error: a server that
  closes idle keep-alive connections while draining loses their next request;
* new-connection clients (one connection per request): a connection reset in a
  closing listener's queue shows up here.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any, Callable

import attrs

__all__ = ["LoadGenerator", "Outcome"]


@attrs.frozen
class Outcome:
    """One request: which client sent it, when, and what answered it (``version``) or why it failed."""

    client: str
    sent: float
    done: float
    version: Any = None
    error: str | None = None


class LoadGenerator:
    """Client threads POSTing ``body`` to ``url + path`` until stopped, or a per-client count or time bound.

    ``identify(response_bytes)`` names what answered (a version); it returns None for
    an answer no deployed version gives, which counts as a failure.
    """

    def __init__(self, url: str, path: str, body: bytes, *, identify: Callable[[bytes], Any],
                 keepalive_clients: int = 6, new_connection_clients: int = 2,
                 max_requests_per_client: int = 100_000, max_seconds: float = 600.0, timeout: float = 60.0) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.path, self.body, self.identify, self.timeout = path, body, identify, timeout
        self.max_requests = max_requests_per_client
        self.deadline = time.monotonic() + max_seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.threads = [threading.Thread(target=self._run, args=(f"keepalive-{i}", True), daemon=True)
                        for i in range(keepalive_clients)]
        self.threads += [threading.Thread(target=self._run, args=(f"new-conn-{i}", False), daemon=True)
                         for i in range(new_connection_clients)]

    def __enter__(self) -> "LoadGenerator":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def completed(self) -> int:
        with self.lock:
            return len(self.outcomes)

    def failures(self) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.error]

    def wait_for(self, more: int, timeout: float = 120.0) -> None:
        """Block until ``more`` further requests completed (a count, not a duration)."""
        target = self.completed() + more
        limit = time.monotonic() + timeout
        while self.completed() < target:
            if time.monotonic() >= limit:
                raise AssertionError(f"the load generator stalled: {self.completed()} of {target} requests done")
            time.sleep(0.01)

    def _run(self, client: str, keepalive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        headers = {"Content-Type": "application/json"}
        if not keepalive:
            headers["Connection"] = "close"
        for _ in range(self.max_requests):
            if self.stopping.is_set() or time.monotonic() > self.deadline:
                break
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            sent = time.monotonic()
            try:
                conn.request("POST", self.path, self.body, headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
                version = self.identify(data)
                outcome = Outcome(client, sent, time.monotonic(), version,
                                  None if version is not None else f"unexpected answer {data[:200]!r}")
                if response.will_close or not keepalive:  # the server said Connection: close
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, none is retried
                outcome = Outcome(client, sent, time.monotonic(), None, f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = None
            with self.lock:
                self.outcomes.append(outcome)
        if conn is not None:
            conn.close()
