"""Hand a shared port from one server process to the next without resetting a connection (Linux).

A rolling update runs the new server next to the old one on the same address and
port (SO_REUSEPORT), then stops the old one. Two things would otherwise lose
requests, even though both servers are healthy:

1. **The old listener's accept queue.** The kernel spreads new connections over
   every listener of the *reuseport group* (same address, port and user). A
   connection whose handshake the kernel completed is queued on one listener until
   that process accepts it; when a listener closes, its queued connections (and
   half-open ones) are reset. So the old server must receive nothing new before it
   closes, and must accept what is already queued.
2. **Idle keep-alive connections** (handled in :mod:`mlops_server.server`).

What this module does:

* **Steering** (:func:`bind_listener`). Every listener of the group is recorded,
  in the kernel's order, in a small per-port state file (under the temp folder,
  per user), updated under an ``flock`` by every mlops server that joins or leaves
  the group. Knowing the order, a joining server attaches a classic BPF program
  to the group (``SO_ATTACH_REUSEPORT_CBPF``): it returns the index of one
  listener of the *newest generation* (picked at random when that generation has
  several workers). From then on the older listeners get no new connection.
  A generation is one server (or one ``--workers N`` supervisor and its workers);
  the workers of a generation share connections, so ``--workers`` keeps working.
  The kernel keeps the group as a dense array: a new listener is appended, a
  closing one is replaced by the last one. The program is recomputed on every
  change; an index that the kernel no longer has falls back to its normal hash.
* **Leaving** (:meth:`Listener.close`). Under the same lock the closing server
  attaches a program that never picks its own listener, before or after it leaves
  (see :meth:`Listener._steer_away`), accepts every connection still queued on it
  (it answers them while draining), and closes the listener.

The state file is only a cache of what the kernel does: before trusting it, the
recorded listeners are checked against ``/proc/net/tcp`` (or ``tcp6``). If they
differ (a server was killed, a foreign process shares the port), nobody can know
the kernel's order, so connections are spread over every listener (the kernel's
own behaviour, with a log line) until the group empties.

Elsewhere (no Linux, no ``/proc``, BPF refused), listeners work as before:
SO_REUSEPORT hashing, and still the accept-before-close drain.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

log = logging.getLogger("mlops_server")

__all__ = ["Listener", "bind_listener", "steering_supported", "steering_program", "kernel_leave",
           "listening_inodes", "accept_pending"]

#: include/uapi/asm-generic/socket.h
SO_ATTACH_REUSEPORT_CBPF = 51
# Classic BPF opcodes (include/uapi/linux/filter.h, bpf_common.h).
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_ALU_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_RET_A = 0x16  # BPF_RET | BPF_A
_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RANDOM: a random u32
#: How long a joining or leaving server waits for another one holding the group lock.
LOCK_TIMEOUT_S = 5.0

Instruction = tuple[int, int, int, int]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def steering_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT") and os.path.exists("/proc/net/tcp")


# ---------------------------------------------------------------- pure parts
def steering_program(indices: Sequence[int], group_size: int) -> list[Instruction]:
    """A reuseport program returning one of ``indices`` (uniformly at random if several).

    ``indices == range(group_size)`` gives the plain "any listener" program.
    """
    if not indices:
        raise ValueError("no listener to steer to")
    if len(indices) == 1:
        return [(_RET_K, 0, 0, indices[0])]
    program = [(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_ALU_MOD_K, 0, 0, len(indices))]
    if list(indices) == list(range(group_size)):
        return [*program, (_RET_A, 0, 0, 0)]
    for j, index in enumerate(indices[:-1]):
        program += [(_JEQ_K, 0, 1, j), (_RET_K, 0, 0, index)]  # A == j ? return index : next test
    return [*program, (_RET_K, 0, 0, indices[-1])]


def kernel_leave(socks: list[dict[str, Any]], inode: int) -> list[dict[str, Any]]:
    """The group after ``inode`` leaves, as the kernel does it: the last listener takes its slot."""
    out = list(socks)
    i = next(i for i, s in enumerate(out) if s["inode"] == inode)
    out[i] = out[-1]
    out.pop()
    return out


def newest_generation_indices(socks: Sequence[dict[str, Any]]) -> list[int]:
    newest = max(socks, key=lambda s: s["seq"])["gen"]
    return [i for i, s in enumerate(socks) if s["gen"] == newest]


def _proc_address(text: str) -> bytes:
    # /proc/net/tcp prints each 32-bit word of the address with %08X, in host byte order.
    return b"".join(int(text[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(text), 8))


def listening_inodes(family: int, address: str, port: int) -> set[int] | None:
    """Inodes of TCP listeners on exactly ``address:port`` (this network namespace); None if unknown."""
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    want = socket.inet_pton(family, address)
    try:
        with open(table) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    found = set()
    for line in lines:
        cols = line.split()
        if len(cols) < 10 or cols[3] != "0A":
            continue
        addr, _, hexport = cols[1].partition(":")
        if int(hexport, 16) == port and _proc_address(addr) == want:
            found.add(int(cols[9]))
    return found


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


# ---------------------------------------------------------------- kernel and state
def _attach(sock: socket.socket, program: list[Instruction]) -> None:
    filters = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
    fprog = _SockFprog(len(program), filters)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def _state_path(family: int, address: str, port: int) -> Path:
    folder = Path(tempfile.gettempdir()) / f"mlops-server-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    fam = "inet6" if family == socket.AF_INET6 else "inet"
    return folder / f"reuseport-{fam}-{address.replace(':', '_')}-{port}.json"


class _Unavailable(Exception):
    pass


@contextlib.contextmanager
def _group_state(path: Path) -> Iterator[dict[str, Any]]:
    """The group's recorded state, under an exclusive flock; written back on a clean exit."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _Unavailable(f"cannot open {path}: {exc}") from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _Unavailable(f"{path} stayed locked for {LOCK_TIMEOUT_S:g} s") from None
                time.sleep(0.005)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            state = json.loads(raw) if raw.strip() else {}
        except ValueError:
            state = {}
        state.setdefault("socks", [])
        state.setdefault("seq", 0)
        state.setdefault("valid", True)
        state.setdefault("steered", False)
        yield state
        data = json.dumps(state).encode()
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)
    finally:
        os.close(fd)  # releases the flock


