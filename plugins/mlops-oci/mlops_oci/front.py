"""The stable front of a container deployment: a small proxy that owns the deployment's host port.

Containers come and go on every update, each on a port of its own; clients keep
one address, the front's. The container deployer starts one front per deployment
(``python -m mlops_oci.front``, a detached process) and drives it over a Unix
control socket with one JSON line per request:

``{"op": "ping"}``                       → ``{"ok": true, "target": "HOST:PORT", "connections": N, ...}``
``{"op": "switch", "target": "H:P"}``    → new requests go to H:P from now on
``{"op": "stop"}``                       → stop listening, let open connections finish, exit

How an update loses nothing (the deployer switches only after the new container
answered its model's ``/v2/models/{m}/versions/{v}/ready``):

* new connections go to the current target at once;
* a keep-alive connection moves to the new target at its next request boundary:
  the front speaks HTTP/1.1 request/response (no pipelining, which no common
  client does), so when a client sends bytes after the backend answered, the
  previous exchange is complete and the backend connection can be swapped;
* should a backend close a connection without answering the request the client
  just sent (a draining server closing an idle connection at that very moment,
  or a connection refused), the front sends the same bytes to the current target
  (up to ``REPLAY_LIMIT`` bytes; the old server never answered, so it did not
  process them either: a server closes only connections it reads nothing from);
* the deployer then stops the old container with SIGTERM and the server drains.

The front copies bytes and parses nothing, so it costs one extra loopback hop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

__all__ = ["main", "Front", "REPLAY_LIMIT"]

log = logging.getLogger("mlops_oci.front")

#: Bytes of one request the front keeps to send again to another backend (bigger requests are not replayed).
REPLAY_LIMIT = 64 << 20
#: How long a connection attempt to the current target is retried (the target may switch meanwhile).
CONNECT_PATIENCE_S = 10.0
_CHUNK = 1 << 16


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Link:
    """One client connection and the backend connection it currently uses."""

    def __init__(self, front: "Front", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.front = front
        self.reader, self.writer = reader, writer
        self.backend: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.backend_generation = -1
        self.pump: asyncio.Task[None] | None = None
        self.pending = bytearray()  # the client's bytes since the backend last sent anything
        self.awaiting = False  # the client sent a request that no byte answered yet
        self.replayable = True
        self.closed = False
        self.io = asyncio.Lock()

    async def _connect(self) -> None:
        """Connect to the current target (dropping any previous backend connection)."""
        self._drop_backend()
        deadline = time.monotonic() + CONNECT_PATIENCE_S
        delay = 0.02
        while True:
            host, port = self.front.target
            try:
                reader, writer = await asyncio.open_connection(host, port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        self.backend = (reader, writer)
        self.backend_generation = self.front.generation
        self.pump = asyncio.ensure_future(self._backend_to_client(reader, writer))

    def _drop_backend(self) -> None:
        if self.backend is not None:
            _, writer = self.backend
            self.backend = None
            if self.pump is not None:
                self.pump.cancel()
                self.pump = None
            writer.close()

    async def run(self) -> None:
        try:
            while True:
                data = await self.reader.read(_CHUNK)
                if not data:
                    break
                async with self.io:  # one writer at a time: this loop or a replay
                    await self._forward(data)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.debug("client connection ended: %s", exc)
        finally:
            self.close()

    async def _forward(self, data: bytes) -> None:
        if not self.awaiting:
            # A new request: the previous exchange is complete, so this is where a keep-alive
            # connection may move to a new target.
            self.pending = bytearray()
            self.replayable = True
            if self.backend is None or self.backend_generation != self.front.generation:
                await self._connect()
        self.awaiting = True
        if self.replayable:
            if len(self.pending) + len(data) <= REPLAY_LIMIT:
                self.pending += data
            else:
                self.replayable, self.pending = False, bytearray()
        if self.backend is None:  # the backend went away mid-request
            if not self.replayable:
                raise ConnectionResetError("backend closed during a request too big to replay")
            await self._connect()
            await self._send(bytes(self.pending))
        else:
            await self._send(data)

    async def _send(self, data: bytes) -> None:
        assert self.backend is not None
        _, writer = self.backend
        try:
            writer.write(data)
            await writer.drain()
        except OSError:
            pass  # the backend went away: its reader sees EOF and replays or closes

    async def _backend_to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                if self.awaiting and data[:10] in (b"HTTP/1.1 1", b"HTTP/1.0 1"):
                    # An interim answer (100 Continue): the request is being processed, so it is
                    # neither complete nor replayable.
                    self.replayable, self.pending = False, bytearray()
                else:
                    self.awaiting = False
                    self.pending = bytearray()
                self.writer.write(data)
                await self.writer.drain()
        except OSError:
            self.close()
            return
        # The backend closed. If this is still our backend and it never answered the client's
        # request, send the request to the current target; otherwise the exchange is over.
        async with self.io:
            if self.closed or self.backend is None or self.backend[1] is not writer:
                return
            if self.awaiting and self.replayable and self.pending:
                self.front.replays += 1
                self.pump = None  # this task ends here; _connect starts the next pump
                try:
                    await self._connect()
                except OSError:
                    self.close()
                    return
                await self._send(bytes(self.pending))
                return
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop_backend()
        self.writer.close()
        self.front.links.discard(self)


class Front:
    """The listener, the current target and the control socket."""

    def __init__(self, listen: str, target: str, control: str) -> None:
        self.listen = _split(listen)
        self.target = _split(target)
        self.control = control
        self.generation = 0
        self.links: set[Link] = set()
        self.replays = 0
        self.connections = 0
        self.started = time.time()
        self._server: asyncio.base_events.Server | None = None
        self._control: asyncio.base_events.Server | None = None
        self._stopped = asyncio.Event()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(self, reader, writer)
        self.links.add(link)
        self.connections += 1
        await link.run()

    async def _command(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                answer: dict[str, Any] = {"ok": False, "error": "expected a JSON object with an 'op'"}
            else:
                answer = await self._do(op, request)
            writer.write((json.dumps(answer) + "\n").encode())
            await writer.drain()
        finally:
            writer.close()

    async def _do(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "listen": "%s:%d" % self.listen,
                    "target": "%s:%d" % self.target, "generation": self.generation,
                    "open": len(self.links), "connections": self.connections, "replays": self.replays}
        if op == "switch":
            try:
                self.target = _split(str(request["target"]))
            except (KeyError, ValueError):
                return {"ok": False, "error": "switch needs a target HOST:PORT"}
            self.generation += 1
            log.info("switched to %s:%d (generation %d)", *self.target, self.generation)
            return {"ok": True, "target": "%s:%d" % self.target, "generation": self.generation}
        if op == "stop":
            asyncio.get_running_loop().call_soon(self._stopped.set)
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def serve(self, *, drain_s: float = 10.0) -> None:
        self._server = await asyncio.start_server(self._client, *self.listen, reuse_address=True, backlog=1024)
        if os.path.exists(self.control):
            os.unlink(self.control)
        self._control = await asyncio.start_unix_server(self._command, self.control)
        os.chmod(self.control, 0o600)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopped.set)
        log.info("front %s:%d -> %s:%d", *self.listen, *self.target)
        await self._stopped.wait()
        self._server.close()
        deadline = time.monotonic() + drain_s
        while self.links and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for link in list(self.links):
            link.close()
        self._control.close()
        try:
            os.unlink(self.control)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_oci.front", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT the deployment's clients use")
    parser.add_argument("--target", required=True, help="HOST:PORT of the current container")
    parser.add_argument("--control", required=True, help="path of the Unix control socket")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s front: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    front = Front(args.listen, args.target, args.control)
    try:
        asyncio.run(front.serve())
    except OSError as exc:
        log.error("cannot serve %s:%d: %s", *front.listen, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
