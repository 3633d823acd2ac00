"""The kubernetes deployer against a real control plane (Kubernetes 1.20.2 API server, controller-manager,
scheduler) with the simulated kubelet of ``scripts/k8s/`` and a real registry (fixtures in conftest.py).

The images are real: the kit bundle built by the oci builder on a tiny base and pushed to the registry, once
per session (versions 1 and 2: two digests). The simulated kubelet starts no container: it marks a pod
Running/Ready when its image's manifest exists in the registry and reports ErrImagePull/ImagePullBackOff
(with pod Events) when it does not, so rollouts, ReplicaSets, Pods and the Deployment's conditions are the
controllers' real ones. What cannot be shown here: a server answering inside a pod, image pulls by a
container runtime, and pod logs (the kubelet serves no logs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from mlops_core.entities import ImageRef
from mlops_core.errors import ConfigError, MlopsError, NotFoundError
from mlops_kubernetes.deployer import RolloutFailedError

from k8s_testkit import build_images, make_deployer, spec, tiny_base_layout

HERE = Path(__file__).parent
REPO = HERE.parents[2]
pytestmark = [pytest.mark.xdist_group("k8s"), pytest.mark.slow]


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlops_core.testing.models import save_kit_bundle

    return save_kit_bundle(tmp_path_factory.mktemp("k8s-kit") / "bundle")


@pytest.fixture(scope="session")
def images(oci_registry: Any, kit: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[int, ImageRef]:
    """Versions 1 and 2 of model ``kit``: real images, built once per session and pushed."""
    home = tmp_path_factory.mktemp("k8s-images")
    base = tiny_base_layout(home / "base")
    return build_images(home, base, oci_registry.host, "kit", kit, (1, 2))


@pytest.fixture
def deployer(k8s_cluster: Any, k8s_namespace: str, tmp_path: Path) -> Iterator[Any]:
    d = make_deployer(tmp_path, k8s_cluster.kubeconfig, k8s_namespace)
    yield d
    d.close()


def kubectl_json(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def missing_image(image: ImageRef) -> ImageRef:
    """The same (real) digest under a repository the registry does not have: what a typo'd repository does."""
    host = image.reference.split("/", 1)[0]
    return ImageRef(reference=f"{host}/nowhere/kit:v2", digest=image.digest, labels=image.labels)


