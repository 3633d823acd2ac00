"""VictoriaMetrics as the third-party OTLP *metrics* receiver of the otel monitor's tests.

VictoriaMetrics (Apache-2.0, a Prometheus-compatible time-series database) accepts
OTLP/HTTP metrics at ``POST /opentelemetry/v1/metrics`` (protobuf), decodes them with
its own parser, stores them, and answers PromQL on its Prometheus query API. With
``-opentelemetry.usePrometheusNaming`` it names series as Prometheus does
(``mlops.requests`` with unit ``{call}`` becomes ``mlops_requests_total``; attributes
and resource attributes become labels such as ``mlops_model`` and ``service_name``).
The points the tests check were decoded and stored by VictoriaMetrics's own code, so
they prove what an OTLP metrics backend receives.

Why this receiver: the OpenTelemetry Collector cannot be built here (no Go module
proxy); Prometheus has an OTLP receiver since 2.47, but Debian's builds (bookworm's
2.42, trixie's 2.53, sid's 3.5) ship without it. Debian trixie's ``victoria-metrics``
1.112 is a Go binary that needs only glibc and libzstd, both on bookworm, so the
fixture downloads that one ``.deb`` from the Debian archive (pinned by sha256,
checked before it is unpacked), extracts it with ``dpkg-deb`` into
``$XDG_CACHE_HOME/mlops-core/victoria-metrics-<version>`` (default ``~/.cache``)
under a file lock, and reuses it in later runs. Nothing is installed into the
system. ``MLOPS_TEST_VICTORIA_METRICS`` points at another binary instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from monitors_fixtures import Service, cached_tool, free_port, http_get, prom_query

VERSION = "1.112.0+ds1-2"
DEB_PATH = "pool/main/v/victoriametrics/victoria-metrics_1.112.0+ds1-2_amd64.deb"
DEB_SHA256 = "1d3717f1a8ab5bf690271095dd286730f6fb0761cc8c09c0fc8f529c9838f346"
MIRROR = os.environ.get("MLOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
OTLP_PATH = "/opentelemetry/v1/metrics"
BINARY = "usr/bin/victoria-metrics"


def victoria_metrics_binary() -> str:
    """The ``victoria-metrics`` binary (downloaded into the cache on first use)."""
    given = os.environ.get("MLOPS_TEST_VICTORIA_METRICS")
    if given:
        return given
    home = cached_tool(f"victoria-metrics-{VERSION}", lambda folder: (folder / BINARY).exists(), _fetch)
    return str(home / BINARY)


def _fetch(home: Path) -> None:
    """Download, verify and unpack the pinned ``.deb`` into ``home``; ``home`` appears complete or not at all."""
    if not shutil.which("dpkg-deb"):
        raise RuntimeError("dpkg-deb is needed to unpack VictoriaMetrics's .deb\n"
                           "hint: run on Debian, or set MLOPS_TEST_VICTORIA_METRICS to a victoria-metrics binary")
    url = f"{MIRROR}/{DEB_PATH}"
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".victoria-metrics-") as work:
        deb = Path(work) / "victoria-metrics.deb"
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=120) as resp, open(deb, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise RuntimeError(f"cannot download {url}: {exc}\nhint: the Debian archive must be reachable "
                               "(MLOPS_DEBIAN_MIRROR names another mirror), or set MLOPS_TEST_VICTORIA_METRICS") from None
        if digest.hexdigest() != DEB_SHA256:
            raise RuntimeError(f"{url} has sha256 {digest.hexdigest()}, expected {DEB_SHA256}: refusing to unpack it")
        unpacked = Path(work) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, capture_output=True, timeout=300)
        if home.exists():  # a cut earlier attempt: the binary was missing, so the folder is not a result
            shutil.rmtree(home)
        os.replace(unpacked, home)


class VictoriaMetrics(Service):
    """VictoriaMetrics on a free loopback port with its own data folder; it scrapes nothing, it only receives."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        super().__init__([victoria_metrics_binary(), f"-httpListenAddr=127.0.0.1:{port}",
                          f"-storageDataPath={workdir / 'data'}", "-opentelemetry.usePrometheusNaming",
                          # answer with the latest points at once (the default hides the last 30 s)
                          "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"],
                         f"http://127.0.0.1:{port}", "/health", workdir / "victoria-metrics.log", timeout=120)
        self.otlp_url = self.url + OTLP_PATH

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-query result of ``promql`` (one dict per series: ``metric`` labels and ``value``)."""
        http_get(self.url + "/internal/force_flush")  # make just-received points searchable
        return prom_query(self.url, promql)

    def value(self, promql: str) -> float | None:
        """The one value ``promql`` yields, or None while no series matches."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])
