"""``command``: a model is any executable that speaks V2 JSON over a local HTTP port.

The bundle holds the program's files under ``program/`` and ``command.json``,
which says how to start it (see ``docs/command-protocol.md`` for the protocol).
Loading copies the verified files, each read once, into a private run folder
(so executable bits do not depend on how the bundle was stored or mounted),
starts the command there with ``MLOPS_MODEL_HOST``, ``MLOPS_MODEL_PORT`` and
``MLOPS_MODEL_NAME`` set, and waits until ``GET /v2/health/ready`` answers 200.
``predict`` then forwards each request as a V2 JSON body to
``POST /v2/models/{name}/infer`` and decodes the answer. The child dies with its
parent process (``PR_SET_PDEATHSIG`` on Linux, armed from a thread that lives as long
as the process) and is stopped on ``close()`` or exit.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from mlops_core.entities import Signature
from mlops_core.errors import InvalidInputError, MlopsError
from mlops_core.interfaces import ModelFormat, validate_key

from ._common import as_numpy_inputs, read_json, read_payload, write_json

SPEC = "command.json"
PROGRAM = "program"
PROTOCOL = "mlops-command/v2-http/1"

_V2_TO_NUMPY = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
                "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
                "FP32": "float32", "FP64": "float64", "BYTES": "object"}


class CommandModelError(MlopsError):
    """The model program could not be started, died, or answered something that is not V2."""


def _signature(value: Any) -> Signature:
    if isinstance(value, Signature):
        return value
    if isinstance(value, Mapping):
        return Signature.from_dict(dict(value))
    raise TypeError("signature must be a mlops_core Signature or its dict form")


@attrs.frozen
class CommandModel:
    """What to save: a folder with the program and how to start it.

    ``command`` is the argv; an item naming a file of the folder (``"model.js"``,
    ``"./model"``) is resolved inside the run folder, anything else (``"node"``)
    is looked up on ``PATH``. ``executables`` are the folder's files that get the
    executable bit when the model starts (default: ``command[0]`` if it is one).
    The signature is required: it is the model's contract with V2 clients.
    """

    directory: Path = attrs.field(converter=Path)
    command: tuple[str, ...] = attrs.field(converter=tuple)
    signature: Signature = attrs.field(converter=_signature)
    env: Mapping[str, str] = attrs.field(factory=dict)
    executables: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    startup_timeout: float = 60.0
    #: Runtimes the program needs that are not in the bundle (e.g. "node"): checked on load, documented for images.
    requires: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @command.validator
    def _check_command(self, _attr: Any, value: tuple[str, ...]) -> None:
        if not value or not all(isinstance(v, str) and v for v in value):
            raise InvalidInputError("command must be a non-empty list of strings", hint='e.g. ["node", "model.js"]')


def _program_files(directory: Path) -> list[str]:
    files = []
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise InvalidInputError(f"{path} is a symbolic link", hint="copy the file it points to into the folder")
        if path.is_file():
            files.append(path.relative_to(directory).as_posix())
    return files


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Spawner:
    """Starts model programs from one long-lived thread.

    Linux sends ``PR_SET_PDEATHSIG`` when the *thread* that forked the child ends, not
    the process: a server that loads models in a short-lived thread would see its
    programs killed as soon as loading finished. Forking from this thread, which lives
    as long as the process, ties the programs' lives to the process.
    """

    def __init__(self) -> None:
        import queue

        self._jobs: "queue.Queue[tuple[Any, dict[str, Any], Any]]" = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while True:
            argv, kw, future = self._jobs.get()
            try:
                future.set_result(subprocess.Popen(argv, **kw))
            except BaseException as exc:  # handed back to the caller
                future.set_exception(exc)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        from concurrent.futures import Future

        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mlops-command-spawner", daemon=True)
                self._thread.start()
        future: Future = Future()
        self._jobs.put((argv, kw, future))
        return future.result()


_SPAWNER = _Spawner()


def _stop(proc: subprocess.Popen, run_dir: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    shutil.rmtree(run_dir, ignore_errors=True)


class RunningCommandModel:
    """A started model program; ``predict`` sends V2 JSON requests to it over loopback HTTP."""

    def __init__(self, spec: Mapping[str, Any], run_dir: Path, name: str = "model") -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.name = name
        self.signature = Signature.from_dict(spec["signature"])
        self.input_names = [t.name for t in self.signature.inputs]
        self.input_types = {t.name: t.datatype for t in self.signature.inputs}
        self.port = _free_port()
        self._local = threading.local()
        argv = [self._resolve(a) for a in spec["command"]]
        if not Path(argv[0]).is_file() and shutil.which(argv[0]) is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise CommandModelError(f"the model's command {argv[0]!r} is not installed here",
                                    hint="install it (an image needs it in its base), or bundle a self-contained "
                                         "executable in the program folder")
        env = {**os.environ, **dict(spec.get("env") or {}), "MLOPS_MODEL_HOST": "127.0.0.1",
               "MLOPS_MODEL_PORT": str(self.port), "MLOPS_MODEL_NAME": name}
        self.proc = _SPAWNER.popen(argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
                                   preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self._finalizer = weakref.finalize(self, _stop, self.proc, str(run_dir))
        atexit.register(self._finalizer)
        try:
            self._wait_ready(float(spec.get("startup_timeout", 60.0)))
        except BaseException:
            self.close()
            raise

    def _resolve(self, arg: str) -> str:
        """An argument naming a program file becomes its path in the run folder; anything else stays."""
        rel = arg.removeprefix("./")
        if not rel or os.path.isabs(arg) or ".." in Path(rel).parts:
            return arg
        candidate = self.run_dir / rel
        return str(candidate) if candidate.is_file() else arg

    # ----------------------------------------------------------- lifecycle
    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise CommandModelError(f"the model program {self.spec['command']} exited with code {code} before "
                                        "it was ready", hint="its own output is in this process's log; run the "
                                        "command by hand in the bundle's program folder to debug it")
            try:
                status, _ = self._request("GET", "/v2/health/ready", None, timeout=2.0)
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise CommandModelError(f"the model program {self.spec['command']} was not ready after {timeout:g} s ({last})",
                                hint="it must listen on MLOPS_MODEL_HOST:MLOPS_MODEL_PORT and answer "
                                     "GET /v2/health/ready with 200; raise startup_timeout if it loads slowly")

    def close(self) -> None:
        self._finalizer()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # ------------------------------------------------------------ requests
    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            self._local.conn = conn
        return conn

    def _request(self, method: str, path: str, body: bytes | None, timeout: float | None = None) -> tuple[int, bytes]:
        for attempt in (0, 1):  # a kept-alive connection the child closed is reopened once
            conn = self._connection(timeout)
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt or not self.alive:
                    raise
        raise AssertionError("unreachable")

    def predict(self, x: Any) -> dict[str, Any]:
        import numpy as np

        feeds = as_numpy_inputs(x, self.input_names)
        inputs = []
        for name, arr in feeds.items():
            datatype = self.input_types.get(name, "BYTES")
            data = arr.reshape(-1).tolist()
            if datatype == "BYTES":
                data = [d.decode() if isinstance(d, bytes) else str(d) for d in data]
            inputs.append({"name": name, "shape": list(arr.shape), "datatype": datatype, "data": data})
        body = json.dumps({"inputs": inputs}).encode()
        if not self.alive:
            raise CommandModelError(f"the model program exited with code {self.proc.returncode}",
                                    hint="see its output in the server log; restart the server")
        status, raw = self._request("POST", f"/v2/models/{self.name}/infer", body)
        try:
            answer = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            answer = None
        if status != 200:
            msg = answer.get("error") if isinstance(answer, dict) else raw[:200].decode("utf-8", "replace")
            raise CommandModelError(f"the model program answered HTTP {status}: {msg}",
                                    hint="check the request against the model's signature")
        if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
            raise CommandModelError("the model program's answer has no 'outputs' list",
                                    hint="answer with a V2 inference response body (docs/command-protocol.md)")
        out: dict[str, Any] = {}
        for t in answer["outputs"]:
            try:
                dtype = _V2_TO_NUMPY[t["datatype"]]
                out[str(t["name"])] = np.asarray(t["data"], dtype=dtype).reshape(t["shape"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CommandModelError(f"the model program returned a bad output tensor: {type(exc).__name__}: {exc}",
                                        hint="every output needs name, datatype, shape and data matching the shape") from None
        return out

    __call__ = predict


class CommandFormat(ModelFormat):
    name = "command"
    priority = 100

    def can_save(self, model: Any) -> bool:
        return isinstance(model, CommandModel)

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        if not isinstance(model, CommandModel):
            raise InvalidInputError(f"the command format saves a CommandModel, not a {type(model).__name__}",
                                    hint="mlops_formats.command_format.CommandModel(directory, command, signature)")
        src = model.directory
        if not src.is_dir():
            raise InvalidInputError(f"program folder {src} does not exist", hint="point directory= at the model's program")
        files = _program_files(src)
        if not files:
            raise InvalidInputError(f"program folder {src} is empty", hint="put the executable and its files in it")
        executables = list(model.executables)
        first = model.command[0].removeprefix("./")
        if not executables and first in files:
            executables = [first]
        missing = [e for e in executables if e not in files]
        if missing:
            raise InvalidInputError(f"executables {missing} are not files of {src}", hint=f"files: {files[:20]}")
        written = []
        for rel in files:
            validate_key(f"{PROGRAM}/{rel}")
            target = Path(directory) / PROGRAM / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)
            written.append(f"{PROGRAM}/{rel}")
        spec = {"protocol": PROTOCOL, "command": list(model.command), "env": dict(model.env),
                "executables": executables, "startup_timeout": model.startup_timeout,
                "requires": list(model.requires), "signature": model.signature.to_dict()}
        return [write_json(directory, SPEC, spec), *written]

    def signature(self, directory: Path) -> Signature:
        return Signature.from_dict(read_json(directory, SPEC)["signature"])

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> RunningCommandModel:
        spec = read_json(directory, SPEC)
        if spec.get("protocol") != PROTOCOL:
            raise InvalidInputError(f"{SPEC} speaks protocol {spec.get('protocol')!r}; this plugin speaks {PROTOCOL}",
                                    hint="upgrade mlops-formats, or save the model again")
        files = [f["path"] for f in manifest.get("files", []) if str(f.get("path", "")).startswith(PROGRAM + "/")]
        if not files:  # loaded outside a bundle (the kit's round trip): take the folder's files
            files = [f"{PROGRAM}/{p}" for p in _program_files(Path(directory) / PROGRAM)] \
                if (Path(directory) / PROGRAM).is_dir() else []
        if not files:
            raise InvalidInputError(f"the bundle at {directory} has no program files", hint="save the model again")
        executables = set(spec.get("executables") or [])
        run_dir = Path(tempfile.mkdtemp(prefix="mlops-command-"))
        try:
            for rel in files:
                inner = rel[len(PROGRAM) + 1:]
                validate_key(inner)
                target = run_dir / inner
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(read_payload(directory, rel))
                target.chmod(0o755 if inner in executables else 0o644)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        name = str((manifest.get("metadata") or {}).get("command_model_name") or "model")
        return RunningCommandModel(spec, run_dir, name=name)


def factory(config: Any, context: Any) -> CommandFormat:
    return CommandFormat()