# ------------------------------------------------------------------ lifecycle
def test_deploy_reapply_update_rollback_delete(deployer: Any, images: dict[int, ImageRef], kit: Any,
                                               k8s_cluster: Any, k8s_namespace: str) -> None:
    ns = k8s_namespace
    d1 = deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    assert (d1.name, d1.version, d1.state, d1.previous_version) == ("iris", 1, "ready", None)
    assert d1.url == f"http://iris.{ns}.svc:80"
    assert d1.details["bundle_digest"] == kit.digest and d1.details["available_replicas"] == 1
    dep = kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + images[1].digest)
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert "mlops-core" in managers and any(m["operation"] == "Apply" for m in dep["metadata"]["managedFields"])
    rs = kubectl_json(k8s_cluster, "-n", ns, "get", "replicasets", "-l", "app.kubernetes.io/instance=iris")["items"]
    pods = kubectl_json(k8s_cluster, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/instance=iris")["items"]
    assert len(rs) == 1 and len(pods) == 1 and pods[0]["status"]["phase"] == "Running"
    assert pods[0]["metadata"]["annotations"]["mlops.dev/bundle-digest"] == kit.digest
    svc = kubectl_json(k8s_cluster, "-n", ns, "get", "service", "iris")

    # Re-applying the same inputs is a no-op: same resourceVersion on every object.
    again = deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    assert again.version == 1 and again.previous_version is None
    assert kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")["metadata"]["resourceVersion"] == \
        dep["metadata"]["resourceVersion"]
    assert kubectl_json(k8s_cluster, "-n", ns, "get", "service", "iris")["metadata"]["resourceVersion"] == \
        svc["metadata"]["resourceVersion"]

    # Update: a rolling update to version 2 that waits for the new ReplicaSet.
    d2 = deployer.deploy(spec("iris", "kit", 2, images[2], kit), wait=120)
    assert (d2.version, d2.previous_version, d2.state) == (2, 1, "ready")
    assert d2.details["revision"] == "2"
    rs = kubectl_json(k8s_cluster, "-n", ns, "get", "replicasets", "-l", "app.kubernetes.io/instance=iris")["items"]
    assert sorted((r["metadata"]["annotations"]["deployment.kubernetes.io/revision"], r["spec"]["replicas"])
                  for r in rs) == [("1", 0), ("2", 1)]
    pods = kubectl_json(k8s_cluster, "-n", ns, "get", "pods", "-l", "app.kubernetes.io/instance=iris")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert [p["metadata"]["labels"]["app.kubernetes.io/version"] for p in live] == ["2"]
    assert [x.name for x in deployer.list()] == ["iris"]

    # Rollback (what the core's rollback does: deploy the previous version again) toggles back.
    d3 = deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    assert (d3.version, d3.previous_version, d3.state) == (1, 2, "ready")
    status = k8s_cluster.kubectl("-n", ns, "rollout", "status", "deployment/iris", "--timeout=30s")
    assert "successfully rolled out" in status.stdout

    deployer.delete("iris")
    with pytest.raises(NotFoundError):
        deployer.get("iris")
    left = k8s_cluster.kubectl("-n", ns, "get", "deployments,services,replicasets", "-o", "name").stdout.strip()
    assert left == ""
    with pytest.raises(NotFoundError):
        deployer.delete("iris")


def test_bad_image_fails_with_the_pod_reason_and_rolls_back(deployer: Any, images: dict[int, ImageRef], kit: Any,
                                                            k8s_cluster: Any, k8s_namespace: str) -> None:
    deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    with pytest.raises(RolloutFailedError) as err:
        deployer.deploy(spec("iris", "kit", 2, missing_image(images[2]), kit), wait=120)
    assert err.value.reason in ("ErrImagePull", "ImagePullBackOff")
    assert "rolled back automatically, version 1 keeps serving" in err.value.message
    assert "nowhere/kit" in err.value.message, "the message carries the pod's state/events naming the image"
    assert "registry" in err.value.hint
    current = deployer.get("iris")
    assert (current.version, current.state, current.previous_version) == (1, "ready", None)
    dep = kubectl_json(k8s_cluster, "-n", k8s_namespace, "get", "deployment", "iris")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("kit@" + images[1].digest)
    pods = kubectl_json(k8s_cluster, "-n", k8s_namespace, "get", "pods", "-l", "app.kubernetes.io/instance=iris")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert [p["metadata"]["labels"]["app.kubernetes.io/version"] for p in running] == ["1"], \
        "maxUnavailable 0: the version 1 pod served throughout"


def test_crash_loop_fails_and_rolls_back(deployer: Any, images: dict[int, ImageRef], kit: Any) -> None:
    deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    with pytest.raises(RolloutFailedError) as err:
        deployer.deploy(spec("iris", "kit", 2, images[2], kit, pod_annotations='{"sim.mlops.dev/crash": "true"}'),
                        wait=120)
    assert err.value.reason == "CrashLoopBackOff"
    assert deployer.get("iris").version == 1


def test_failed_first_deploy_leaves_nothing(deployer: Any, images: dict[int, ImageRef], kit: Any,
                                            k8s_cluster: Any, k8s_namespace: str) -> None:
    with pytest.raises(RolloutFailedError, match="the new objects were removed"):
        deployer.deploy(spec("iris", "kit", 2, missing_image(images[2]), kit), wait=120)
    with pytest.raises(NotFoundError):
        deployer.get("iris")
    left = k8s_cluster.kubectl("-n", k8s_namespace, "get", "deployments,services", "-o", "name").stdout.strip()
    assert left == ""


def test_timeout_is_a_rollout_failure(deployer: Any, images: dict[int, ImageRef], kit: Any) -> None:
    """A rollout that cannot finish in time (too many replicas for the budget) fails as Timeout and rolls back."""
    deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    with pytest.raises(RolloutFailedError) as err:
        deployer.deploy(spec("iris", "kit", 2, images[2], kit, replicas="3"), wait=0.0)
    assert err.value.reason == "Timeout"
    assert deployer.get("iris").version == 1


# ------------------------------------------------------------------ apply semantics
def test_fields_owned_by_others_survive_a_redeploy(deployer: Any, images: dict[int, ImageRef], kit: Any,
                                                   k8s_cluster: Any, k8s_namespace: str) -> None:
    ns = k8s_namespace
    deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    k8s_cluster.kubectl("-n", ns, "annotate", "deployment", "iris", "team.example/owner=fraud")
    k8s_cluster.kubectl("-n", ns, "label", "service", "iris", "mesh.example/injected=true")
    deployer.deploy(spec("iris", "kit", 2, images[2], kit), wait=120)
    dep = kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")
    svc = kubectl_json(k8s_cluster, "-n", ns, "get", "service", "iris")
    assert dep["metadata"]["annotations"]["team.example/owner"] == "fraud"
    assert svc["metadata"]["labels"]["mesh.example/injected"] == "true"
    assert svc["spec"]["ports"][0]["protocol"] == "TCP"


def test_hpa_and_pdb_use_the_versions_the_cluster_serves(deployer: Any, images: dict[int, ImageRef], kit: Any,
                                                         k8s_cluster: Any, k8s_namespace: str) -> None:
    apis = deployer.api_versions()
    assert (apis.hpa, apis.pdb, apis.service_monitor) == ("autoscaling/v2beta2", "policy/v1beta1", False), \
        "a 1.20 API server has neither autoscaling/v2 nor policy/v1"
    ns = k8s_namespace
    deployer.deploy(spec("iris", "kit", 1, images[1], kit, hpa="true", pdb="true", hpa_max_replicas="3"), wait=120)
    hpa = kubectl_json(k8s_cluster, "-n", ns, "get", "hpa.v2beta2.autoscaling", "iris")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    pdb = kubectl_json(k8s_cluster, "-n", ns, "get", "pdb", "iris")
    assert pdb["spec"]["maxUnavailable"] == 1
    # Turned off again: the objects go.
    deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    left = k8s_cluster.kubectl("-n", ns, "get", "hpa,pdb", "-o", "name").stdout.strip()
    assert left == ""


def _wait_established(cluster: Any, name: str) -> None:
    # Polled: kubectl 1.20's `wait` fails outright while a CRD has no status conditions yet.
    import time

    deadline = time.monotonic() + 60
    while True:
        status = kubectl_json(cluster, "get", "crd", name).get("status") or {}
        if any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or []):
            return
        assert time.monotonic() < deadline, f"CRD {name} was not established in 60 s: {status}"
        time.sleep(0.2)


