"""Listening sockets: bound by a server itself, or held by a socket holder and shared (rolling updates).

Two ways a server gets its listening socket:

* **Its own** (:func:`bind_listener`): bound and listened on by the server. When it
  stops, it first accepts every connection already queued on the socket (the kernel
  resets queued connections when the last descriptor of a listening socket closes),
  serves them while draining, then closes.
* **Held** (:func:`receive_listener`): a small *socket holder* process
  (``python -m mlops_server.holder``, see :mod:`.holder`) binds the port once and
  keeps the socket for a deployment's whole life; every server of the deployment
  asks the holder for it over a Unix socket (``SCM_RIGHTS``) once its models are
  loaded and warmed up. Old and new servers then accept from **one** accept queue:
  there is no second listener the kernel could queue a connection on, so a server
  that stops loses nothing that was queued (the socket stays open in the holder and
  in the new server), and a server that never becomes ready never had the socket.
  This is what systemd socket activation and gunicorn's re-exec do, with the
  socket fetched instead of inherited so that "holds the socket" keeps meaning
  "ready" to whoever watches the process.

A held socket is closed the same way as an own one (accept what is queued, close):
with a live holder the connections it takes are served by the old server while it
drains; were the holder gone, they would otherwise be reset.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import Any, Callable

log = logging.getLogger("mlops_server")

__all__ = ["Listener", "bind_listener", "receive_listener", "accept_pending", "unix_address", "HolderError",
           "LISTENER_REQUEST"]

#: What a server sends the holder to receive the listening socket.
LISTENER_REQUEST = b"listener\n"


class HolderError(OSError):
    """The socket holder could not be reached or did not hand over a listening socket."""


def accept_pending(sock: socket.socket, limit: int = 65536) -> list[socket.socket]:
    """Accept every connection already queued on the non-blocking listener ``sock``."""
    accepted: list[socket.socket] = []
    while len(accepted) < limit:
        try:
            conn, _addr = sock.accept()
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:  # EMFILE, ECONNABORTED...: keep what we have
            log.warning("accepting queued connections before closing the listener stopped: %s", exc)
            break
        conn.setblocking(False)
        accepted.append(conn)
    return accepted


class Listener:
    """A listening socket of this server, and how to stop listening without resetting a queued connection."""

    def __init__(self, sock: socket.socket, *, held: bool) -> None:
        self.sock = sock
        #: True when a socket holder keeps the socket open for the next server.
        self.held = held
        self.address, self.port = sock.getsockname()[:2]
        self._closed = False

    def close(self, close_listener: Callable[[], Any] | None = None) -> list[socket.socket]:
        """Accept what is queued, then close; returns the connections accepted last (idempotent).

        ``close_listener()`` must close the event loop's copy of the socket; it runs
        right after the queue was emptied.
        """
        if self._closed:
            return []
        self._closed = True
        pending = accept_pending(self.sock) if self.sock.fileno() != -1 else []
        if close_listener is not None:
            close_listener()
        if self.sock.fileno() != -1:
            self.sock.close()
        if pending:
            log.info("accepted %d queued connection(s) before closing the listener", len(pending))
        return pending


def bind_listener(host: str, port: int, *, reuse_port: bool = False, backlog: int = 2048) -> Listener:
    """Bind and listen on ``host:port`` (SO_REUSEPORT with ``reuse_port``); a non-blocking listener."""
    sock = _bind(host, port, reuse_port=reuse_port, backlog=backlog)
    sock.setblocking(False)
    return Listener(sock, held=False)


def _bind(host: str, port: int, *, reuse_port: bool, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not available on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class unix_address:  # noqa: N801 - used like a function: `with unix_address(path) as address:`
    """A name for the Unix socket at ``path`` that fits ``sun_path`` (108 bytes), as a context manager.

    Deployment folders can be deeper than that; on Linux the folder is opened and
    named through ``/proc/self/fd/N/``, elsewhere the path is used as it is.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) < 100 or not os.path.isdir("/proc/self/fd"):
            return self.path
        folder, name = os.path.split(self.path)
        self._fd = os.open(folder or ".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{name}"

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def receive_listener(path: str | os.PathLike[str], *, host: str, port: int, timeout: float = 10.0) -> Listener:
    """The listening socket the holder at ``path`` keeps; it must listen on ``host:port``.

    Raises :class:`HolderError` naming the holder's socket when it is not running,
    refuses, or hands over a socket on another address (a configuration mix-up).
    """
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        with unix_address(path) as address:
            client.connect(address)
        client.sendall(LISTENER_REQUEST)
        message, fds, _flags, _addr = socket.recv_fds(client, 1024, 1)
    except OSError as exc:
        raise HolderError(f"cannot receive the listening socket from the socket holder at {path}: {exc}") from None
    finally:
        client.close()
    if not fds:
        raise HolderError(f"the socket holder at {path} sent no socket: {message[:200]!r}")
    sock = socket.socket(fileno=fds[0])
    for extra in fds[1:]:
        os.close(extra)
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        bound_port = sock.getsockname()[1]
        if not listening or sock.type != socket.SOCK_STREAM or bound_port != port:
            raise HolderError(f"the socket holder at {path} handed over a socket on port {bound_port} "
                              f"(listening: {bool(listening)}), not a listener on {host}:{port}")
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return Listener(sock, held=True)


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end of a Unix socket (Linux), None if unknown."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None
    data = conn.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    return struct.unpack("3i", data)[1]
