"""What the deployer remembers about a deployment, on disk, safe across concurrent CLI calls.

Layout under ``<home>/deployments/<name>/``:

``state.json``
    :class:`DeploymentState`, replaced atomically (write a temp file, fsync,
    ``os.replace``), so a reader never sees half a file and needs no lock.
``.lock``
    ``fcntl.flock`` target held by every command that changes the deployment
    (deploy, update, delete), so two of them never interleave.
``server-<version>.log``
    stdout and stderr of that version's server process (appended to on redeploys).
``listener.sock``, ``holder.log``
    the socket holder's Unix socket (servers take the listening socket there) and its log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import attrs

from mlops_core.errors import BackendUnavailableError, MlopsError

from ._proc import ProcessId

__all__ = ["ServerRecord", "DeploymentState", "StateDir", "STATE_FILE", "LOCK_FILE"]

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
_FORMAT = 1


@attrs.frozen
class ServerRecord:
    """One server process of a deployment: the version it serves and how to find it again."""

    model: str
    version: int
    pid: int
    start_time: int
    bundle_path: str
    log: str  # file name inside the deployment folder
    log_offset: int  # where this process's lines start in ``log`` (redeploys append)
    started_at: str

    @property
    def process(self) -> ProcessId:
        return ProcessId(self.pid, self.start_time)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ServerRecord":
        return cls(**{f.name: data[f.name] for f in attrs.fields(cls)})


@attrs.frozen
class DeploymentState:
    """The recorded (not observed) state of one deployment.

    ``phase`` is ``"starting"`` until the first version answered ready, then
    ``"running"``. ``pending`` is a version being started by an update in
    progress; ``retiring`` are replaced servers being stopped. Both are recorded
    *before* acting, so a command that dies half-way leaves nothing unaccounted
    for: the next command under the lock stops them.
    """

    name: str
    host: str
    port: int
    current: ServerRecord
    phase: str = "starting"
    previous_version: int | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)
    pending: ServerRecord | None = None
    retiring: tuple[ServerRecord, ...] = attrs.field(default=(), converter=tuple)
    created_at: str = ""
    updated_at: str = ""
    #: The socket holder that keeps the port's listening socket (None: a deployment made before holders).
    holder: ProcessId | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT, "name": self.name, "host": self.host, "port": self.port, "url": self.url,
            "phase": self.phase, "previous_version": self.previous_version, "options": dict(self.options),
            "current": self.current.to_dict(), "pending": self.pending.to_dict() if self.pending else None,
            "retiring": [r.to_dict() for r in self.retiring],
            "created_at": self.created_at, "updated_at": self.updated_at,
            "holder": attrs.asdict(self.holder) if self.holder else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DeploymentState":
        return cls(
            name=data["name"], host=data["host"], port=int(data["port"]),
            current=ServerRecord.from_dict(data["current"]), phase=data.get("phase", "running"),
            previous_version=data.get("previous_version"), options=data.get("options") or {},
            pending=ServerRecord.from_dict(data["pending"]) if data.get("pending") else None,
            retiring=[ServerRecord.from_dict(r) for r in data.get("retiring") or ()],
            created_at=data.get("created_at", ""), updated_at=data.get("updated_at", ""),
            holder=ProcessId(**data["holder"]) if data.get("holder") else None,
        )


class StateDir:
    """The folder of one deployment: its state file, lock and logs."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.path = root / name

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    def log_path(self, version: int) -> Path:
        return self.path / f"server-{version}.log"

    def read(self) -> DeploymentState | None:
        """The recorded state, or None when the deployment does not exist. Needs no lock."""
        try:
            raw = self.state_file.read_text()
        except FileNotFoundError:
            return None
        try:
            return DeploymentState.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise MlopsError(f"the state of deployment {self.name!r} is unreadable ({self.state_file}): {exc}",
                             hint="stop its server by hand if it still runs, then delete the folder") from None

    def write(self, state: DeploymentState) -> None:
        """Replace the state file atomically (callers hold the lock)."""
        self.path.mkdir(parents=True, exist_ok=True)
        data = json.dumps(state.to_dict(), indent=2, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove_state(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the deployment's lock (exclusive ``flock``), waiting up to ``timeout`` seconds for it.

        ``delete`` removes the folder, lock file included; a waiter that then gets the
        lock on the unlinked file notices (the path no longer names the file it
        locked) and locks the new one instead.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EACCES):
                            raise
                        if time.monotonic() >= deadline:
                            raise BackendUnavailableError(
                                f"deployment {self.name!r} is busy: another mlops command is changing it",
                                hint="wait for it to finish, then try again") from None
                        time.sleep(0.05)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path / LOCK_FILE).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield
                    return
            finally:
                os.close(fd)  # closing the descriptor releases the lock
