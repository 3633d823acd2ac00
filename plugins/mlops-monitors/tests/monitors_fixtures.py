"""Shared helpers of the mlops-monitors tests: a folder ArtifactStore, real HTTP services on free ports.

Imported by the test modules (no conftest.py, so nothing leaks into other plugins' tests).
Every service is a real process or a real socket server on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import types
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import pytest

from mlops_core.errors import NotFoundError
from mlops_core.interfaces import ArtifactStore
from mlops_core.plugins import PluginManager
from mlops_core.testing.waiting import wait_until as kit_wait_until


class DirStore(ArtifactStore):
    """A real ArtifactStore on a local folder (atomic rename), independent of other plugins."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = self.root.as_uri()

    def _write(self, key: str, source: IO[bytes]) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            shutil.copyfileobj(source, f)
        os.replace(tmp, path)

    def _open(self, key: str) -> IO[bytes]:
        try:
            return open(self.root / key, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {key}") from None

    def _exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def _list(self, prefix: str) -> Iterator[str]:
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def _delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


def context(pm: PluginManager, name: str, home: Path | None = None) -> Any:
    """A backend context like the stack's (home, hooks, name)."""
    from mlops_core.interfaces import BackendContext

    return BackendContext(home=home or Path("."), hooks=pm.hooks, name=name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    """The kit's ``wait_until``; any exception counts as "not yet" (the service is still starting)."""
    return kit_wait_until(check, timeout, what, interval=interval, ignore=(Exception,))


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


class MetricsServer:
    """A tiny real HTTP server exposing ``/metrics`` from ``hooks.collect_metrics()``."""

    def __init__(self, hooks: Any) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = outer.hooks.collect_metrics().encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.hooks = hooks
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def cached_tool(name: str, ready: Callable[[Path], bool], build: Callable[[Path], None]) -> Path:
    """``$XDG_CACHE_HOME/mlops-core/<name>`` (default ``~/.cache``), built once by ``build(folder)``.

    For third-party servers the tests fetch on first use (Phoenix's venv, VictoriaMetrics's
    binary): ``ready(folder)`` says whether a complete build is there; parallel test
    workers wait on a file lock, so one builds and the others reuse its result.
    """
    import fcntl

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops-core"
    folder = cache / name
    if not ready(folder):
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not ready(folder):  # another worker may have finished while we waited
                build(folder)
    return folder


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        pytest.skip(f"{binary} not installed (Debian package {package}; `make system-deps` as root installs it)")
    return path


class Service:
    """A process started on a free port and stopped (by its pid) at the end."""

    def __init__(self, argv: list[str], url: str, ready_path: str, log: Path, *, env: dict[str, str] | None = None,
                 timeout: float = 60.0, cwd: Path | None = None) -> None:
        self.url = url
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            wait_until(lambda: self.proc.poll() is None and http_get(url + ready_path) is not None, timeout,
                       what=f"{argv[0]} at {url}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"{argv[0]} did not start:\n{log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_prometheus(tmp: Path, targets: list[str], *, metrics_path: str = "/metrics",
                     honor_labels: bool = False) -> Service:
    binary = _need("prometheus", "prometheus")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: mlops\n"
        f"    honor_labels: {'true' if honor_labels else 'false'}\n"
        f"    metrics_path: {metrics_path}\n"
        f"    static_configs:\n      - targets: [{', '.join(repr(t) for t in targets)}]\n")
    (tmp / "tsdb").mkdir(exist_ok=True)
    return Service([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                   f"http://127.0.0.1:{port}", "/-/ready", tmp / "prometheus.log")


def start_pushgateway(tmp: Path) -> Service:
    binary = _need("prometheus-pushgateway", "prometheus-pushgateway")
    port = free_port()
    return Service([binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                   f"http://127.0.0.1:{port}", "/-/ready", tmp / "pushgateway.log")


def prom_query(base: str, promql: str) -> list[dict[str, Any]]:
    raw = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    data = json.loads(raw)
    assert data["status"] == "success", data
    return data["data"]["result"]


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    binary = _need("promtool", "prometheus")
    return subprocess.run([binary, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


def chromium_screenshot(html_file: Path, png: Path, profile_dir: Path, size: str = "1200,2000") -> Path:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        pytest.skip("chromium not installed (Debian package chromium)")
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile_dir}", f"--screenshot={png}", f"--window-size={size}",
            html_file.resolve().as_uri()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot: {proc.stderr[-2000:]}"
    return png


def event(model: str = "m", version: int | None = 1, inputs: Any = None, outputs: Any = None,
          latency_s: float = 0.002, batch_size: int | None = None, error: str | None = None) -> Any:
    from mlops_core.entities import PredictionEvent

    inputs = inputs or {}
    if batch_size is None:
        batch_size = max((len(v) for v in inputs.values()), default=1)
    return PredictionEvent(model=model, version=version, inputs=inputs, outputs=outputs or {},
                           latency_s=latency_s, batch_size=batch_size, error=error, timestamp=time.time())


class Recorder:
    """A plugin recording drift reports and alerts."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.alerts: list[dict[str, Any]] = []

    from mlops_core.plugins import hookimpl as _hookimpl

    @_hookimpl
    def mlops_drift_detected(self, report: Any) -> None:
        self.reports.append(report)

    @_hookimpl
    def mlops_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)


class Boom:
    """A monitor plugin that raises on every call."""

    from mlops_core.plugins import hookimpl as _hookimpl

    @_hookimpl
    def mlops_predictions_served(self, event: Any) -> None:
        raise RuntimeError("boom: this monitor is broken on purpose")

    @_hookimpl
    def mlops_collect_metrics(self) -> str:
        raise RuntimeError("boom: metrics too")
