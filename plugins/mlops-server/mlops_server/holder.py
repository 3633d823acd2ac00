"""The socket holder: binds a deployment's port once and hands the listening socket to each server.

    python -m mlops_server.holder --host 127.0.0.1 --port 8100 --socket /path/to/listener.sock

Started once per deployment (by the process deployer) and kept for its whole life.
It does nothing with the listening socket but keep it open, so the kernel never
resets a queued connection while servers come and go (see :mod:`.listener`).
Requests on the Unix socket at ``--socket`` (file mode 0600, peers of another user
refused), one line each:

``listener``  the reply carries the listening socket (``SCM_RIGHTS``)
``ping``      ``{"ok": true, "pid": N, "address": "HOST:PORT"}``
``stop``      close everything and exit 0 (SIGTERM does the same)

Exit statuses: 0 stopped, 4 the port or the Unix socket could not be bound.
The holder imports nothing beyond the standard library and uses no CPU while idle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from typing import Sequence

from .listener import LISTENER_REQUEST, _bind, peer_uid, unix_address

__all__ = ["main", "serve_holder"]

EXIT_BIND_FAILED = 4


def _unix_server(path: str) -> socket.socket:
    """Listen on a Unix socket at ``path``; the path appears only once it accepts (bound aside, renamed)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The staging name is longer than ``path``: it needs its own short name, or a path
        # just under sun_path's limit binds and its staging twin does not.
        with unix_address(f"{path}.{os.getpid()}.tmp") as staging, unix_address(path) as address:
            old = os.umask(0o177)
            try:
                server.bind(staging)
            finally:
                os.umask(old)
            server.listen(64)
            # Replaces a socket file a killed holder left (the deployer holds the deployment's lock).
            os.replace(staging, address)
    except BaseException:
        server.close()
        raise
    return server


def serve_holder(listening: socket.socket, control: socket.socket, out=sys.stderr) -> int:
    """Answer requests on ``control`` until ``stop`` or SIGTERM; returns the exit status."""
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        control.close()  # wakes accept() with an error

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    address = "%s:%s" % listening.getsockname()[:2]
    while not stopping:
        try:
            conn, _ = control.accept()
        except OSError:
            break
        with conn:
            conn.settimeout(5.0)
            try:
                if peer_uid(conn) not in (None, os.getuid()):
                    conn.sendall(b'{"ok": false, "error": "another user"}\n')
                    continue
                request = conn.recv(64)
                if request == LISTENER_REQUEST:
                    socket.send_fds(conn, [b'{"ok": true}\n'], [listening.fileno()])
                elif request == b"ping\n":
                    conn.sendall(json.dumps({"ok": True, "pid": os.getpid(), "address": address}).encode() + b"\n")
                elif request == b"stop\n":
                    conn.sendall(b'{"ok": true}\n')
                    stopping = True
                else:
                    conn.sendall(b'{"ok": false, "error": "unknown request"}\n')
            except OSError as exc:  # one client that hung up must not stop the holder
                print(f"mlops-server holder: a request failed: {exc}", file=out, flush=True)
    listening.close()
    print(f"mlops-server holder {os.getpid()} stopped; {address} is closed", file=out, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_server.holder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", required=True, help="path of the Unix socket servers ask for the listener")
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args(argv)
    try:
        # SO_REUSEPORT: a holder started again while an older server still listens (its holder
        # was killed) can join that server's port instead of failing.
        listening = _bind(args.host, args.port, reuse_port=hasattr(socket, "SO_REUSEPORT"), backlog=args.backlog)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return EXIT_BIND_FAILED
    try:
        control = _unix_server(args.socket)
    except OSError as exc:
        listening.close()
        print(f"error: cannot create the holder socket {args.socket}: {exc}", file=sys.stderr, flush=True)
        return EXIT_BIND_FAILED
    print(f"mlops-server holder {os.getpid()} keeps {args.host}:{args.port}; servers ask {args.socket}",
          file=sys.stderr, flush=True)
    try:
        return serve_holder(listening, control)
    finally:
        control.close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
