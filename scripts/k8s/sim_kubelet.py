#!/usr/bin/env python3
"""A simulated kubelet for the test control plane (like kwok): no containers run, but the API sees a real node.

It registers a Ready Node, renews its Lease in ``kube-node-lease``, and watches the pods bound to it:

* each container image is resolved against the OCI registry it names (``HEAD /v2/<repo>/manifests/<ref>``; plain
  http for loopback registries and ``--insecure-registry`` hosts, the pod's ``imagePullSecrets`` for 401s). Only
  loopback registries are contacted unless ``--allow-registry``/``MLOPS_K8S_ALLOWED_REGISTRIES`` names others;
  an image elsewhere (``nginx``, ``ghcr.io/...``) fails to pull with a message that says so. When
  every image resolves the pod becomes Running with its containers started and ready (readiness = image resolves;
  probes are not executed). When one does not, its container waits with ``ErrImagePull`` and then
  ``ImagePullBackOff``, with ``Failed``/``BackOff`` Events on the pod, as a real kubelet reports them; the pull is
  retried with a back-off, so pushing the image later heals the pod.
* annotation ``sim.mlops.dev/crash: "true"`` makes every container crash: ``CrashLoopBackOff``, a growing
  ``restartCount``, ``lastState.terminated`` with exit code 1 and ``BackOff`` Events.
* a deleted pod (deletionTimestamp set) is finished by deleting it with grace period 0, as the kubelet does once
  its containers have stopped.

Pod IPs come from 10.244.0.0/16, not loopback: the Endpoints API rejects loopback addresses. Nothing connects
to them. Run by scripts/k8s-control-plane.sh with the node's client certificate (Node authorizer + NodeRestriction).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import heapq
import ipaddress
import json
import logging
import os
import queue
import secrets
import threading
import time

import requests
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger("sim-kubelet")
CRASH_ANNOTATION = "sim.mlops.dev/crash"
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])
BACKOFF_FIRST, BACKOFF_MAX = 2.0, 20.0  # seconds; a real kubelet starts at 10 s and caps at 5 min


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def signature(value):
    """The value without timestamps and with conditions in a fixed order, to tell real status changes apart."""
    if isinstance(value, dict):
        return {k: signature(v) for k, v in value.items() if not (k.endswith("At") or k.endswith("Time"))}
    if isinstance(value, list):
        items = [signature(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    return value


def parse_image(image: str) -> tuple[str, str, str]:
    """``[host[:port]/]repo[:tag|@digest]`` -> (host, repository, reference), with Docker Hub's defaults."""
    name, ref = image, "latest"
    if "@" in name:
        name, ref = name.split("@", 1)
    elif ":" in name.rsplit("/", 1)[-1]:
        name, ref = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, ref
    return "registry-1.docker.io", name if "/" in name else f"library/{name}", ref


class ImageResolver:
    """Resolves image references to manifest digests against their registries, like a pull's first request."""

    def __init__(self, insecure: set[str], allowed: set[str]) -> None:
        self.insecure, self.allowed = insecure, allowed
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies: registries are on loopback

    @staticmethod
    def _loopback(host: str) -> bool:
        hostname = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or host.startswith("[") else host
        try:
            return ipaddress.ip_address(hostname).is_loopback
        except ValueError:
            return hostname == "localhost"

    def resolve(self, image: str, auths: dict[str, tuple[str, str]]) -> tuple[str | None, str]:
        """(digest, "") when the manifest exists, else (None, the pull error a kubelet would print)."""
        host, repo, ref = parse_image(image)
        loopback = self._loopback(host)
        if not loopback and host not in self.allowed and host not in self.insecure:
            # The test machine keeps all traffic on loopback: other registries are not contacted at all.
            return None, (f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": registry {host} '
                          "is not on loopback and the simulated kubelet does not contact it "
                          "(allow it with MLOPS_K8S_ALLOWED_REGISTRIES)")
        scheme = "http" if loopback or host in self.insecure else "https"
        url = f"{scheme}://{host}/v2/{repo}/manifests/{ref}"
        headers = {"Accept": MANIFEST_ACCEPT}
        try:
            r = self.http.head(url, headers=headers, timeout=3)
            if r.status_code == 401:
                r = self._retry_authorized(r, url, headers, auths.get(host), repo)
        except requests.RequestException as e:
            return None, f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": {e}'
        if r.status_code == 200:
            return r.headers.get("Docker-Content-Digest") or ref, ""
        if r.status_code == 404:
            return None, f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": {image}: not found'
        return None, (f'rpc error: code = Unknown desc = failed to pull and unpack image "{image}": unexpected status '
                      f"{r.status_code} from HEAD {url}")

    def _retry_authorized(self, r, url, headers, cred, repo):
        if not cred:
            return r
        challenge = r.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("bearer"):
            params = dict(p.split("=", 1) for p in challenge[6:].replace('"', "").split(",") if "=" in p)
            tok = self.http.get(params.pop("realm"), params={**params, "scope": f"repository:{repo}:pull"},
                                auth=cred, timeout=3)
            tok.raise_for_status()
            body = tok.json()
            token = body.get("token") or body.get("access_token")
            return self.http.head(url, headers={**headers, "Authorization": f"Bearer {token}"}, timeout=3)
        return self.http.head(url, headers=headers, auth=cred, timeout=3)