def test_service_monitor_replaces_scrape_annotations_when_its_crd_exists(
        images: dict[int, ImageRef], kit: Any, k8s_cluster: Any, k8s_namespace: str, tmp_path: Path) -> None:
    """Discovery-driven: with a ServiceMonitor CRD the deployer writes one instead of prometheus.io annotations.

    The CRD here is a stand-in with an open schema (x-kubernetes-preserve-unknown-fields), not the Prometheus
    operator's: it gives the API server the monitoring.coreos.com/v1 group, which is what the deployer looks for.
    """
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
           "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                    "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor",
                              "listKind": "ServiceMonitorList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    ns = k8s_namespace
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        _wait_established(k8s_cluster, "servicemonitors.monitoring.coreos.com")
        d = make_deployer(tmp_path, k8s_cluster.kubeconfig, ns)
        assert d.api_versions().service_monitor is True
        d.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
        sm = kubectl_json(k8s_cluster, "-n", ns, "get", "servicemonitors.monitoring.coreos.com", "iris")
        svc = kubectl_json(k8s_cluster, "-n", ns, "get", "service", "iris")
        assert sm["spec"]["endpoints"] == [{"interval": "30s", "path": "/metrics", "port": "http"}]
        assert all(svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
        dep = kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")
        assert "prometheus.io/scrape" not in dep["spec"]["template"]["metadata"]["annotations"]
        # Turned off: the ServiceMonitor goes, the annotations come back.
        d.deploy(spec("iris", "kit", 1, images[1], kit, service_monitor="false"), wait=120)
        assert k8s_cluster.kubectl("-n", ns, "get", "servicemonitors.monitoring.coreos.com", "-o", "name").stdout == ""
        dep = kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")
        assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
        d.close()
    finally:
        k8s_cluster.kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=true", check=False)


# ------------------------------------------------------------------ reads
def test_logs_say_why_they_are_unavailable(deployer: Any, images: dict[int, ImageRef], kit: Any) -> None:
    """Logs come from the kubelet through the API server; the simulated kubelet serves none (a boundary of
    this test setup). The deployer lists every pod and says why its logs are missing instead of failing."""
    deployer.deploy(spec("iris", "kit", 1, images[1], kit, replicas="2"), wait=120)
    text = deployer.logs("iris", tail=5)
    lines = text.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("[iris-") and "logs unavailable" in line for line in lines), text
    with pytest.raises(NotFoundError):
        deployer.logs("nothing")


