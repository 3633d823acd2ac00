"""``ProcessDeployer``: each deployment is a detached ``python -m mlops_server`` process on a stable port.

Each deployment has a *socket holder* (``python -m mlops_server.holder``, started at
its first deploy, stopped when it is deleted): the only process that binds the
deployment's port. It keeps the listening socket for the deployment's whole life
and hands it to every server (``--listen-from``), so all servers of a deployment
accept from one queue that no server's exit can reset.

Rolling update (deploying a name that exists), with no failed request:

1. start the new version with ``--listen-from``; the server loads and warms its
   model *before* it takes the socket from the holder, so once it holds the
   socket it is ready; from then on old and new accept from the same queue;
2. wait until the new process is alive, holds a listening socket on the port
   (seen in ``/proc``), and ``/v2/models/{model}/versions/{new}/ready`` answers
   200 on a fresh connection (the old process answers 404 for a version it does
   not serve);
3. record the switch in ``state.json``, then SIGTERM the old process: it stops
   accepting (taking what is queued first), drains in-flight requests and exits;
   the queue stays open in the holder and the new server. SIGKILL only after
   ``stop_timeout``.

A new version that fails (its process exits, or it is not ready in time) is
stopped and the old one keeps serving untouched; the error carries the last lines
of the new server's log. Everything that changes a deployment holds its lock, and
every process is recorded in the state file *before* the deployer acts on it, so
a command killed half-way leaves nothing that the next one cannot clean up.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from mlops_core.entities import Deployment, DeploymentSpec, utcnow
from mlops_core.errors import AlreadyExistsError, InvalidInputError, MlopsError, NotFoundError
from mlops_core.interfaces import BackendContext, Deployer

from . import _proc
from ._holder import HOLDER_SOCKET, start_holder, stop_holder
from ._state import DeploymentState, ServerRecord, StateDir
from .config import SERVER_OPTIONS, ProcessDeployerConfig

__all__ = ["ProcessDeployer", "tail_lines"]

log = logging.getLogger("mlops_process_deployer")

#: How long a command waits for another one changing the same deployment.
_LOCK_TIMEOUT = 600.0
#: Exit statuses of ``python -m mlops_server`` (see mlops_server.server).
_EXIT_REASONS = {3: "the model failed to load or to answer its warm-up prediction",
                 4: "the server could not listen on its port", 2: "the server refused its arguments",
                 5: "a monitor configured in the stack could not be started"}
_LOG_LINES_IN_ERRORS = 25


def tail_lines(path: Path, count: int, *, start: int = 0) -> str:
    """The last ``count`` lines of ``path`` (only bytes from ``start`` on), read from the end."""
    if count <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            pos, data = end, b""
            while pos > start and data.count(b"\n") <= count:
                step = min(64 * 1024, pos - start)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines(keepends=True)
    return "".join(lines[-count:])


def _now() -> str:
    return utcnow().isoformat()


def _parse_time(text: str) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return utcnow()


def _probe(host: str, port: int, path: str, timeout: float) -> int | None:
    """GET ``path`` on a *new* connection (closed afterwards); the status, or None if unreachable."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _StartFailed(MlopsError):
    pass