class Listener:
    """A listening socket, plus what it takes to leave its reuseport group without losing a connection."""

    def __init__(self, sock: socket.socket, *, reuse_port: bool, generation: str) -> None:
        self.sock = sock
        self.reuse_port = reuse_port
        self.generation = generation
        self.family = sock.family
        self.address, self.port = sock.getsockname()[:2]
        self.inode = os.fstat(sock.fileno()).st_ino
        self._path: Path | None = None
        self._closed = False
        #: "steering" (this module manages the group), "hash" (kernel default), or "single" (no reuseport)
        self.mode = "single"

    # ------------------------------------------------------------ join
    def _join(self, backlog: int) -> None:
        """listen() and record this listener in the group (called before the socket listens)."""
        if not (self.reuse_port and steering_supported()):
            self.sock.listen(backlog)
            self.mode = "hash" if self.reuse_port else "single"
            return
        try:
            self._path = _state_path(self.family, self.address, self.port)
            with _group_state(self._path) as state:
                self.sock.listen(backlog)
                state["seq"] += 1
                me = {"inode": self.inode, "gen": self.generation, "pid": os.getpid(), "seq": state["seq"]}
                actual = listening_inodes(self.family, self.address, self.port)
                known = {s["inode"] for s in state["socks"]}
                if actual == {self.inode}:  # a new group: we are alone in it
                    state.update(socks=[me], valid=True, steered=False)
                elif state["valid"] and actual == known | {self.inode} and self.inode not in known:
                    state["socks"].append(me)
                else:
                    state.update(socks=[], valid=False)
                self._apply(state, self.sock, len(actual or ()))
            self.mode = "steering"
        except _Unavailable as exc:
            log.warning("connection hand-over is off for %s:%s (%s); new connections are spread over every "
                        "listener of the port", self.address, self.port, exc)
            if not self._listening():
                self.sock.listen(backlog)
            self.mode = "hash"

    def _listening(self) -> bool:
        return bool(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))

    def _apply(self, state: dict[str, Any], member: socket.socket, size: int) -> None:
        """Attach the program the recorded group calls for, through ``member`` (a listener of the group)."""
        socks = state["socks"]
        try:
            if not state["valid"]:
                if size:
                    _attach(member, steering_program(range(size), size))
                    state["steered"] = True
                log.warning("the listeners on %s:%s are not all known (a server was killed, or another program "
                            "shares the port): new connections go to any of the %d listeners until they all close",
                            self.address, self.port, size)
                return
            target = newest_generation_indices(socks)
            if len(target) == len(socks) and not state["steered"]:
                return  # one generation and no program yet: the kernel's hash is what we want
            _attach(member, steering_program(target, len(socks)))
            state["steered"] = True
            if len(target) < len(socks):
                log.info("new connections on %s:%s now go to generation %s (listener(s) %s of %d)",
                         self.address, self.port, socks[target[0]]["gen"], target, len(socks))
        except OSError as exc:  # BPF refused (old kernel, seccomp): the kernel's hash, as without us
            log.warning("cannot steer new connections on %s:%s (%s); they are spread over every listener",
                        self.address, self.port, exc)

    # ------------------------------------------------------------ leave
    def close(self, close_listener: Any = None) -> list[socket.socket]:
        """Stop listening without resetting a queued connection; returns the connections accepted last.

        ``close_listener()`` must close the listening socket (the event loop owns it);
        it runs under the group lock, right after the queue was emptied. Idempotent.
        """
        if self._closed:
            return []
        self._closed = True
        if self.mode != "steering" or self._path is None:
            return self._drain_and_close(close_listener)
        try:
            with _group_state(self._path) as state:
                self._steer_away(state)
                pending = self._drain_and_close(close_listener)
                self._leave(state)
            return pending
        except _Unavailable as exc:
            log.warning("leaving the listener group of %s:%s without its lock: %s", self.address, self.port, exc)
            return self._drain_and_close(close_listener)

    def _steer_away(self, state: dict[str, Any]) -> None:
        """Before closing: a program that never picks this listener, right before *and* after it leaves.

        It picks the newest generation among the listeners that stay, by their index
        now. When this listener closes, the kernel moves the last listener into its
        slot, so that one's old index falls out of range (the kernel then hashes over
        the listeners left) and every other index still names the same listener. The
        program stays correct afterwards; with several workers per generation the
        spread may be uneven until the group changes again.
        """
        socks = state["socks"]
        if not (state["valid"] and state["steered"]) or self.inode not in {s["inode"] for s in socks}:
            return
        stay = [(i, s) for i, s in enumerate(socks) if s["inode"] != self.inode]
        if not stay:
            return
        newest = max((s for _, s in stay), key=lambda s: s["seq"])["gen"]
        picks = [i for i, s in stay if s["gen"] == newest]
        try:
            _attach(self.sock, steering_program(picks, len(socks)))
        except OSError as exc:
            log.warning("cannot steer new connections away from the closing listener on %s:%s: %s",
                        self.address, self.port, exc)

    def _drain_and_close(self, close_listener: Any) -> list[socket.socket]:
        pending = accept_pending(self.sock) if self.sock.fileno() != -1 else []
        if close_listener is not None:
            close_listener()
        if self.sock.fileno() != -1:
            self.sock.close()
        if pending:
            log.info("accepted %d queued connection(s) before closing the listener", len(pending))
        return pending

    def _leave(self, state: dict[str, Any]) -> None:
        actual = listening_inodes(self.family, self.address, self.port)
        if not actual:
            state.update(socks=[], valid=True, steered=False)  # the group is gone; the next one starts afresh
            return
        known = {s["inode"] for s in state["socks"]}
        if state["valid"] and self.inode in known:
            state["socks"] = kernel_leave(state["socks"], self.inode)
            if {s["inode"] for s in state["socks"]} != actual:
                state.update(socks=[], valid=False)
        else:
            state.update(socks=[], valid=False)


def bind_listener(host: str, port: int, *, reuse_port: bool, generation: str | None = None,
                  backlog: int = 2048) -> Listener:
    """Bind and listen on ``host:port``; with ``reuse_port``, join the port's group and take its new connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not available on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        listener = Listener(sock, reuse_port=reuse_port, generation=generation or f"{os.getpid()}-{time.time_ns()}")
        listener._join(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return listener