def test_state_is_what_the_cluster_reports(deployer: Any, images: dict[int, ImageRef], kit: Any,
                                           k8s_cluster: Any, k8s_namespace: str) -> None:
    deployer.deploy(spec("iris", "kit", 1, images[1], kit), wait=120)
    k8s_cluster.kubectl("-n", k8s_namespace, "scale", "deployment", "iris", "--replicas=0")
    import time

    deadline = time.monotonic() + 30
    while deployer.get("iris").state != "stopped":
        assert time.monotonic() < deadline, deployer.get("iris")
        time.sleep(0.2)
    assert deployer.get("iris").details["replicas"] == 0


def test_unknown_namespace_and_unreachable_cluster_are_clear_errors(k8s_cluster: Any, images: dict[int, ImageRef],
                                                                    kit: Any, tmp_path: Path) -> None:
    d = make_deployer(tmp_path, k8s_cluster.kubeconfig, "no-such-namespace")
    with pytest.raises(NotFoundError, match="namespace 'no-such-namespace' does not exist") as err:
        d.deploy(spec("iris", "kit", 1, images[1], kit), wait=10)
    assert "kubectl create namespace" in err.value.hint
    bad = tmp_path / "kubeconfig"
    cfg = (k8s_cluster.kubeconfig.read_text())
    import re

    bad.write_text(re.sub(r"server: https://127\.0\.0\.1:\d+", "server: https://127.0.0.1:9", cfg))
    d = make_deployer(tmp_path, bad, "default")
    with pytest.raises(MlopsError, match="cannot reach the Kubernetes API server"):
        d.get("iris")
    with pytest.raises(ConfigError, match="does not exist"):
        make_deployer(tmp_path, tmp_path / "nope", "default").get("iris")


# ------------------------------------------------------------------ doctor and RBAC
def _service_account_kubeconfig(cluster: Any, ns: str, sa: str, dest: Path) -> Path:
    import base64
    import time

    import yaml

    cluster.kubectl("-n", ns, "create", "serviceaccount", sa)
    deadline = time.monotonic() + 30
    while True:
        secrets = kubectl_json(cluster, "-n", ns, "get", "serviceaccount", sa).get("secrets") or []
        if secrets:
            break
        assert time.monotonic() < deadline, "no token for the service account"
        time.sleep(0.1)
    secret = kubectl_json(cluster, "-n", ns, "get", "secret", secrets[0]["name"])
    token = base64.b64decode(secret["data"]["token"]).decode()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = {"cluster": admin["clusters"][0]["name"], "user": sa, "namespace": ns}
    dest.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": ctx}], "current-context": sa,
    }))
    return dest


