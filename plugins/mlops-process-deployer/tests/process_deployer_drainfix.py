"""The server change a rolling update needs to lose no request, as a runnable reference.

Run as ``python process_deployer_drainfix.py <python -m mlops_server arguments>``:
it applies two changes to ``mlops_server.server`` and then runs the server as usual.
The rolling-update test runs the load once against the installed server and once
through this file, so the figures show both the problem and the fix. Delete this
file once mlops-server ships the same behaviour (``mlops_server.server.GRACEFUL_HANDOVER``).

1. Keep-alive connections drain instead of being cut (HTTP level).
   uvicorn's shutdown closes every *idle* keep-alive connection at once. A client
   that sends its next request at that moment sees the server's FIN cross its
   request: BrokenPipe / ConnectionReset / RemoteDisconnected, and a POST cannot be
   retried blindly. Instead, once draining starts every response carries
   ``Connection: close`` (uvicorn closes the connection after writing it), and an
   idle connection gets a grace period (the keep-alive timeout) to send one more
   request, which is answered, before the remaining idle ones are closed.

2. The new server takes new connections before the old one closes (TCP level).
   With SO_REUSEPORT the kernel hashes each new connection to one listener of the
   group. When the old server closes its listener, connections already queued on
   it (handshake done, not yet accepted) are reset. The new server therefore
   attaches a classic-BPF reuseport program that picks its own socket (its index in
   the group = listeners already on that address and port when it bound), so the
   old listener receives nothing more and its queue is empty when it closes. (With
   ``net.ipv4.tcp_migrate_req=1``, Linux >= 5.14, the kernel would migrate the
   queue instead; that is a host setting, so the server must not rely on it.)
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import sys
from typing import Any

log = logging.getLogger("mlops_server")

SO_ATTACH_REUSEPORT_CBPF = 51  # include/uapi/asm-generic/socket.h
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant k


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def listeners_on(host: str, port: int) -> int:
    """TCP sockets in LISTEN state on exactly ``host:port`` (IPv4 only here; the server binds 127.0.0.1)."""
    addr = socket.inet_aton(host)[::-1].hex().upper() + f":{port:04X}"
    count = 0
    try:
        lines = open("/proc/net/tcp").read().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        cols = line.split()
        if cols[3] == "0A" and cols[1] == addr:
            count += 1
    return count


def steer_new_connections_to(sock: socket.socket, index: int) -> None:
    """Make the reuseport group hand every new connection to the socket at ``index``.

    When sockets leave the group an out-of-range index falls back to the normal hash,
    so the program needs no cleanup; the next server to bind replaces it.
    """
    program = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, index))
    fprog = _SockFprog(1, program)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def _idle(connection: Any) -> bool:
    cycle = getattr(connection, "cycle", None)
    return cycle is None or cycle.response_complete


def install() -> None:
    import mlops_server.server as server_module

    original_server = server_module._uvicorn_server
    original_bind = server_module.bind_socket

    def uvicorn_server(app: Any, config: Any) -> Any:
        server = original_server(app, config)
        grace = min(config.keep_alive, config.drain_timeout)

        class DrainingServer(type(server)):  # type: ignore[misc]
            async def shutdown(self, sockets: Any = None) -> None:
                for listener in self.servers:
                    listener.close()
                for sock in sockets or []:
                    sock.close()
                state = self.server_state
                # Every response from now on says "Connection: close" (uvicorn then closes after it).
                state.default_headers = [*state.default_headers, (b"connection", b"close")]
                for connection in list(state.connections):
                    if not _idle(connection):
                        connection.cycle.keep_alive = False
                loop = asyncio.get_running_loop()
                deadline = loop.time() + grace
                while loop.time() < deadline and any(_idle(c) for c in state.connections):
                    await asyncio.sleep(0.02)
                await super().shutdown(sockets=sockets)  # closes what is still idle, waits for the rest

        server.__class__ = DrainingServer
        return server

    def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
        index = listeners_on(host, port) if reuse_port else 0
        sock = original_bind(host, port, reuse_port=reuse_port)
        if reuse_port:
            steer_new_connections_to(sock, index)
            log.info("new connections on %s:%d now come to this process (reuseport index %d)", host, port, index)
        return sock

    server_module._uvicorn_server = uvicorn_server
    server_module.bind_socket = bind_socket


if __name__ == "__main__":
    install()
    from mlops_server.cli import main

    sys.exit(main(sys.argv[1:]))
