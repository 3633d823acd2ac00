"""Kubernetes deployer: apply-to-rollout-complete time and API calls per deploy, plain and KServe flavors.

    .venv/bin/python benchmarks/k8s/bench_k8s.py [--rounds 5]

Starts the test control plane (scripts/k8s-control-plane.sh: Kubernetes 1.20.2 API server, controller-manager,
scheduler, simulated kubelet; built once into the cache) and a docker-registry on loopback, builds two real
images of a small model with the oci builder, then measures side by side in one run:

* ours: ``KubernetesDeployer.deploy`` (server-side apply + rollout wait), fresh deploy, rolling update and a
  no-op re-apply; API calls counted by the deployer's client hook (every request of its ApiClient);
* the peer: ``kubectl apply --server-side`` of the same objects (written by ``mlops k8s manifests``' renderer)
  followed by ``kubectl rollout status``, the usual GitOps/CI step; its requests counted from ``kubectl -v=6``.

KServe flavor: no KServe controller runs here, so an InferenceService never becomes Ready: the figure is
apply-to-accepted (the CRD installed, ``wait=0``), not a rollout. Times depend on the controllers' sync
periods and the simulated kubelet (no container starts), so they are control-plane latency, not pod start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "plugins" / "mlops-kubernetes" / "tests"))
from _common import print_table  # noqa: E402

SCRIPT = REPO / "scripts" / "k8s-control-plane.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControlPlane:
    def __init__(self, root: Path) -> None:
        self.root = root
        # The watch PID makes the control plane stop by itself should this process die without cleaning up.
        self.env = {**os.environ, "MLOPS_K8S_PYTHON": sys.executable, "MLOPS_K8S_WATCH_PID": str(os.getpid())}
        for step in (["build"], ["start", str(root)]):
            out = subprocess.run(["bash", str(SCRIPT), *step], env=self.env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"k8s-control-plane.sh {step[0]} failed:\n{out.stderr[-3000:]}")
        values = dict(line.split("=", 1) for line in (root / "env").read_text().splitlines() if "=" in line)
        self.kubeconfig = Path(values["KUBECONFIG"])
        self.kubectl_bin = values.get("MLOPS_K8S_KUBECTL") or shutil.which("kubectl") or "kubectl"

    def kubectl(self, *args: str, verbose: bool = False) -> tuple[subprocess.CompletedProcess, int]:
        cmd = [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args] + (["-v=6"] if verbose else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{out.stderr[-2000:]}")
        calls = len(re.findall(r"\] (GET|POST|PATCH|PUT|DELETE) https?://", out.stderr))
        return out, calls

    def namespace(self, name: str) -> str:
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # pods are admitted once the default service account has its token
            out, _ = self.kubectl("-n", name, "get", "serviceaccount", "default", "-o", "json")
            if json.loads(out.stdout).get("secrets"):
                return name
            time.sleep(0.1)
        raise SystemExit(f"namespace {name}: no service account token")

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.root)], env=self.env, capture_output=True)


class Registry:
    def __init__(self, root: Path) -> None:
        self.host = f"127.0.0.1:{free_port()}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(json.dumps({
            "version": 0.1, "log": {"level": "warn"}, "http": {"addr": self.host, "secret": "bench"},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}}}))
        self.proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(root / "config.yml")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import urllib.request

        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("docker-registry did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from k8s_testkit import build_images, make_deployer, spec, tiny_base_layout
    from mlops_core.testing.models import save_kit_bundle
    from mlops_kubernetes.deployer import render_input
    from mlops_kubernetes.render import manifest_files, render

    work = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    reg = Registry(work / "registry")
    t0 = time.perf_counter()
    try:
        cp = ControlPlane(work / "cp")
    except BaseException:
        reg.stop()
        raise
    start_s = time.perf_counter() - t0
    try:
        kit = save_kit_bundle(work / "bundle")
        images = build_images(work, tiny_base_layout(work / "base"), reg.host, "kit", kit, (1, 2))
        crd = REPO / "plugins" / "mlops-kubernetes" / "tests" / "data" / "kserve-inferenceservice-crd.json"
        cp.kubectl("apply", "--server-side", "-f", str(crd))
        deadline = time.monotonic() + 60  # polled: kubectl 1.20's `wait` fails while the CRD has no conditions yet
        while not any(c["type"] == "Established" and c["status"] == "True" for c in (json.loads(cp.kubectl(
                "get", "crd", "inferenceservices.serving.kserve.io", "-o", "json")[0].stdout).get("status") or {})
                .get("conditions") or []):
            if time.monotonic() > deadline:
                raise SystemExit("the KServe CRD was not established in 60 s")
            time.sleep(0.2)

        rows = []
        ours: dict[str, list[tuple[float, int]]] = {k: [] for k in ("create", "update", "noop", "kserve")}
        peer: dict[str, list[tuple[float, int]]] = {k: [] for k in ("create", "update", "noop")}
        for r in range(args.rounds):
            ns = cp.namespace(f"bench-{r}")
            d = make_deployer(work / f"home-{r}", cp.kubeconfig, ns)
            d.api_versions()  # discovery once per deployer, outside the timed deploys (a CLI run pays it once)
            for kind, version in (("create", 1), ("update", 2), ("noop", 2)):
                before, t = d.api_calls, time.perf_counter()
                got = d.deploy(spec("iris", "kit", version, images[version], kit), wait=120)
                ours[kind].append((time.perf_counter() - t, d.api_calls - before))
                assert got.state == "ready" and got.version == version
            before, t = d.api_calls, time.perf_counter()
            d.deploy(spec("isvc", "kit", 1, images[1], kit, flavor="kserve"), wait=0)
            ours["kserve"].append((time.perf_counter() - t, d.api_calls - before))
            d.close()

            # Peer: kubectl server-side apply + rollout status on the same objects.
            pns = cp.namespace(f"bench-peer-{r}")
            for kind, version in (("create", 1), ("update", 2), ("noop", 2)):
                folder = work / f"peer-{r}-{kind}"
                folder.mkdir()
                from mlops_kubernetes.config import KubernetesDeployerConfig
                from mlops_kubernetes.render import ApiVersions

                inp = render_input(spec("iris", "kit", version, images[version], kit),
                                   KubernetesDeployerConfig(namespace=pns),
                                   ApiVersions(hpa="autoscaling/v2beta2", pdb="policy/v1beta1"))
                for name, text in manifest_files(render(inp)).items():
                    (folder / name).write_text(text)
                t = time.perf_counter()
                _, c1 = cp.kubectl("apply", "--server-side", "--field-manager=bench", "-f", str(folder), verbose=True)
                _, c2 = cp.kubectl("-n", pns, "rollout", "status", "deployment/iris", "--timeout=120s", verbose=True)
                peer[kind].append((time.perf_counter() - t, c1 + c2))

        for kind, label in (("create", "first deploy"), ("update", "rolling update"), ("noop", "re-apply (no-op)")):
            o_t, o_c = median([x[0] for x in ours[kind]]), median([x[1] for x in ours[kind]])
            p_t, p_c = median([x[0] for x in peer[kind]]), median([x[1] for x in peer[kind]])
            rows.append([f"plain: {label}", f"{o_t:.2f} s", f"{o_c:.0f}", f"{p_t:.2f} s", f"{p_c:.0f}",
                         f"{p_t / o_t:.2f}x"])
        k_t, k_c = median([x[0] for x in ours["kserve"]]), median([x[1] for x in ours["kserve"]])
        rows.append(["kserve: apply to accepted", f"{k_t:.2f} s", f"{k_c:.0f}", "-", "-", "-"])
        print_table(f"Kubernetes deploys, median of {args.rounds} rounds (1.20.2 control plane + simulated kubelet; "
                    f"control plane started in {start_s:.1f} s)",
                    ["what", "ours: time", "ours: API calls", "kubectl apply+rollout status: time", "kubectl: API calls",
                     "time ratio (kubectl / ours)"], rows)
        return 0
    finally:
        reg.stop()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