def test_doctor_checks_version_rbac_and_registry(k8s_cluster: Any, k8s_namespace: str, oci_registry: Any,
                                                 tmp_path: Path) -> None:
    ns = k8s_namespace
    admin = make_deployer(tmp_path, k8s_cluster.kubeconfig, ns, registry=oci_registry.host, hpa=True, pdb=True)
    report = admin.check()
    assert "Kubernetes v1.20.2" in report and "RBAC ok" in report and f"registry {oci_registry.host} answers" in report
    assert "autoscaling/v2beta2" in report

    # A service account with no rights: every missing permission is named.
    kubeconfig = _service_account_kubeconfig(k8s_cluster, ns, "ci", tmp_path / "ci.kubeconfig")
    ci = make_deployer(tmp_path, kubeconfig, ns, hpa=True, pdb=True)
    with pytest.raises(MlopsError, match="may not: get apps/deployments") as err:
        ci.check()
    assert "docs/k8s-rbac.yaml" in err.value.hint
    # docs/k8s-rbac.yaml bound to it: everything the deployer needs is allowed.
    k8s_cluster.kubectl("-n", ns, "apply", "-f", str(REPO / "docs" / "k8s-rbac.yaml"))
    k8s_cluster.kubectl("-n", ns, "create", "rolebinding", "mlops-deployer", "--role=mlops-deployer",
                        f"--serviceaccount={ns}:ci")
    ci.close()
    assert "RBAC ok" in make_deployer(tmp_path, kubeconfig, ns, hpa=True, pdb=True).check()
    with pytest.raises(MlopsError, match="does not answer"):
        make_deployer(tmp_path, k8s_cluster.kubeconfig, ns, registry="127.0.0.1:9").check()


def test_the_minimal_role_is_enough_to_deploy(k8s_cluster: Any, k8s_namespace: str, images: dict[int, ImageRef],
                                              kit: Any, tmp_path: Path) -> None:
    ns = k8s_namespace
    kubeconfig = _service_account_kubeconfig(k8s_cluster, ns, "deployer", tmp_path / "sa.kubeconfig")
    k8s_cluster.kubectl("-n", ns, "apply", "-f", str(REPO / "docs" / "k8s-rbac.yaml"))
    k8s_cluster.kubectl("-n", ns, "create", "rolebinding", "mlops-deployer", "--role=mlops-deployer",
                        f"--serviceaccount={ns}:deployer")
    d = make_deployer(tmp_path, kubeconfig, ns, hpa=True, pdb=True)
    assert d.deploy(spec("iris", "kit", 1, images[1], kit), wait=120).state == "ready"
    with pytest.raises(RolloutFailedError):
        d.deploy(spec("iris", "kit", 2, missing_image(images[2]), kit), wait=120)
    d.logs("iris")
    d.delete("iris")


# ------------------------------------------------------------------ KServe
def test_kserve_flavor_without_the_crd_says_so(k8s_cluster: Any, tmp_path: Path, images: dict[int, ImageRef],
                                               kit: Any) -> None:
    groups = json.loads(k8s_cluster.kubectl("get", "--raw", "/apis").stdout)
    if any(g["name"] == "serving.kserve.io" for g in groups["groups"]):
        pytest.skip("the KServe CRD is already installed in this session's cluster (test order)")
    ns = k8s_cluster.new_namespace()
    d = make_deployer(tmp_path, k8s_cluster.kubeconfig, ns, flavor="kserve")
    with pytest.raises(ConfigError, match="serving.kserve.io"):
        d.deploy(spec("iris", "kit", 1, images[1], kit), wait=0)