class ProcessDeployer(Deployer):
    """Runs deployments as local server processes; state under ``<home>/deployments``."""

    requires_image = False

    def __init__(self, config: ProcessDeployerConfig | None = None, *, home: Path | str,
                 backend_name: str = "process", stack_file: Path | str | None = None) -> None:
        self.config = config or ProcessDeployerConfig()
        self.home = Path(home).absolute()
        self.root = self.home / "deployments"
        self.backend_name = backend_name
        #: The stack file servers read (MLOPS_CONFIG), so they build the same stack's monitors.
        self.stack_file = Path(stack_file).absolute() if stack_file else None

    @classmethod
    def from_config(cls, config: ProcessDeployerConfig, context: BackendContext) -> "ProcessDeployer":
        return cls(config, home=context.home, backend_name=context.name, stack_file=context.config_file)

    def check(self) -> str:
        if not Path("/proc/self/stat").exists():
            raise MlopsError("the process deployer needs Linux /proc to follow its server processes",
                             hint="use the container deployer on this platform")
        try:
            import mlops_server  # noqa: F401
        except ImportError:
            raise MlopsError("mlops-server is not installed", hint="pip install mlops-server") from None
        return f"servers run with {self.config.python}; state under {self.root}"

    def programs(self) -> list[list[str]]:
        """The server command line every deployment runs (``BUNDLE``, ``MODEL``... filled in per deployment)."""
        return [[self.config.python, "-m", "mlops_server", "--bundle", "BUNDLE", "--name", "MODEL",
                 "--model-version", "VERSION", "--host", self.config.host, "--port", "PORT", "--listen-from",
                 f"DEPLOYMENT_FOLDER/{HOLDER_SOCKET}", *self.config.server_args],
                [self.config.python, "-m", "mlops_server.holder", "--host", self.config.host, "--port", "PORT",
                 "--socket", f"DEPLOYMENT_FOLDER/{HOLDER_SOCKET}"]]

    # ------------------------------------------------------------ contract
    def deploy(self, spec: DeploymentSpec, *, wait: float = 60.0) -> Deployment:
        if not spec.bundle_path or not Path(spec.bundle_path).is_dir():
            raise InvalidInputError(f"deployment {spec.name!r} needs a local bundle folder, got {spec.bundle_path!r}",
                                    hint="deploy through mlops_core.deploy / `mlops deploy`, which fetch and verify it")
        flags = self._server_flags(spec.options)
        timeout = wait if wait and wait > 0 else self.config.startup_timeout
        folder = StateDir(self.root, spec.name)
        with folder.locked(_LOCK_TIMEOUT):
            state = folder.read()
            if state is not None:
                state = self._finish_leftovers(folder, state)
            if state is None:
                state = self._first_deploy(folder, spec, flags, timeout)
            else:
                state = self._update(folder, state, spec, flags, timeout)
        return self._observe(state)

    def get(self, name: str) -> Deployment:
        state = StateDir(self.root, name).read()
        if state is None:
            raise NotFoundError(f"no deployment named {name!r}", hint="list them with `mlops deployments list`")
        return self._observe(state)

    def list(self) -> Sequence[Deployment]:
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            state = StateDir(self.root, folder.name).read()
            if state is not None:  # a folder without state: a failed first deploy's log, or being deleted
                found.append(self._observe(state))
        return found

    def logs(self, name: str, *, tail: int = 100) -> str:
        folder = StateDir(self.root, name)
        state = folder.read()
        if state is None:
            raise NotFoundError(f"no deployment named {name!r}", hint="list them with `mlops deployments list`")
        return tail_lines(folder.path / state.current.log, tail)

    def delete(self, name: str) -> None:
        folder = StateDir(self.root, name)
        with folder.locked(_LOCK_TIMEOUT):
            state = folder.read()
            if state is None:
                raise NotFoundError(f"no deployment named {name!r}", hint="list them with `mlops deployments list`")
            servers = [state.current, *state.retiring] + ([state.pending] if state.pending else [])
            self._stop_all(servers)
            stop_holder(state.holder)
            folder.remove_state()
            shutil.rmtree(folder.path, ignore_errors=True)

    # ------------------------------------------------------------- workflow
    def _first_deploy(self, folder: StateDir, spec: DeploymentSpec, flags: list[str],
                      timeout: float) -> DeploymentState:
        port = self._choose_port(spec.options)
        holder = start_holder(self.config.python, folder.path, self.config.host, port, self._env(), timeout)
        try:
            proc, record = self._start(folder, spec, port, flags)
        except BaseException:
            stop_holder(holder)
            raise
        now = _now()
        state = DeploymentState(name=spec.name, host=self.config.host, port=port, current=record, phase="starting",
                                options=dict(spec.options), created_at=now, updated_at=now, holder=holder)
        folder.write(state)
        try:
            self._wait_ready(folder, proc, record, port, timeout)
        except BaseException:
            self._discard(proc, record)
            stop_holder(holder)
            folder.remove_state()  # the logs stay, for a look afterwards
            raise
        state = attrs.evolve(state, phase="running", updated_at=_now())
        folder.write(state)
        return state

    def _update(self, folder: StateDir, state: DeploymentState, spec: DeploymentSpec, flags: list[str],
                timeout: float) -> DeploymentState:
        if "port" in spec.options and int(spec.options["port"]) != state.port:
            raise InvalidInputError(
                f"deployment {spec.name!r} listens on port {state.port}; its port never changes",
                hint="drop the port option to update it, or delete the deployment and deploy it again")
        old = state.current
        state = self._ensure_holder(folder, state, timeout)
        proc, record = self._start(folder, spec, state.port, flags)
        state = attrs.evolve(state, pending=record, updated_at=_now())
        folder.write(state)
        try:
            self._wait_ready(folder, proc, record, state.port, timeout, previous=old)
        except BaseException:
            self._discard(proc, record)
            folder.write(attrs.evolve(state, pending=None))
            raise
        same = (old.model, old.version) == (record.model, record.version)
        state = attrs.evolve(
            state, current=record, pending=None, phase="running", retiring=(*state.retiring, old),
            previous_version=state.previous_version if same else old.version,
            options=dict(spec.options), updated_at=_now())
        folder.write(state)
        # Traffic switches here: the old server stops accepting from the shared queue (taking
        # what is queued first), so new connections go to the new one, and drains.
        _proc.stop(old.process, self.config.stop_timeout)
        state = attrs.evolve(state, retiring=tuple(r for r in state.retiring if r != old))
        folder.write(state)
        return state

    def _ensure_holder(self, folder: StateDir, state: DeploymentState, timeout: float) -> DeploymentState:
        """A running holder for ``state``'s port: the recorded one, or a new one if it is gone.

        A new holder joins the port with SO_REUSEPORT next to the socket the current
        server still holds (a deployment made before holders existed, or whose holder
        was killed). For this one update the kernel spreads new connections over both
        sockets, and a connection queued on the old one in the instant it closes is
        reset; from then on the port has one queue again.
        """
        if state.holder is not None and _proc.is_running(state.holder)[0]:
            return state
        log.warning("deployment %r has no running socket holder; starting one on port %s (connections queued on "
                    "the old server's socket during this update may be reset)", state.name, state.port)
        holder = start_holder(self.config.python, folder.path, state.host, state.port, self._env(), timeout)
        state = attrs.evolve(state, holder=holder, updated_at=_now())
        folder.write(state)
        return state

    def _finish_leftovers(self, folder: StateDir, state: DeploymentState) -> DeploymentState:
        """Stop what an interrupted command left behind (we hold the lock, so nobody is using it)."""
        if not state.pending and not state.retiring:
            return state
        self._stop_all([*state.retiring] + ([state.pending] if state.pending else []))
        state = attrs.evolve(state, pending=None, retiring=())
        folder.write(state)
        return state

    # ------------------------------------------------------------ processes
    def _server_flags(self, options: Mapping[str, Any]) -> list[str]:
        flags: list[str] = []
        for key, value in sorted(options.items()):
            if key == "port":
                try:
                    port = int(value)
                except (TypeError, ValueError):
                    raise InvalidInputError(f"option port must be a number, got {value!r}") from None
                if not 1 <= port <= 65535:
                    raise InvalidInputError(f"option port must be 1-65535, got {port}")
                continue
            flag = SERVER_OPTIONS.get(key.replace("-", "_"))
            if flag is None:
                raise InvalidInputError(f"unknown option {key!r} for the process deployer",
                                        hint="valid options: port, " + ", ".join(sorted(SERVER_OPTIONS)))
            flags += [flag, str(value)]
        return flags

    def _choose_port(self, options: Mapping[str, Any]) -> int:
        host = self.config.host
        if "port" in options:
            port = int(options["port"])
            if not _port_is_free(host, port):
                raise AlreadyExistsError(f"port {port} on {host} is in use", hint="choose another port option")
            return port
        low, high = self.config.port
        if low == 0:
            return _free_port(host)
        taken = {d.port for d in self._states()}
        for port in range(low, high + 1):
            if port not in taken and _port_is_free(host, port):
                return port
        raise AlreadyExistsError(f"no free port in {low}-{high} on {host}",
                                 hint="widen the deployer's port range, or delete deployments you no longer need")

    def _states(self) -> list[DeploymentState]:
        if not self.root.is_dir():
            return []
        states = (StateDir(self.root, p.name).read() for p in self.root.iterdir() if p.is_dir())
        return [s for s in states if s is not None]

    def _start(self, folder: StateDir, spec: DeploymentSpec, port: int,
               flags: list[str]) -> tuple[subprocess.Popen, ServerRecord]:
        bundle = str(Path(spec.bundle_path or "").absolute())
        cmd = [self.config.python, "-m", "mlops_server", "--bundle", bundle, "--name", spec.model,
               "--model-version", str(spec.version), "--host", self.config.host, "--port", str(port),
               "--listen-from", str(folder.path / HOLDER_SOCKET), "--log-format", self.config.log_format,
               *self.config.server_args, *flags]
        folder.path.mkdir(parents=True, exist_ok=True)
        log_path = folder.log_path(spec.version)
        env = self._env()
        with open(log_path, "ab") as log:
            offset = log.tell()
            if self.config.log_format == "json":
                log.write(json.dumps({"ts": _now(), "level": "info", "logger": "mlops_process_deployer",
                                      "msg": "starting", "model": spec.model, "version": spec.version,
                                      "port": port, "cmd": cmd}).encode() + b"\n")
            else:
                log.write(f"---- mlops process deployer {_now()}: starting {spec.model} version {spec.version} "
                          f"on port {port}: {' '.join(cmd)}\n".encode())
            log.flush()
            # A new session: the server outlives this command, and a Ctrl-C here never reaches it.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=folder.path, env=env, start_new_session=True, close_fds=True)
        ident = _proc.identify(proc.pid)
        record = ServerRecord(model=spec.model, version=spec.version, pid=proc.pid,
                              start_time=ident.start_time if ident else -1, bundle_path=bundle,
                              log=log_path.name, log_offset=offset, started_at=_now())
        return proc, record

    def _env(self) -> dict[str, str]:
        # The server builds the stack's monitors ([[monitors]], MLOPS_MONITORS): give it the same
        # stack as this command, whatever its working folder (the deployment's folder).
        env = dict(os.environ, PYTHONUNBUFFERED="1", MLOPS_HOME=str(self.home))
        if self.stack_file is not None:
            env["MLOPS_CONFIG"] = str(self.stack_file)
        return env

    def _wait_ready(self, folder: StateDir, proc: subprocess.Popen, record: ServerRecord, port: int,
                    timeout: float, previous: ServerRecord | None = None) -> None:
        """Return once the *new* process serves ``record.version``; raise _StartFailed otherwise.

        Three conditions, checked in this order each round: the process still runs
        (``Popen.poll``, which also keeps its exit status); a process of its group
        holds a socket listening on the port (it takes the holder's socket only after
        warm-up, and this is what tells a
        redeploy of the same version apart from the old process answering); and the
        version's ``ready`` endpoint answers 200 on a new connection.
        """
        host = self.config.host
        ready_path = f"/v2/models/{record.model}/versions/{record.version}/ready"
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            status = proc.poll()
            if status is not None:
                reason = _EXIT_REASONS.get(status, "")
                self._fail(folder, record, f"the server exited with status {status}"
                           + (f" ({reason})" if reason else ""), previous)
            listens = _proc.group_listens(record.process, port, reap=False)
            if listens is not False and _probe(host, port, ready_path, min(2.0, timeout)) == 200:
                return
            if time.monotonic() >= deadline:
                self._fail(folder, record, f"it was not ready after {timeout:g} s", previous)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _fail(self, folder: StateDir, record: ServerRecord, why: str, previous: ServerRecord | None) -> None:
        log_path = folder.path / record.log
        time.sleep(0.05)  # let the last lines of a dying server reach the file
        lines = tail_lines(log_path, _LOG_LINES_IN_ERRORS, start=record.log_offset).rstrip()
        keeps = (f"; version {previous.version} keeps serving" if previous and _proc.is_running(previous.process)[0]
                 else "")
        raise _StartFailed(
            f"version {record.version} of {record.model} did not start for deployment {folder.name!r}: {why}{keeps}."
            f"\n---- last lines of {log_path} ----\n{lines}",
            hint=f"read the whole log with `mlops deployments logs {folder.name}` or in {log_path}")

    def _discard(self, proc: subprocess.Popen, record: ServerRecord) -> None:
        """Stop a new server that did not make it (it may already listen: let it drain)."""
        _proc.stop(record.process, min(self.config.stop_timeout, 10.0))
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            proc.wait(timeout=5)

    def _stop_all(self, servers: Sequence[ServerRecord]) -> None:
        # SIGTERM every one first so they drain in parallel, then wait for each.
        signalled = [s for s in servers if _proc.terminate(s.process)]
        deadline = time.monotonic() + self.config.stop_timeout
        for server in signalled:
            if not _proc.wait_gone(server.process, max(0.0, deadline - time.monotonic())):
                _proc.kill_group(server.process)
                _proc.wait_gone(server.process, 5.0)

    # ------------------------------------------------------------- observing
    def _observe(self, state: DeploymentState) -> Deployment:
        current = state.current
        log_path = self.root / state.name / current.log
        details: dict[str, Any] = {
            "pid": current.pid, "port": state.port, "log": str(log_path), "bundle_path": current.bundle_path,
            "started_at": current.started_at, "holder_pid": state.holder.pid if state.holder else None,
        }
        if state.pending:
            details["updating_to"] = state.pending.version
        alive, reason = _proc.is_running(current.process)
        if not alive:
            observed = "failed"
            details["reason"] = reason
            details["log_tail"] = tail_lines(log_path, 10, start=current.log_offset)
        elif state.phase == "starting":
            observed = "starting"
        else:
            status = _probe(state.host, state.port, "/v2/health/ready", self.config.probe_timeout)
            if status == 200:
                observed = "ready"
            else:
                observed = "unknown"
                details["reason"] = (f"server process {current.pid} runs but does not answer on {state.url}"
                                     if status is None else
                                     f"server process {current.pid} answers {status} on /v2/health/ready")
        return Deployment(
            name=state.name, model=current.model, version=current.version, backend=self.backend_name,
            state=observed, url=state.url, previous_version=state.previous_version,
            created_at=_parse_time(state.created_at), updated_at=_parse_time(state.updated_at), details=details,
            options=state.options)
