"""Arize Phoenix as the third-party OTLP receiver of the otel monitor's trace tests.

Phoenix (``arize-phoenix`` on PyPI, Apache-2.0) is an observability server that
takes OpenTelemetry traces over OTLP/HTTP (``POST /v1/traces``, protobuf), stores
them in SQLite and serves them back through its REST API
(``GET /v1/projects/{project}/spans``). It is not ours: the spans the tests check
were decoded, stored and re-read by Phoenix's own code, so they prove what any
OTLP backend would receive. It takes traces only, not metrics; the metric tests
keep the protocol-level receiver (``otlp_receiver.py``).

Phoenix brings a large dependency tree (FastAPI, SQLAlchemy, pandas, grpc ...),
so it lives in its own virtualenv, never in the test venv: created on first use
in ``$XDG_CACHE_HOME/mlops-core/phoenix-<version>`` (default ``~/.cache``) under a
file lock, so parallel test workers install it once and later runs reuse it.
``MLOPS_TEST_PHOENIX_PYTHON`` points at the Python of an existing install instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from monitors_fixtures import Service, cached_tool, free_port, http_get

PHOENIX_VERSION = "20.26.1"
#: Phoenix starts (migrations, UI assets) in ~10 s on an idle machine; far longer on a loaded one.
START_TIMEOUT_S = 300.0


def phoenix_python() -> str:
    """The Python of a virtualenv that has ``arize-phoenix`` (installed into the cache on first use)."""
    given = os.environ.get("MLOPS_TEST_PHOENIX_PYTHON")
    if given:
        return given
    venv = cached_tool(f"phoenix-{PHOENIX_VERSION}", lambda folder: (folder / ".installed").exists(), _install)
    return str(venv / "bin" / "python")


def _install(venv: Path) -> None:
    python = venv / "bin" / "python"
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", "--clear", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              f"arize-phoenix=={PHOENIX_VERSION}"]]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"installing Arize Phoenix failed ({' '.join(argv[:4])} ...): "
                               f"{(done.stderr or done.stdout)[-2000:]}\n"
                               "hint: PyPI must be reachable, or set MLOPS_TEST_PHOENIX_PYTHON to the Python of "
                               f"a virtualenv with arize-phoenix=={PHOENIX_VERSION}")
    (venv / ".installed").touch()


class Phoenix(Service):
    """A Phoenix server on free loopback ports with its own working folder (SQLite), stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port, grpc_port = free_port(), free_port()
        env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
               "PHOENIX_GRPC_PORT": str(grpc_port), "PHOENIX_WORKING_DIR": str(workdir),
               "PHOENIX_TELEMETRY_ENABLED": "false"}  # no usage reporting to the outside
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "PHOENIX_COLLECTOR_ENDPOINT", "PHOENIX_SQL_DATABASE_URL"):
            env.pop(name, None)
        super().__init__([phoenix_python(), "-m", "phoenix.server.main", "serve"], f"http://127.0.0.1:{port}",
                         "/healthz", workdir / "phoenix.log", env=env, timeout=START_TIMEOUT_S, cwd=workdir)

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix has stored for ``project`` (spans without a project go to ``default``)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = json.loads(http_get(f"{self.url}/v1/projects/{project}/spans?{urllib.parse.urlencode(query)}",
                                       timeout=30))
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out