@pytest.fixture(scope="session")
def kserve_crd(k8s_cluster: Any) -> None:
    crd = HERE / "data" / "kserve-inferenceservice-crd.json"
    # Server-side: the CRD is too large for client-side apply's last-applied annotation.
    k8s_cluster.kubectl("apply", "--server-side", "-f", str(crd))
    _wait_established(k8s_cluster, "inferenceservices.serving.kserve.io")


def test_kserve_inference_service_is_accepted(kserve_crd: None, deployer: Any, images: dict[int, ImageRef],
                                              kit: Any, k8s_cluster: Any, k8s_namespace: str) -> None:
    ns = k8s_namespace
    # No KServe controller runs here: wait=0 applies and returns what the cluster reports.
    d = deployer.deploy(spec("iris", "kit", 1, images[1], kit, flavor="kserve"), wait=0)
    assert (d.version, d.state, d.details["flavor"]) == (1, "starting", "kserve")
    isvc = kubectl_json(k8s_cluster, "-n", ns, "get", "inferenceservice", "iris")
    (c,) = isvc["spec"]["predictor"]["containers"]
    assert c["image"].endswith("@" + images[1].digest)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["ports"] == [{"containerPort": 8080, "name": "http", "protocol": "TCP"}], "nothing was pruned"
    assert isvc["spec"]["predictor"]["securityContext"]["runAsNonRoot"] is True
    # Re-apply: no-op.
    deployer.deploy(spec("iris", "kit", 1, images[1], kit, flavor="kserve"), wait=0)
    assert kubectl_json(k8s_cluster, "-n", ns, "get", "inferenceservice", "iris")["metadata"]["resourceVersion"] == \
        isvc["metadata"]["resourceVersion"]
    assert [x.name for x in deployer.list()] == ["iris"]
    # The schema is enforced: a wrong type is refused by the API server.
    bad = dict(isvc, metadata={"name": "bad", "namespace": ns})
    bad["spec"] = json.loads(json.dumps(isvc["spec"]))
    bad["spec"]["predictor"]["minReplicas"] = "two"
    out = k8s_cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0 and "minReplicas" in out.stderr
    deployer.delete("iris")
    with pytest.raises(NotFoundError):
        deployer.get("iris")


# ------------------------------------------------------------------ GitOps
def _stack_env(tmp_path: Path, registry_host: str, base: str, kubeconfig: Path, ns: str) -> dict[str, str]:
    import os

    return {**os.environ, "MLOPS_HOME": str(tmp_path / "home"), "MLOPS_BUILDER": "oci",
            "MLOPS_BUILDER__BASE": base, "MLOPS_BUILDER__REPOSITORY": f"{registry_host}/kit",
            "MLOPS_BUILDER__RUNTIME_DISTRIBUTIONS": "mlops-core", "MLOPS_BUILDER__PYTHON_VERSION": "3.11",
            "MLOPS_BUILDER__PROGRESS": "false",
            "MLOPS_DEPLOYER": "kubernetes", "MLOPS_DEPLOYER__KUBECONFIG": str(kubeconfig),
            "MLOPS_DEPLOYER__NAMESPACE": ns}


