"""A deployer that serves bundles from threads of the current process: the reference for the kit.

``ThreadDeployer`` speaks the Open Inference Protocol V2 over HTTP with nothing
but the standard library (JSON tensors, nested lists), so it runs anywhere the
core runs. It keeps the deployer contract the kit checks: ``deploy`` returns
only once the server answers ``/v2/health/ready``; deploying an existing name
starts the new version, waits until it answers, switches, and only then stops
the old one; ``delete`` stops serving. It is meant for tests and as a starting
point (the plugin template subclasses it), not for production traffic.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import attrs

from ..entities import Deployment, DeploymentSpec, PredictionEvent, utcnow
from ..errors import BackendUnavailableError, InvalidInputError, NotFoundError
from ..interfaces import Deployer
from .models import flatten, reshape

__all__ = ["ThreadDeployer", "load_bundle_model", "v2_datatype", "shape_of"]


def load_bundle_model(path: str | Path) -> Any:
    """Verify a bundle and load its model (cloudpickle directly, so an isolated plugin manager works too)."""
    from ..bundle import load_bundle, verify_bundle

    info = verify_bundle(path)
    if info.manifest["format"] == "cloudpickle":
        from ..formats.cloudpickle_format import CloudpickleFormat

        return CloudpickleFormat().load(info.path, info.manifest)
    return load_bundle(path).model


def shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, (list, tuple)):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def v2_datatype(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


@attrs.define
class _Running:
    spec: DeploymentSpec
    server: ThreadingHTTPServer
    thread: threading.Thread
    url: str
    previous_version: int | None
    created_at: Any
    log: deque


def _handler(model: Any, spec: DeploymentSpec, log: deque, hooks: Any) -> type[BaseHTTPRequestHandler]:
    predict = getattr(model, "predict", None) or model

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.append(fmt % args)

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _model_path(self, parts: list[str]) -> tuple[bool, list[str]]:
            # /v2/models/{name}[/versions/{v}]/...
            if len(parts) < 3 or parts[2] != spec.model:
                return False, []
            rest = parts[3:]
            if rest[:1] == ["versions"]:
                if len(rest) < 2 or rest[1] != str(spec.version):
                    return False, []
                rest = rest[2:]
            return True, rest

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts == ["v2", "health", "live"]:
                return self._send(200, {"live": True})
            if parts == ["v2", "health", "ready"]:
                return self._send(200, {"ready": True})
            if parts == ["metrics"]:
                return self._send(200, (hooks.collect_metrics() if hooks else ""), "text/plain; version=0.0.4")
            if parts[:2] == ["v2", "models"]:
                ok, rest = self._model_path(parts)
                if ok and rest == []:
                    return self._send(200, {"name": spec.model, "versions": [str(spec.version)], "platform": "mlops"})
                if ok and rest == ["ready"]:
                    return self._send(200, {"name": spec.model, "ready": True})
            return self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            ok, rest = self._model_path(parts) if parts[:2] == ["v2", "models"] else (False, [])
            if not ok or rest != ["infer"]:
                return self._send(404, {"error": f"no model at {self.path}; this server serves {spec.model!r}"})
            start = time.perf_counter()
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                tensors = body["inputs"]
                decoded = {t["name"]: reshape(flatten(t["data"]), list(t["shape"])) for t in tensors}
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                return self._send(400, {"error": f"malformed V2 request: {exc}"})
            x = next(iter(decoded.values())) if len(decoded) == 1 else decoded
            try:
                y = predict(x)
            except Exception as exc:  # the model's own failure: 500 with its message
                return self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
            flat = flatten(y)
            shape = shape_of(y.tolist() if hasattr(y, "tolist") else y)
            out = {"name": "output-0", "datatype": v2_datatype(flat), "shape": shape, "data": flat}
            if hooks is not None and hooks.has_prediction_listeners():
                hooks.predictions_served(PredictionEvent(
                    model=spec.model, version=spec.version, inputs=decoded, outputs={"output-0": y},
                    latency_s=time.perf_counter() - start, batch_size=len(x) if isinstance(x, list) else 1,
                    timestamp=time.time()))
            return self._send(200, {"model_name": spec.model, "model_version": str(spec.version),
                                    "id": body.get("id", ""), "outputs": [out]})

    return Handler


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ThreadDeployer(Deployer):
    """Serves each deployment from a ``ThreadingHTTPServer`` on a free loopback port."""

    def __init__(self, *, host: str = "127.0.0.1", hooks: Any = None, backend_name: str = "thread") -> None:
        self.host = host
        self.hooks = hooks
        self.backend_name = backend_name
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()

    def check(self) -> str:
        return f"thread deployer on {self.host} ({len(self._running)} running)"

    def _start(self, spec: DeploymentSpec, previous: int | None, wait: float) -> _Running:
        if not spec.bundle_path:
            raise InvalidInputError(f"deployment {spec.name!r} has no bundle_path", hint="deploy through mlops_core.deploy")
        model = load_bundle_model(spec.bundle_path)
        log: deque = deque(maxlen=1000)
        server = ThreadingHTTPServer((self.host, 0), _handler(model, spec, log, self.hooks))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name=f"mlops-{spec.name}", daemon=True)
        thread.start()
        url = f"http://{self.host}:{server.server_address[1]}"
        deadline = time.monotonic() + max(wait, 1.0)
        while not _answers(url):  # "ready" means it answers, never just "started"
            if time.monotonic() > deadline:
                server.shutdown()
                server.server_close()
                raise BackendUnavailableError(f"deployment {spec.name!r} did not become ready within {wait}s",
                                              hint="see the deployment logs")
            time.sleep(0.05)
        log.append(f"serving {spec.model} version {spec.version} at {url}")
        return _Running(spec, server, thread, url, previous, utcnow(), log)

    @staticmethod
    def _stop(running: _Running) -> None:
        running.server.shutdown()  # waits for serve_forever to return
        running.server.server_close()

    def _state(self, running: _Running) -> Deployment:
        state = "ready" if running.thread.is_alive() else "failed"
        spec = running.spec
        return Deployment(name=spec.name, model=spec.model, version=spec.version, backend=self.backend_name,
                          state=state, url=running.url, previous_version=running.previous_version,
                          created_at=running.created_at, updated_at=running.created_at,
                          options=spec.options)

    def deploy(self, spec: DeploymentSpec, *, wait: float = 60.0) -> Deployment:
        with self._lock:
            old = self._running.get(spec.name)
            new = self._start(spec, old.spec.version if old else None, wait)
            self._running[spec.name] = new  # switch traffic, then stop the old server
            if old is not None:
                self._stop(old)
            return self._state(new)

    def get(self, name: str) -> Deployment:
        with self._lock:
            running = self._running.get(name)
            if running is None:
                raise NotFoundError(f"no deployment named {name!r}", hint="list them with `mlops deployments`")
            return self._state(running)

    def list(self) -> Sequence[Deployment]:
        with self._lock:
            return [self._state(r) for _, r in sorted(self._running.items())]

    def logs(self, name: str, *, tail: int = 100) -> str:
        with self._lock:
            running = self._running.get(name)
            if running is None:
                raise NotFoundError(f"no deployment named {name!r}", hint="list them with `mlops deployments`")
            lines = list(running.log)[-tail:] if tail > 0 else []
        return "\n".join(lines)

    def delete(self, name: str) -> None:
        with self._lock:
            running = self._running.pop(name, None)
            if running is None:
                raise NotFoundError(f"no deployment named {name!r}", hint="list them with `mlops deployments`")
        self._stop(running)

    def close(self) -> None:
        with self._lock:
            running, self._running = list(self._running.values()), {}
        for r in running:
            self._stop(r)
