"""The socket holder of a deployment: started at its first deploy, stopped when it is deleted.

The holder (``python -m mlops_server.holder``) binds the deployment's port once and
keeps the listening socket; every server of the deployment takes it with
``--listen-from <folder>/listener.sock`` once its model is warm. Old and new servers
accept from one queue that outlives both, so stopping the old one resets nothing
(see :mod:`mlops_server.listener`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping

from mlops_core.errors import MlopsError
from mlops_server.listener import unix_address

from . import _proc
from ._proc import ProcessId

__all__ = ["HOLDER_SOCKET", "HOLDER_LOG", "start_holder", "holder_answers", "stop_holder"]

HOLDER_SOCKET = "listener.sock"
HOLDER_LOG = "holder.log"
_EXIT_REASONS = {4: "the port or the holder's socket could not be bound", 2: "it refused its arguments"}


def holder_answers(socket_path: Path, timeout: float = 2.0) -> bool:
    """Whether a holder answers ``ping`` on ``socket_path``."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        with unix_address(socket_path) as address:
            client.connect(address)
        client.sendall(b"ping\n")
        reply = client.makefile("rb").readline()
        return bool(json.loads(reply or b"{}").get("ok"))
    except (OSError, ValueError):
        return False
    finally:
        client.close()


def start_holder(python: str, folder: Path, host: str, port: int, env: Mapping[str, str],
                 timeout: float) -> ProcessId:
    """Start the holder of ``host:port`` for the deployment in ``folder``; return once it answers."""
    from .deployer import tail_lines

    sock = folder / HOLDER_SOCKET
    log_path = folder / HOLDER_LOG
    cmd = [python, "-m", "mlops_server.holder", "--host", host, "--port", str(port), "--socket", str(sock)]
    folder.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                                env=dict(env), start_new_session=True, close_fds=True)
    ident = _proc.identify(proc.pid)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        status = proc.poll()
        if status is None and ident is not None and holder_answers(sock):
            return ident
        if status is not None or time.monotonic() >= deadline:
            if status is None:
                _proc.kill_group(ident or ProcessId(proc.pid, -1))
                proc.wait(5)
            why = (f"it exited with status {status}" + (f" ({_EXIT_REASONS[status]})" if status in _EXIT_REASONS
                                                        else "")
                   if status is not None else f"it did not answer within {timeout:g} s")
            raise MlopsError(f"the socket holder for {host}:{port} did not start: {why}.\n---- {log_path} ----\n"
                             + tail_lines(log_path, 10, start=offset).rstrip(),
                             hint="another program may use the port: choose another port option")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def stop_holder(holder: ProcessId | None, grace: float = 5.0) -> None:
    """Stop the holder (after the servers: it closes the port for good)."""
    if holder is not None:
        _proc.stop(holder, grace)
