"""Processes seen through ``/proc``: identity, liveness, listening sockets, and stopping them.

A pid alone does not identify a process across CLI calls (pids are reused), so a
server is recorded as ``(pid, start_time)`` where ``start_time`` is field 22 of
``/proc/<pid>/stat`` (clock ticks since boot); a pid whose start time differs is
someone else. Linux only, like SO_REUSEPORT load sharing the deployer relies on.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable

import attrs

__all__ = ["ProcessId", "read_stat", "identify", "is_running", "listening_ports", "group_listens",
           "terminate", "kill_group", "wait_gone", "stop"]

_PROC = Path("/proc")


@attrs.frozen
class ProcessId:
    """One process, unambiguously: its pid and its start time (ticks since boot)."""

    pid: int
    start_time: int


@attrs.frozen
class _Stat:
    state: str
    ppid: int
    pgid: int
    start_time: int


def read_stat(pid: int) -> _Stat | None:
    """Parse ``/proc/<pid>/stat``; None when the process does not exist."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    return _Stat(state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]), start_time=int(fields[19]))


def identify(pid: int) -> ProcessId | None:
    stat = read_stat(pid)
    return None if stat is None else ProcessId(pid, stat.start_time)


def _reap(pid: int) -> None:
    # A server started by *this* process stays a zombie (still has a /proc entry) until
    # waited for; reap it so it reads as gone. Not our child: nothing to do.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_running(proc: ProcessId, *, reap: bool = True) -> tuple[bool, str]:
    """Whether ``proc`` is alive (not a zombie, same start time), and if not, why.

    ``reap=False`` when the caller holds the ``Popen`` and wants its exit status.
    """
    if reap:
        _reap(proc.pid)
    stat = read_stat(proc.pid)
    if stat is None:
        return False, f"server process {proc.pid} has exited"
    if stat.start_time != proc.start_time:
        return False, f"server process {proc.pid} has exited (the pid now belongs to another process)"
    if stat.state in ("Z", "X", "x"):
        return False, f"server process {proc.pid} has exited"
    return True, ""


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None and stat.pgid == pgid and stat.state not in ("Z", "X", "x"):
                members.append(int(entry.name))
    return members


def _socket_inodes(pids: Iterable[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            fds = list((_PROC / str(pid) / "fd").iterdir())
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def listening_ports(inodes: set[str]) -> set[int] | None:
    """TCP ports in LISTEN state among the sockets ``inodes`` (IPv4 and IPv6); None if /proc cannot tell."""
    ports = set()
    readable = False
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            cols = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports if readable else None


def group_listens(leader: ProcessId, port: int, *, reap: bool = True) -> bool | None:
    """Whether a process of ``leader``'s process group has a socket listening on ``port``.

    The server binds only after its models loaded and answered warm-up when run
    with ``--reuse-port``, so this is how a redeploy of the *same* version (which
    the old process answers for too) knows that the new process is ready. None
    when ``/proc/net`` is not readable (then only the HTTP probe decides).
    """
    if not is_running(leader, reap=reap)[0]:
        return False
    ports = listening_ports(_socket_inodes(_group_members(leader.pid)))
    return None if ports is None else port in ports


def terminate(proc: ProcessId) -> bool:
    """SIGTERM ``proc`` (the server drains, then exits) if it is still the same process."""
    if not is_running(proc)[0]:
        return False
    try:
        os.kill(proc.pid, signal.SIGTERM)
        return True
    except ProcessLookupError:
        return False


def kill_group(proc: ProcessId) -> None:
    """SIGKILL ``proc`` and every process of its group (worker processes), if it is still ours."""
    if not is_running(proc)[0]:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(proc: ProcessId, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while is_running(proc)[0]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return True


def stop(proc: ProcessId, grace: float) -> str:
    """SIGTERM, wait up to ``grace`` seconds for the drain, then SIGKILL the group. Returns what happened."""
    if not terminate(proc):
        return "already gone"
    if wait_gone(proc, grace):
        return "drained"
    kill_group(proc)
    wait_gone(proc, 5.0)
    return f"killed after {grace:g} s"
