"""The test control plane itself works for real: a 1.20.2 apiserver, controllers, scheduler, simulated kubelet.

These tests pin what the deployer tests rely on: rollouts and scaling complete, image pull failures surface the
way a real kubelet reports them, deletions finish, and server-side apply works (with 1.20's Service quirk).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from mlops_core.testing.waiting import wait_until as kit_wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("k8s")]


def wait_until(what: str, check: Callable[[], Any], timeout: float = 90, cluster=None) -> Any:
    """The kit's ``wait_until``, with the simulated kubelet's log in the failure message."""
    try:
        return kit_wait_until(check, timeout, what, interval=0.2)
    except AssertionError as exc:
        if cluster is None:
            raise
        raise AssertionError(f"{exc}\nkubelet log:\n{cluster.logs('kubelet')}") from None


def deployment(name: str, image: str, replicas: int = 2, annotations: dict | None = None) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": {"metadata": {"labels": labels, "annotations": annotations or {}},
                                  "spec": {"terminationGracePeriodSeconds": 30,
                                           "containers": [{"name": "model", "image": image,
                                                           "ports": [{"containerPort": 8080}]}]}}}}


def pods(cluster, ns: str, selector: str) -> list[dict]:
    out = cluster.kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout
    return json.loads(out)["items"]


def ready(pod: dict) -> bool:
    conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
    return pod["status"].get("phase") == "Running" and conds.get("Ready") == "True"


def pod_events(cluster, ns: str, pod: str) -> list[dict]:
    out = cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                          f"involvedObject.kind=Pod,involvedObject.name={pod}", "-o", "json").stdout
    return json.loads(out)["items"]


def test_server_is_kubernetes_1_20_2_with_a_ready_node(k8s_cluster) -> None:
    from kubernetes import client

    with k8s_cluster.api_client() as api:
        assert client.VersionApi(api).get_code().git_version == "v1.20.2"
        node = client.CoreV1Api(api).read_node(k8s_cluster.node_name)
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
        assert not node.spec.taints, node.spec.taints
        lease = client.CoordinationV1Api(api).read_namespaced_lease(k8s_cluster.node_name, "kube-node-lease")
        assert lease.spec.holder_identity == k8s_cluster.node_name and lease.spec.renew_time is not None
    version = json.loads(k8s_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.20.2"
    assert k8s_cluster.server.startswith("https://127.0.0.1:")


def test_deployment_rolls_out_scales_updates_and_deletes(k8s_cluster, oci_registry) -> None:
    ns = k8s_cluster.new_namespace()
    v1 = oci_registry.push_tiny_image("models/iris", "v1")
    v2 = oci_registry.push_tiny_image("models/iris-two", "v2")
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(deployment("iris", v1, replicas=2)))
    k8s_cluster.kubectl("rollout", "status", "-n", ns, "deployment/iris", "--timeout=120s")

    rs = json.loads(k8s_cluster.kubectl("get", "replicasets", "-n", ns, "-o", "json").stdout)["items"]
    assert len(rs) == 1 and rs[0]["metadata"]["ownerReferences"][0]["name"] == "iris"
    running = pods(k8s_cluster, ns, "app=iris")
    assert len(running) == 2 and all(ready(p) for p in running), running
    for p in running:
        status = p["status"]["containerStatuses"][0]
        assert status["ready"] and status["state"]["running"]
        assert status["imageID"].endswith(v1.split("@")[1])  # the digest the registry reported
        assert p["status"]["podIP"] and p["spec"]["nodeName"] == k8s_cluster.node_name
        assert p["metadata"]["ownerReferences"][0]["name"] == rs[0]["metadata"]["name"]

    k8s_cluster.kubectl("scale", "-n", ns, "deployment/iris", "--replicas=3")
    k8s_cluster.kubectl("rollout", "status", "-n", ns, "deployment/iris", "--timeout=120s")
    wait_until("3 ready pods", lambda: sum(ready(p) for p in pods(k8s_cluster, ns, "app=iris")) == 3,
               cluster=k8s_cluster)

    # A rolling update to another image: a second ReplicaSet takes over, the old one is scaled to 0.
    k8s_cluster.kubectl("set", "image", "-n", ns, "deployment/iris", f"model={v2}")
    k8s_cluster.kubectl("rollout", "status", "-n", ns, "deployment/iris", "--timeout=120s")
    rs = json.loads(k8s_cluster.kubectl("get", "replicasets", "-n", ns, "-o", "json").stdout)["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 3]
    wait_until("only v2 pods", lambda: [p["spec"]["containers"][0]["image"] for p in pods(k8s_cluster, ns, "app=iris")]
               == [v2] * 3, cluster=k8s_cluster)

    k8s_cluster.kubectl("scale", "-n", ns, "deployment/iris", "--replicas=1")
    wait_until("1 pod after scaling down", lambda: len(pods(k8s_cluster, ns, "app=iris")) == 1, cluster=k8s_cluster)

    k8s_cluster.kubectl("delete", "-n", ns, "deployment/iris", "--wait=true", "--timeout=120s")
    wait_until("pods gone after deleting the deployment", lambda: not pods(k8s_cluster, ns, "app=iris"),
               cluster=k8s_cluster)
    assert not json.loads(k8s_cluster.kubectl("get", "replicasets", "-n", ns, "-o", "json").stdout)["items"]


def test_missing_image_reports_image_pull_backoff_with_events(k8s_cluster, oci_registry) -> None:
    ns = k8s_cluster.new_namespace()
    image = f"{oci_registry.host}/models/absent:v9"
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(deployment("absent", image, replicas=1)))

    def backing_off():
        found = pods(k8s_cluster, ns, "app=absent")
        waiting = found and found[0]["status"].get("containerStatuses", [{}])[0].get("state", {}).get("waiting")
        return found[0] if waiting and waiting["reason"] == "ImagePullBackOff" else None

    pod = wait_until("ImagePullBackOff", backing_off, cluster=k8s_cluster)
    assert not ready(pod) and pod["status"]["phase"] == "Pending"
    events = pod_events(k8s_cluster, ns, pod["metadata"]["name"])
    reasons = {(e["reason"], e["type"]) for e in events}
    assert ("Failed", "Warning") in reasons and ("BackOff", "Normal") in reasons, events
    pull_errors = [e["message"] for e in events if e["reason"] == "Failed" and "Failed to pull image" in e["message"]]
    assert pull_errors and image in pull_errors[0] and "not found" in pull_errors[0]
    assert all(e["source"]["component"] == "kubelet" for e in events if e["reason"] in ("Failed", "BackOff"))

    # The rollout does not complete; kubectl says so once the deadline passes.
    stuck = k8s_cluster.kubectl("rollout", "status", "-n", ns, "deployment/absent", "--timeout=3s", check=False)
    assert stuck.returncode != 0

    # Pushing the image heals the pod on the kubelet's next pull attempt, as with a real kubelet.
    oci_registry.push_tiny_image("models/absent", "v9")
    k8s_cluster.kubectl("rollout", "status", "-n", ns, "deployment/absent", "--timeout=120s")


def test_unreachable_registry_reports_err_image_pull(k8s_cluster) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ns = k8s_cluster.new_namespace()
    image = f"127.0.0.1:{port}/models/nowhere:v1"
    k8s_cluster.kubectl("run", "nowhere", "-n", ns, f"--image={image}", "--restart=Never")

    def failed_pull():
        events = pod_events(k8s_cluster, ns, "nowhere")
        return [e for e in events if e["reason"] == "Failed" and "Failed to pull image" in e["message"]]

    events = wait_until("a pull failure event", failed_pull, cluster=k8s_cluster)
    assert image in events[0]["message"] and "Connection refused" in events[0]["message"], events[0]["message"]
    pod = json.loads(k8s_cluster.kubectl("get", "pod", "-n", ns, "nowhere", "-o", "json").stdout)
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] in ("ErrImagePull", "ImagePullBackOff")


def test_crash_annotation_simulates_crash_loop_backoff(k8s_cluster, oci_registry) -> None:
    ns = k8s_cluster.new_namespace()
    image = oci_registry.push_tiny_image("models/crashy", "v1")
    k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(
        deployment("crashy", image, replicas=1, annotations={"sim.mlops.dev/crash": "true"})))

    def restarted_twice():
        found = pods(k8s_cluster, ns, "app=crashy")
        cs = found and (found[0]["status"].get("containerStatuses") or [None])[0]
        return found[0] if cs and cs["restartCount"] >= 2 else None

    pod = wait_until("restartCount >= 2", restarted_twice, cluster=k8s_cluster)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff" and not cs["ready"]
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert any(e["reason"] == "BackOff" and "restarting failed container" in e["message"]
               for e in pod_events(k8s_cluster, ns, pod["metadata"]["name"]))


def test_server_side_apply_of_a_service(k8s_cluster) -> None:
    ns = k8s_cluster.new_namespace()
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris", "labels": {"app": "iris"}},
               "spec": {"selector": {"app": "iris"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    apply = ("apply", "--server-side", "--field-manager=mlops-test", "-n", ns, "-f", "-")
    k8s_cluster.kubectl(*apply, input=json.dumps(service))
    first = json.loads(k8s_cluster.kubectl("get", "service", "-n", ns, "iris", "-o", "json").stdout)
    assert first["spec"]["ports"][0]["port"] == 80 and first["spec"]["clusterIP"].startswith("10.0.0.")
    managers = {m["manager"] for m in first["metadata"]["managedFields"]}
    assert "mlops-test" in managers
    k8s_cluster.kubectl(*apply, input=json.dumps(service))
    again = json.loads(k8s_cluster.kubectl("get", "service", "-n", ns, "iris", "-o", "json").stdout)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # a no-op

    # Kubernetes 1.20's quirk, pinned so that it is not forgotten: without an explicit protocol the apply fails.
    del service["spec"]["ports"][0]["protocol"]
    service["metadata"]["name"] = "no-protocol"
    bad = k8s_cluster.kubectl(*apply, input=json.dumps(service), check=False)
    assert bad.returncode != 0 and "protocol" in bad.stderr, bad.stderr


def test_start_and_stop_leave_no_process(k8s_cluster, tmp_path: Path) -> None:
    """A second control plane starts from the warm cache and `stop` leaves none of its processes behind."""
    script = Path(__file__).resolve().parents[3] / "scripts" / "k8s-control-plane.sh"
    env = {**os.environ, "MLOPS_K8S_NODE_NAME": "sim-node-b"}
    started = subprocess.run(["bash", str(script), "start", str(tmp_path)], capture_output=True, text=True,
                             env=env, timeout=600)
    try:
        assert started.returncode == 0, started.stderr
        pids = {p.stem: int(p.read_text()) for p in tmp_path.glob("*.pid")}
        assert set(pids) >= {"etcd", "apiserver", "controller-manager", "scheduler", "kubelet"}
        for pid in pids.values():
            os.kill(pid, 0)  # running
        status = subprocess.run(["bash", str(script), "status", str(tmp_path)], capture_output=True, text=True)
        assert status.returncode == 0 and "apiserver running" in status.stdout
    finally:
        subprocess.run(["bash", str(script), "stop", str(tmp_path)], check=True, timeout=120)
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert not list(tmp_path.glob("*.pid"))
    status = subprocess.run(["bash", str(script), "status", str(tmp_path)], capture_output=True, text=True)
    assert status.returncode == 1 and "apiserver stopped" in status.stdout