def _mlops(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "mlops"
    return subprocess.run([str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_gitops_manifests_are_deterministic_and_the_api_server_accepts_them(
        k8s_cluster: Any, k8s_namespace: str, oci_registry: Any, kit: Any, kserve_crd: None, tmp_path: Path) -> None:
    ns = k8s_namespace
    base = tiny_base_layout(tmp_path / "base")
    env = _stack_env(tmp_path, oci_registry.host, base, k8s_cluster.kubeconfig, ns)
    reg = _mlops("models", "save", str(kit.path), "--name", "iris", "--alias", "prod", env=env, cwd=tmp_path)
    assert reg.returncode == 0, reg.stderr
    out_a, out_b, out_k = tmp_path / "a", tmp_path / "b", tmp_path / "k"
    first = _mlops("k8s", "manifests", "models:/iris@prod", "-o", str(out_a), "--option", "hpa=true",
                   "--option", "pdb=true", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _mlops("k8s", "manifests", "models:/iris@prod", "-o", str(out_b), "--option", "hpa=true",
                    "--option", "pdb=true", env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    files = sorted(p.name for p in out_a.iterdir())
    assert files == ["01-service-iris.yaml", "02-deployment-iris.yaml", "03-horizontalpodautoscaler-iris.yaml",
                     "04-poddisruptionbudget-iris.yaml"]
    assert all((out_a / f).read_bytes() == (out_b / f).read_bytes() for f in files), "same inputs, same bytes"
    # Current API versions by default (autoscaling/v2, policy/v1): this 1.20 server only has the betas, so
    # the dry run covers the objects it serves and --cluster picks the versions it has.
    dry = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", str(out_a / files[0]), "-f", str(out_a / files[1]))
    assert "(server dry run)" in dry.stdout
    cl = _mlops("k8s", "manifests", "models:/iris@prod", "-o", str(out_a), "--option", "hpa=true",
                "--option", "pdb=true", "--cluster", env=env, cwd=tmp_path)
    assert cl.returncode == 0, cl.stderr
    dry = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", str(out_a))
    assert dry.stdout.count("(server dry run)") == 4, dry.stdout
    kserve = _mlops("k8s", "manifests", "models:/iris@prod", "--flavor", "kserve", "-o", str(out_k), env=env,
                    cwd=tmp_path)
    assert kserve.returncode == 0, kserve.stderr
    assert sorted(p.name for p in out_k.iterdir()) == ["01-inferenceservice-iris.yaml"]
    dry = k8s_cluster.kubectl("apply", "--dry-run=server", "-f", str(out_k))
    assert "inferenceservice.serving.kserve.io/iris" in dry.stdout
    # Same renderer as deploy: the deployed Deployment carries the manifest's template.
    import yaml

    dep = _mlops("deploy", "models:/iris@prod", "--name", "iris", "--wait", "120", env=env, cwd=tmp_path)
    assert dep.returncode == 0, dep.stderr
    live = kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")
    manifest = yaml.safe_load((out_a / "02-deployment-iris.yaml").read_text())
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == \
        manifest["spec"]["template"]["spec"]["containers"][0]["image"]
    assert live["spec"]["template"]["metadata"]["annotations"]["mlops.dev/bundle-digest"] == \
        manifest["spec"]["template"]["metadata"]["annotations"]["mlops.dev/bundle-digest"]
    # The core's workflows on top: an update, a rollback (the deployment's options carried), doctor.
    reg2 = _mlops("models", "save", str(kit.path), "--name", "iris", env=env, cwd=tmp_path)
    assert reg2.returncode == 0, reg2.stderr
    up = _mlops("deploy", "models:/iris/2", "--name", "iris", "--wait", "120", "--option", "replicas=2", "--json",
                env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert (json.loads(up.stdout)["version"], json.loads(up.stdout)["previous_version"]) == (2, 1)
    back = _mlops("deployments", "rollback", "iris", "--wait", "120", "--json", env=env, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert (json.loads(back.stdout)["version"], json.loads(back.stdout)["previous_version"]) == (1, 2)
    assert kubectl_json(k8s_cluster, "-n", ns, "get", "deployment", "iris")["spec"]["replicas"] == 2
    doctor = _mlops("doctor", "deployer", env=env, cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "Kubernetes v1.20.2" in doctor.stdout and f"registry {oci_registry.host} answers" in doctor.stdout
    bad = _mlops("k8s", "manifests", "models:/iris@prod", "-o", str(out_a), "--option", "replica=2", env=env,
                 cwd=tmp_path)
    assert bad.returncode == 2 and "error: unknown kubernetes option(s) replica" in bad.stderr
    assert "hint: valid options:" in bad.stderr