class SimKubelet:
    def __init__(self, node: str, args: argparse.Namespace) -> None:
        self.node, self.args = node, args
        self.core = client.CoreV1Api()
        self.coord = client.CoordinationV1Api()
        self.resolver = ImageResolver(set(filter(None, args.insecure_registry)), set(filter(None, args.allow_registry)))
        self.pods: dict[tuple[str, str], dict] = {}   # (ns, name) -> latest pod as JSON
        self.sims: dict[str, dict] = {}               # uid -> simulation state
        self.lock = threading.Lock()
        self.work: queue.Queue = queue.Queue()
        self.timers: list[tuple[float, tuple[str, str]]] = []
        self.next_ip = 2

    # ------------------------------------------------------------------ node and lease
    def node_status(self) -> dict:
        cond = lambda t, s, reason, msg: {"type": t, "status": s, "reason": reason, "message": msg,  # noqa: E731
                                          "lastHeartbeatTime": now(), "lastTransitionTime": self.started}
        res = {"cpu": self.args.cpu, "memory": self.args.memory, "pods": str(self.args.pods),
               "ephemeral-storage": "100Gi"}
        return {"capacity": res, "allocatable": res,
                "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated"),
                               cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated"),
                               cond("PIDPressure", "False", "KubeletHasSufficientPID", "simulated"),
                               cond("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status")],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {"machineID": "sim", "systemUUID": "sim", "bootID": "sim", "kernelVersion": os.uname().release,
                             "osImage": "mlops simulated kubelet", "containerRuntimeVersion": "sim://1.0",
                             "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
                             "operatingSystem": "linux", "architecture": "amd64"}}

    def register(self) -> None:
        self.started = now()
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "type": "sim-kubelet"}
        try:
            self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": labels}})
        except ApiException as e:
            if e.status != 409:
                raise
        self.core.patch_node_status(self.node, {"status": self.node_status()})
        log.info("node %s registered", self.node)

    def heartbeat(self) -> None:
        while True:
            try:
                self.renew_lease()
                self.core.patch_node_status(self.node, {"status": {"conditions": self.node_status()["conditions"]}})
            except Exception:  # keep beating; the API may be restarting
                log.exception("heartbeat failed")
            time.sleep(self.args.heartbeat)

    def renew_lease(self) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": stamp}
        try:
            self.coord.patch_namespaced_lease(self.node, "kube-node-lease", {"spec": spec})
        except ApiException as e:
            if e.status != 404:
                raise
            node = self.core.read_node(self.node)
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node.metadata.uid}
            self.coord.create_namespaced_lease("kube-node-lease", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": spec})

    # ------------------------------------------------------------------ pods
    def watch_pods(self) -> None:
        """List then watch the pods bound to this node; re-list on any error or an expired resourceVersion."""
        selector = f"spec.nodeName={self.node}"
        api = self.core.api_client
        while True:
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                seen = set()
                for pod in listing.items:
                    self.on_pod(api.sanitize_for_serialization(pod))
                    seen.add((pod.metadata.namespace, pod.metadata.name))
                with self.lock:
                    for key in set(self.pods) - seen:
                        self.pods.pop(key, None)
                rv = listing.metadata.resource_version
                while True:
                    w = watch.Watch()
                    for ev in w.stream(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                       resource_version=rv, timeout_seconds=300, allow_watch_bookmarks=True,
                                       _preload_content=False):
                        obj = ev["raw_object"]
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if ev["type"] == "ERROR":
                            raise ApiException(status=obj.get("code", 500), reason=obj.get("message"))
                        if ev["type"] == "BOOKMARK":
                            continue
                        if ev["type"] == "DELETED":
                            with self.lock:
                                self.pods.pop((obj["metadata"]["namespace"], obj["metadata"]["name"]), None)
                                self.sims.pop(obj["metadata"]["uid"], None)
                        else:
                            self.on_pod(obj)
            except Exception as e:  # 410 Gone, connection reset, apiserver restart...
                log.info("pod watch ended (%s); re-listing", e)
                time.sleep(0.5)

    def on_pod(self, pod: dict) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        with self.lock:
            self.pods[key] = pod
        self.work.put(key)

    def schedule(self, delay: float, key: tuple[str, str]) -> None:
        with self.lock:
            heapq.heappush(self.timers, (time.monotonic() + delay, key))

    def worker(self) -> None:
        while True:
            with self.lock:
                wait = self.timers[0][0] - time.monotonic() if self.timers else 1.0
                if wait <= 0:
                    self.work.put(heapq.heappop(self.timers)[1])
                    continue
            try:
                key = self.work.get(timeout=min(max(wait, 0.01), 1.0))
            except queue.Empty:
                continue
            with self.lock:
                pod = self.pods.get(key)
            if pod is None:
                continue
            try:
                self.sync(pod)
            except ApiException as e:
                if e.status not in (404, 409):
                    log.warning("sync %s/%s: %s", *key, e)
                    self.schedule(1.0, key)
            except Exception:
                log.exception("sync %s/%s failed", *key)
                self.schedule(1.0, key)

    def event(self, pod: dict, container: str, etype: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        self.core.create_namespaced_event(meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": meta["namespace"],
                               "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion"),
                               "fieldPath": f"spec.containers{{{container}}}"},
            "reason": reason, "message": message, "type": etype, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(),
            "source": {"component": "kubelet", "host": self.node}, "reportingComponent": "kubelet",
            "reportingInstance": self.node})

    def pull_auths(self, pod: dict) -> dict[str, tuple[str, str]]:
        auths: dict[str, tuple[str, str]] = {}
        for ref in pod["spec"].get("imagePullSecrets") or []:
            try:
                sec = self.core.read_namespaced_secret(ref["name"], pod["metadata"]["namespace"])
                raw = json.loads(base64.b64decode((sec.data or {}).get(".dockerconfigjson", "e30=")))
            except (ApiException, ValueError):
                continue
            for host, entry in raw.get("auths", {}).items():
                user, pw = entry.get("username"), entry.get("password")
                if not user and entry.get("auth"):
                    user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
                auths[host.split("://")[-1].rstrip("/")] = (user or "", pw or "")
        return auths

    def sync(self, pod: dict) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if meta.get("deletionTimestamp"):
            body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid))
            self.core.delete_namespaced_pod(name, ns, body=body)
            return
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        with self.lock:
            sim = self.sims.setdefault(uid, {"ip": self.alloc_ip(), "start": now(), "images": {}, "announced": set()})
        crash = (meta.get("annotations") or {}).get(CRASH_ANNOTATION) == "true"
        auths = None
        t = time.monotonic()
        statuses, all_ready, pulled, retry = [], True, True, None
        for c in spec["containers"]:
            img = sim["images"].setdefault(c["name"], {"digest": None, "attempts": 0, "next": 0.0, "restarts": 0})
            if img["digest"] is None and t >= img["next"]:
                auths = self.pull_auths(pod) if auths is None else auths
                digest, err = self.resolver.resolve(c["image"], auths)
                if digest:
                    img["digest"] = digest
                    self.event(pod, c["name"], "Normal", "Pulled", f'Container image "{c["image"]}" resolved to {digest}')
                else:
                    img["attempts"] += 1
                    img["error"] = err
                    img["next"] = t + min(BACKOFF_FIRST * 2 ** (img["attempts"] - 1), BACKOFF_MAX)
                    self.event(pod, c["name"], "Warning", "Failed", f'Failed to pull image "{c["image"]}": {err}')
                    self.event(pod, c["name"], "Warning", "Failed", "Error: ErrImagePull")
                    img["reason"] = "ErrImagePull"
                    # A real kubelet reports ImagePullBackOff on the next sync while it waits to retry.
                    img["backoff_at"] = t + 1.0
            cs = {"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "started": False,
                  "restartCount": img["restarts"], "state": {}, "lastState": {}}
            if img["digest"] is None:
                if img.get("reason") == "ErrImagePull" and t >= img.get("backoff_at", 0):
                    img["reason"] = "ImagePullBackOff"
                    self.event(pod, c["name"], "Normal", "BackOff", f'Back-off pulling image "{c["image"]}"')
                    self.event(pod, c["name"], "Warning", "Failed", "Error: ImagePullBackOff")
                reason = img.get("reason", "ContainerCreating")
                msg = img["error"] if reason == "ErrImagePull" else f'Back-off pulling image "{c["image"]}"'
                cs["state"] = {"waiting": {"reason": reason, "message": msg}}
                all_ready = pulled = False
                nxt = img["next"] if reason == "ImagePullBackOff" else img.get("backoff_at", img["next"])
                retry = min(retry or nxt, nxt)
            else:
                host, repo, _ = parse_image(c["image"])
                cs["imageID"] = f"{host}/{repo}@{img['digest']}"
                cs["containerID"] = f"sim://{uid[:8]}-{c['name']}"
                if crash:
                    all_ready = False
                    if t >= img.get("crash_next", 0):
                        img["restarts"] += 1
                        img["crash_next"] = t + min(BACKOFF_FIRST * 2 ** img["restarts"], BACKOFF_MAX)
                        self.event(pod, c["name"], "Warning", "BackOff", "Back-off restarting failed container")
                    cs["restartCount"] = img["restarts"]
                    cs["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "startedAt": sim["start"],
                                                      "finishedAt": now()}} if img["restarts"] else {}
                    cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                               f"back-off restarting failed container {c['name']} in pod {name}"}}
                    retry = min(retry or img["crash_next"], img["crash_next"])
                else:
                    if c["name"] not in sim["announced"]:
                        sim["announced"].add(c["name"])
                        self.event(pod, c["name"], "Normal", "Created", f"Created container {c['name']}")
                        self.event(pod, c["name"], "Normal", "Started", f"Started container {c['name']}")
                    cs.update(ready=True, started=True, state={"running": {"startedAt": sim["start"]}})
            statuses.append(cs)
        self.write_status(pod, sim, statuses, pulled, all_ready)
        if retry is not None:
            self.schedule(max(retry - time.monotonic(), 0.05), (ns, name))

    def write_status(self, pod: dict, sim: dict, statuses: list[dict], pulled: bool, ready: bool) -> None:
        status = pod.get("status") or {}
        flag = "True" if ready else "False"
        old = {c["type"]: c for c in status.get("conditions") or []}

        def cond(kind: str, value: str) -> dict:
            prev = old.get(kind, {})
            since = prev.get("lastTransitionTime") if prev.get("status") == value else None
            return {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since or now(),
                    **({} if value == "True" else {"reason": "ContainersNotReady"})}

        inits = [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                  "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": sim["start"],
                                           "finishedAt": sim["start"]}}}
                 for c in pod["spec"].get("initContainers") or []]
        new = {"phase": "Running" if pulled else "Pending", "hostIP": "127.0.0.1", "podIP": sim["ip"],
               "podIPs": [{"ip": sim["ip"]}], "startTime": sim["start"],
               "conditions": [cond("Initialized", "True"), cond("Ready", flag), cond("ContainersReady", flag),
                              cond("PodScheduled", "True")],
               "containerStatuses": statuses, "initContainerStatuses": inits}
        if signature({k: status.get(k) for k in new}) == signature(new):
            return  # nothing changed but timestamps: no write, so our own update events settle
        # Replace the status (not a merge patch) so stale container states do not linger; a conflict means a newer
        # pod is on its way through the watch and will be synced then.
        body = {**pod, "status": {**status, **new}}
        self.core.replace_namespaced_pod_status(pod["metadata"]["name"], pod["metadata"]["namespace"], body)

    def alloc_ip(self) -> str:
        n = self.next_ip
        self.next_ip += 1
        return str(ipaddress.ip_address("10.244.0.0") + n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node-name", default="sim-node-0")
    ap.add_argument("--cpu", default="8")
    ap.add_argument("--memory", default="32Gi")
    ap.add_argument("--pods", type=int, default=110)
    ap.add_argument("--heartbeat", type=float, default=10.0, help="seconds between lease renewals")
    ap.add_argument("--insecure-registry", action="append",
                    default=os.environ.get("MLOPS_K8S_IMAGE_REGISTRY_INSECURE", "").split(","),
                    help="host:port reached over plain http (loopback registries always are)")
    ap.add_argument("--allow-registry", action="append",
                    default=os.environ.get("MLOPS_K8S_ALLOWED_REGISTRIES", "").split(","),
                    help="host[:port] of a non-loopback registry the kubelet may contact (https); none by default")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config.load_kube_config(config_file=args.kubeconfig)
    kubelet = SimKubelet(args.node_name, args)
    kubelet.register()
    kubelet.renew_lease()
    threading.Thread(target=kubelet.heartbeat, daemon=True, name="heartbeat").start()
    threading.Thread(target=kubelet.worker, daemon=True, name="worker").start()
    kubelet.watch_pods()


if __name__ == "__main__":
    main()
