"""Fixtures for the Kubernetes plugin's tests: a real control plane and an OCI registry on loopback.

``k8s_cluster`` (session) builds Kubernetes 1.20.2 once from Debian's source package (cached, see
``scripts/k8s-control-plane.sh``) and starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
simulated kubelet (``scripts/k8s/sim_kubelet.py``). No containers run: the kubelet marks pods Running/Ready when
their images resolve in their registry, and reports ``ErrImagePull``/``ImagePullBackOff`` with Events when they
do not.

``oci_registry`` (session) is Debian's docker-registry on a free loopback port; the simulated kubelet resolves
images against it over plain http.

Every test that uses either fixture is put in the xdist group ``k8s`` (the suite runs ``-n 2 --dist loadgroup``),
so one worker owns the cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "k8s-control-plane.sh"
REGISTRY_BIN = "/usr/bin/docker-registry"
K8S_FIXTURES = {"k8s_cluster", "oci_registry", "k8s_namespace"}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    loadgroup = bool(config.getvalue("loadgroup")) if hasattr(config.option, "loadgroup") else False
    for item in items:
        uses = K8S_FIXTURES & set(getattr(item, "fixturenames", ()))
        marked = any(m.args[:1] == ("k8s",) or m.kwargs.get("name") == "k8s" for m in item.iter_markers("xdist_group"))
        if not (uses or marked):
            continue
        if not marked:
            item.add_marker(pytest.mark.xdist_group("k8s"))
        # pytest-xdist's loadgroup groups by an "@group" suffix it writes to item._nodeid; pytest >= 9 keeps the
        # node id in item._id, so the suffix is lost and the group's tests spread over workers (each starting a
        # cluster of its own). Set it where this pytest reads it.
        if loadgroup and "@" not in item.nodeid:
            suffixed = f"{item.nodeid}@k8s"
            if hasattr(item, "_id"):
                from _pytest.nodeid import NodeId

                item._id = NodeId.parse(suffixed)
            else:
                item._nodeid = suffixed


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class K8sCluster:
    """A running control plane. ``kubeconfig`` authenticates as a cluster admin (group system:masters)."""

    dir: Path
    kubeconfig: Path
    server: str
    node_name: str
    kubectl_bin: str
    _namespaces: list[str] = field(default_factory=list)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
        """Runs kubectl (v1.20.2, built with the control plane) against this cluster; text output."""
        proc = subprocess.run([self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for this cluster (a new one each call)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def new_namespace(self, prefix: str = "t") -> str:
        """Creates a namespace with a unique name and waits until its ``default`` service account has its token,
        so that pods are admitted at once."""
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespace({"metadata": {"name": name, "labels": {"mlops.dev/test": "true"}}})
            deadline = time.monotonic() + 60
            while True:
                try:
                    if core.read_namespaced_service_account("default", name).secrets:
                        break
                except client.ApiException as e:
                    if e.status != 404:
                        raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"namespace {name}: the default service account got no token in 60 s; "
                                         f"controller-manager log:\n{_tail(self.dir / 'controller-manager.log')}")
                time.sleep(0.1)
        self._namespaces.append(name)
        return name

    namespace = new_namespace

    def logs(self, component: str) -> str:
        """The last lines of a component's log (etcd, apiserver, controller-manager, scheduler, kubelet)."""
        return _tail(self.dir / f"{component}.log", 80)


def _run_script(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sCluster]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the test control plane runs on Linux only")
    pytest.importorskip("kubernetes", reason="the cluster fixtures need the kubernetes client (pip install kubernetes)")
    env = {**os.environ, "MLOPS_K8S_PYTHON": sys.executable, "MLOPS_K8S_WATCH_PID": str(os.getpid())}
    # A cold build takes about 10 minutes on 2 busy cores; later runs reuse the cache.
    build = _run_script("build", env=env, timeout=3600)
    if build.returncode != 0:
        if "missing Debian packages" in build.stderr and os.geteuid() != 0:
            pytest.skip(build.stderr.strip().splitlines()[-1])
        pytest.fail(f"building the Kubernetes control plane failed:\n{build.stderr[-6000:]}", pytrace=False)
    root = tmp_path_factory.mktemp("k8s")
    start = _run_script("start", str(root), env=env, timeout=600)
    if start.returncode != 0:
        pytest.fail(f"starting the Kubernetes control plane failed:\n{start.stderr[-6000:]}", pytrace=False)
    values = dict(line.split("=", 1) for line in (root / "env").read_text().splitlines() if "=" in line)
    kubectl = values.get("MLOPS_K8S_KUBECTL") or shutil.which("kubectl") or "kubectl"
    cluster = K8sCluster(dir=root, kubeconfig=Path(values["KUBECONFIG"]), server=values["MLOPS_K8S_SERVER"],
                         node_name=values["MLOPS_K8S_NODE_NAME"], kubectl_bin=kubectl)
    try:
        yield cluster
    finally:
        stop = _run_script("stop", str(root), env=env, timeout=120)
        if stop.returncode != 0:
            print(f"stopping the control plane failed: {stop.stderr}", file=sys.stderr)


@pytest.fixture
def k8s_namespace(k8s_cluster: K8sCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = k8s_cluster.new_namespace()
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# ------------------------------------------------------------------ OCI registry
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OciRegistry:
    """Debian's docker-registry (distribution) on loopback, plain http."""

    root: Path
    host: str
    url: str
    proc: subprocess.Popen

    def push_tiny_image(self, repository: str, tag: str = "latest") -> str:
        """Pushes a minimal OCI image (a config blob, no layers) and returns ``host/repository@sha256:...``.
        Enough for the simulated kubelet, which only resolves manifests."""
        import requests

        cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()
        cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
        start = requests.post(f"{self.url}/v2/{repository}/blobs/uploads/", timeout=10)
        start.raise_for_status()
        loc = start.headers["Location"]
        loc = loc if loc.startswith("http") else self.url + loc
        sep = "&" if "?" in loc else "?"
        requests.put(f"{loc}{sep}digest={cfg_digest}", data=cfg, timeout=10,
                     headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": cfg_digest, "size": len(cfg)},
                               "layers": []}, sort_keys=True).encode()
        requests.put(f"{self.url}/v2/{repository}/manifests/{tag}", data=manifest, timeout=10,
                     headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()
        return f"{self.host}/{repository}@sha256:{hashlib.sha256(manifest).hexdigest()}"


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed (apt-get install docker-registry; see scripts/system-packages.txt)")
    import requests

    root = tmp_path_factory.mktemp("k8s-registry")
    host = f"127.0.0.1:{_free_port()}"
    config: dict[str, Any] = {
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": host, "secret": "k8s-test-secret"},
    }
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    reg = OciRegistry(root=root, host=host, url=f"http://{host}", proc=proc)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(reg.url + "/v2/", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start:\n{_tail(root / 'registry.log')}")
                time.sleep(0.05)
        yield reg
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
