"""The ``kubernetes`` deployer: server-side apply of the rendered objects, rollout wait, automatic rollback.

Talks to the API server only through the official ``kubernetes`` client
(``DynamicClient.server_side_apply`` for writes, typed APIs for reads), imported
when the backend first needs it. State lives in the cluster: the objects'
labels and annotations say which model, version, bundle and image run, and the
Deployment (or InferenceService) keeps the exact render input of what it runs in
the ``mlops.dev/render`` annotation, so a failed rollout re-applies precisely the
previous objects.

Deploy (plain flavor), like ``kubectl apply --server-side`` + ``kubectl rollout status``:

1. discover the API versions the cluster serves (HPA, PDB, ServiceMonitor, KServe);
2. render, then server-side apply every object with field manager ``mlops-core``
   (``force`` only on our own objects: fields other managers own elsewhere survive);
3. wait until the Deployment's controller observed the new generation and the new
   ReplicaSet's pods are all updated and available, failing fast on a pod that reports
   ImagePullBackOff, ErrImagePull, CrashLoopBackOff or a bad image name, and on
   ``ProgressDeadlineExceeded``;
4. on failure: read the failing pods' container states and Events, re-apply the
   previous render (``maxUnavailable: 0`` kept the old pods serving all along), wait
   for that, and raise an MlopsError that names the reason. A first deploy that fails
   is deleted instead.

Re-applying the same inputs changes nothing: no timestamp or counter is written, so
the API server keeps the same ``resourceVersion``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from mlops_core.entities import Deployment, DeploymentSpec, utcnow
from mlops_core.errors import BackendUnavailableError, ConfigError, InvalidInputError, MlopsError, NotFoundError
from mlops_core.interfaces import BackendContext, Deployer

from .config import KubernetesDeployerConfig, with_options
from .render import ANNOTATION, ApiVersions, RenderInput, check_name, render

__all__ = ["KubernetesDeployer", "RolloutFailedError", "FIELD_MANAGER", "render_input"]

FIELD_MANAGER = "mlops-core"
RENDER_ANNOTATION = f"{ANNOTATION}/render"
PREVIOUS_ANNOTATION = f"{ANNOTATION}/previous-version"
MANAGED = "app.kubernetes.io/managed-by=mlops-core"
#: Container waiting reasons that end a rollout at once (a real kubelet retries them with back-off forever).
FATAL_REASONS = ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "ErrImageNeverPull")
#: ErrImagePull can be a registry blip: it must persist this long before the rollout fails on it.
PULL_ERROR_GRACE_S = 3.0


class RolloutFailedError(MlopsError):
    """A rollout did not complete; ``reason`` is the pod's or the Deployment's (e.g. ImagePullBackOff)."""

    def __init__(self, message: str, *, reason: str, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class KubernetesDeployer(Deployer):
    requires_image = True

    def __init__(self, config: KubernetesDeployerConfig, context: BackendContext) -> None:
        self.config = config
        self.context = context
        self._api: Any = None
        self._dynamic: Any = None
        self._groups: dict[str, list[str]] | None = None
        #: HTTP requests sent to the API server by this deployer (the benchmark reads it).
        self.api_calls = 0

    # ------------------------------------------------------------- client
    @property
    def api(self) -> Any:
        """The ``kubernetes`` ApiClient (built, and the client imported, on first use)."""
        if self._api is None:
            try:
                from kubernetes import client, config as kconfig
            except ImportError:  # pragma: no cover - a declared dependency
                raise ConfigError("the kubernetes deployer needs the kubernetes client",
                                  hint="pip install mlops-kubernetes") from None
            in_cluster = self.config.in_cluster
            kubeconfig = self._kubeconfig_path()
            if in_cluster is None:
                in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
            try:
                if in_cluster:
                    configuration = client.Configuration()
                    kconfig.load_incluster_config(client_configuration=configuration)
                    api = client.ApiClient(configuration)
                else:
                    if kubeconfig is None:
                        raise ConfigError("no kubeconfig found (KUBECONFIG unset and no ~/.kube/config)",
                                          hint="set kubeconfig = \"PATH\" under [deployer], or in_cluster = true "
                                               "inside a pod")
                    api = kconfig.new_client_from_config(config_file=str(kubeconfig), context=self.config.context,
                                                         persist_config=False)
            except kconfig.ConfigException as exc:
                raise ConfigError(f"cannot use the Kubernetes configuration: {exc}",
                                  hint="check kubeconfig/context under [deployer] (kubectl config get-contexts)") from None
            self._count_requests(api)
            self._api = api
        return self._api

    def _kubeconfig_path(self) -> Path | None:
        if self.config.kubeconfig:
            path = self.context.resolve_path(self.config.kubeconfig)
            if not path.is_file():
                raise ConfigError(f"kubeconfig {path} does not exist", hint="fix kubeconfig under [deployer]")
            return path
        for candidate in (os.environ.get("KUBECONFIG", "").split(os.pathsep)[0], "~/.kube/config"):
            if candidate and Path(candidate).expanduser().is_file():
                return Path(candidate).expanduser()
        return None

    def _count_requests(self, api: Any) -> None:
        # Every request of the client (typed, custom-object and dynamic) goes through ApiClient.call_api.
        original = api.call_api

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.api_calls += 1
            return original(*args, **kwargs)

        api.call_api = counted

    @property
    def dynamic(self) -> Any:
        if self._dynamic is None:
            from kubernetes.dynamic import DynamicClient

            cache = self.context.home / "cache" / "kubernetes"
            cache.mkdir(parents=True, exist_ok=True)
            host = self.api.configuration.host
            import hashlib

            name = hashlib.sha256(host.encode()).hexdigest()[:16]
            self._dynamic = self._call(lambda: DynamicClient(self.api, cache_file=str(cache / f"discovery-{name}.json")))
        return self._dynamic

    def _call(self, fn: Callable[[], Any], what: str = "the Kubernetes API") -> Any:
        """Run one client call, turning transport and authorization failures into project errors."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError
        import urllib3.exceptions

        try:
            return fn()
        except (ApiException, DynamicApiError) as exc:
            status = getattr(exc, "status", None)
            body = _error_message(exc)
            if status in (401, 403):
                raise MlopsError(f"{what} refused the request ({status}): {body}",
                                 hint="the account needs the Role in docs/k8s-rbac.yaml; run `mlops doctor`") from None
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            host = self._api.configuration.host if self._api is not None else "?"
            raise BackendUnavailableError(f"cannot reach the Kubernetes API server at {host}: {exc}",
                                          hint="check the kubeconfig's server address and that the cluster is up "
                                               "(kubectl cluster-info)") from None

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
        self._api = self._dynamic = None
        self._groups = None

    # ------------------------------------------------------------- discovery
    def api_groups(self) -> dict[str, list[str]]:
        """group -> versions the cluster serves (one call to /apis), cached per deployer."""
        if self._groups is None:
            from kubernetes import client

            groups = self._call(lambda: client.ApisApi(self.api).get_api_versions())
            self._groups = {g.name: [v.version for v in g.versions] for g in groups.groups}
        return self._groups

    def api_versions(self, config: KubernetesDeployerConfig | None = None) -> ApiVersions:
        """The HPA and PDB versions to write and whether to write a ServiceMonitor, from discovery."""
        config = config or self.config
        groups = self.api_groups()
        monitor = config.service_monitor
        if monitor is None:
            monitor = "v1" in groups.get("monitoring.coreos.com", [])
        elif monitor and "v1" not in groups.get("monitoring.coreos.com", []):
            raise ConfigError("service_monitor = true but the cluster has no monitoring.coreos.com/v1 ServiceMonitor CRD",
                              hint="install the Prometheus operator, or set service_monitor = auto")
        return ApiVersions(hpa="autoscaling/v2" if "v2" in groups.get("autoscaling", []) else "autoscaling/v2beta2",
                           pdb="policy/v1" if "v1" in groups.get("policy", []) else "policy/v1beta1",
                           service_monitor=bool(monitor))

    def _has_kserve(self) -> bool:
        return "v1beta1" in self.api_groups().get("serving.kserve.io", [])

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._call(lambda: self.dynamic.resources.get(api_version=api_version, kind=kind))

    # ------------------------------------------------------------- apply
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply one object as field manager ``mlops-core``; returns the live object."""
        resource = self._resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        try:
            live = self._call(lambda: resource.server_side_apply(
                body=obj, name=meta["name"], namespace=meta.get("namespace"), field_manager=FIELD_MANAGER,
                force_conflicts=True), what=f"applying {obj['kind']} {meta['name']}")
        except Exception as exc:
            if getattr(exc, "status", None) == 404 and meta.get("namespace"):
                raise NotFoundError(f"namespace {meta['namespace']!r} does not exist: {_error_message(exc)}",
                                    hint=f"create it (kubectl create namespace {meta['namespace']}) or set namespace "
                                         "under [deployer]") from None
            if getattr(exc, "status", None) in (400, 422):
                raise InvalidInputError(f"the API server rejected {obj['kind']} {meta['name']}: {_error_message(exc)}",
                                        hint="check the deployer settings and --option values") from None
            raise
        return live.to_dict()

    # ------------------------------------------------------------- reads
    def _read_current(self, name: str, namespace: str) -> tuple[str, dict[str, Any]] | None:
        """(flavor, live object) of our deployment ``name``, or None."""
        from kubernetes import client

        try:
            dep = self._call(lambda: client.AppsV1Api(self.api).read_namespaced_deployment(name, namespace))
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
        else:
            obj = self.api.sanitize_for_serialization(dep)
            if (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "mlops-core":
                return "plain", obj
        if self._has_kserve():
            try:
                isvc = self._call(lambda: client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                    "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name))
            except Exception as exc:
                if getattr(exc, "status", None) != 404:
                    raise
            else:
                if (isvc["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "mlops-core":
                    return "kserve", isvc
        return None

    def get(self, name: str) -> Deployment:
        found = self._read_current(name, self.config.namespace)
        if found is None:
            raise NotFoundError(f"no deployment named {name!r} in namespace {self.config.namespace!r}",
                                hint="list them with `mlops deployments list` (or deploy one)")
        return self._to_deployment(*found)

    def list(self) -> Sequence[Deployment]:
        from kubernetes import client

        ns = self.config.namespace
        deps = self._call(lambda: client.AppsV1Api(self.api).list_namespaced_deployment(ns, label_selector=MANAGED))
        out = [self._to_deployment("plain", self.api.sanitize_for_serialization(d)) for d in deps.items]
        if self._has_kserve():
            isvcs = self._call(lambda: client.CustomObjectsApi(self.api).list_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", ns, "inferenceservices", label_selector=MANAGED))
            out += [self._to_deployment("kserve", i) for i in isvcs.get("items", [])]
        return sorted(out, key=lambda d: d.name)

    def _to_deployment(self, flavor: str, obj: dict[str, Any]) -> Deployment:
        meta = obj["metadata"]
        annotations = meta.get("annotations") or {}
        status = obj.get("status") or {}
        render_input = json.loads(annotations.get(RENDER_ANNOTATION, "{}") or "{}")
        ns = meta.get("namespace", self.config.namespace)
        port = (render_input.get("config") or {}).get("service_port", self.config.service_port)
        details: dict[str, Any] = {
            "namespace": ns, "flavor": flavor, "bundle_digest": annotations.get(f"{ANNOTATION}/bundle-digest", ""),
            "image": render_input.get("image", ""), "image_digest": annotations.get(f"{ANNOTATION}/image-digest", ""),
            "options": json.loads(annotations.get(f"{ANNOTATION}/options", "{}") or "{}"),
            "generation": meta.get("generation"), "resource_version": meta.get("resourceVersion"),
            "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message") if c.get(k) is not None}
                           for c in status.get("conditions") or []],
        }
        if flavor == "plain":
            state, reason = deployment_state(obj)
            spec = obj.get("spec") or {}
            details.update({
                "replicas": spec.get("replicas"), "updated_replicas": status.get("updatedReplicas", 0),
                "ready_replicas": status.get("readyReplicas", 0), "available_replicas": status.get("availableReplicas", 0),
                "revision": annotations.get("deployment.kubernetes.io/revision"),
            })
            url = f"http://{meta['name']}.{ns}.svc:{port}"
        else:
            state, reason = inference_service_state(obj)
            url = status.get("url") or f"http://{meta['name']}.{ns}.svc"
        if reason:
            details["reason"] = reason
        prev = annotations.get(PREVIOUS_ANNOTATION)
        created = _parse_time(meta.get("creationTimestamp"))
        updated = max([created] + [_parse_time(c.get("lastUpdateTime") or c.get("lastTransitionTime"))
                                   for c in status.get("conditions") or []])
        return Deployment(
            name=meta["name"], model=annotations.get(f"{ANNOTATION}/model", render_input.get("model", meta["name"])),
            version=int(annotations.get(f"{ANNOTATION}/model-version", render_input.get("version", 0))),
            backend=self.context.name, state=state, url=url, previous_version=int(prev) if prev else None,
            created_at=created, updated_at=updated, details=details,
        )

    # ------------------------------------------------------------- deploy
    def deploy(self, spec: DeploymentSpec, *, wait: float = 60.0) -> Deployment:
        config = with_options(self.config, spec.options)
        if config.namespace != self.config.namespace:
            raise InvalidInputError("namespace cannot be changed per deploy",
                                    hint="set namespace under [deployer] (get, list and delete use it too)")
        if config.flavor == "kserve" and not self._has_kserve():
            raise ConfigError("flavor = \"kserve\" but the cluster serves no serving.kserve.io/v1beta1 API",
                              hint="install KServe (its InferenceService CRD), or use flavor = \"plain\"")
        inp = render_input(spec, config, self.api_versions(config))
        timeout = config.rollout_timeout if config.rollout_timeout is not None else wait
        current = self._read_current(inp.name, config.namespace)
        previous: RenderInput | None = None
        previous_version: int | None = None
        previous_kept: int | None = None
        if current is not None:
            flavor, live = current
            annotations = live["metadata"].get("annotations") or {}
            if RENDER_ANNOTATION in annotations:
                previous = RenderInput.from_json(json.loads(annotations[RENDER_ANNOTATION]))
            version = int(annotations.get(f"{ANNOTATION}/model-version", "0") or 0)
            kept = annotations.get(PREVIOUS_ANNOTATION)
            previous_kept = int(kept) if kept else None
            previous_version = version if version != inp.version else previous_kept
            if flavor != config.flavor:
                raise InvalidInputError(f"deployment {inp.name!r} runs as flavor {flavor!r}, not {config.flavor!r}",
                                        hint="delete it first (mlops deployments delete), or deploy under another --name")
        self._apply_all(inp, previous_version)
        try:
            self._wait(inp, timeout)
        except RolloutFailedError as failure:
            raise self._recover(inp, previous, previous_kept, failure, timeout) from None
        return self.get(inp.name)

    def _apply_all(self, inp: RenderInput, previous_version: int | None) -> list[dict[str, Any]]:
        objects = render(inp)
        for obj in objects:
            if obj["kind"] in ("Deployment", "InferenceService"):
                annotations = obj["metadata"]["annotations"]
                annotations[RENDER_ANNOTATION] = json.dumps(inp.to_json(), sort_keys=True, separators=(",", ":"))
                if previous_version is not None:
                    annotations[PREVIOUS_ANNOTATION] = str(previous_version)
            self.apply(obj)
        if inp.config.flavor == "plain":
            self._prune(inp, {(o["apiVersion"], o["kind"]) for o in objects})
        return objects

    def _prune(self, inp: RenderInput, keep: set[tuple[str, str]]) -> None:
        """Delete our HPA / PDB / ServiceMonitor of this name when the new render no longer has them."""
        apis = inp.apis
        candidates = [(apis.hpa, "HorizontalPodAutoscaler"), (apis.pdb, "PodDisruptionBudget")]
        if "v1" in self.api_groups().get("monitoring.coreos.com", []):
            candidates.append(("monitoring.coreos.com/v1", "ServiceMonitor"))
        for api_version, kind in candidates:
            if (api_version, kind) in keep:
                continue
            self._delete_object(api_version, kind, inp.name, inp.config.namespace, only_ours=True)

    def _delete_object(self, api_version: str, kind: str, name: str, namespace: str, *, only_ours: bool,
                       propagation: str = "Background") -> bool:
        resource = self._resource(api_version, kind)
        try:
            if only_ours:
                live = self._call(lambda: resource.get(name=name, namespace=namespace))
                if (live.metadata.labels or {}).get("app.kubernetes.io/managed-by") != "mlops-core":
                    return False
            self._call(lambda: resource.delete(name=name, namespace=namespace,
                                               body={"propagationPolicy": propagation}))
            return True
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise

    def _recover(self, inp: RenderInput, previous: RenderInput | None, previous_kept: int | None,
                 failure: RolloutFailedError, timeout: float) -> MlopsError:
        """After a failed rollout: re-apply the previous render (or remove a failed first deploy)."""
        what = f"version {inp.version} of {inp.model}"
        if previous is not None and inp.config.auto_rollback:
            # Back to exactly the objects that ran before, their previous-version record included.
            self._apply_all(previous, previous_kept)
            try:
                self._wait(previous, max(timeout, 60.0))
            except RolloutFailedError as again:
                return RolloutFailedError(
                    f"rollout of {what} failed ({failure.reason}): {failure.message}; the automatic rollback to "
                    f"version {previous.version} failed too ({again.reason}): {again.message}",
                    reason=failure.reason, hint="inspect with kubectl describe deployment/" + inp.name)
            return RolloutFailedError(
                f"rollout of {what} failed ({failure.reason}): {failure.message}; rolled back automatically, "
                f"version {previous.version} keeps serving",
                reason=failure.reason, hint=failure.hint or "fix the image or model and deploy again")
        if previous is None:
            self._delete_all(inp.name, inp.config.namespace, inp.config.flavor, wait=True)
            return RolloutFailedError(f"deploy of {what} failed ({failure.reason}): {failure.message}; the new "
                                      "objects were removed", reason=failure.reason,
                                      hint=failure.hint or "fix the image or model and deploy again")
        return RolloutFailedError(f"rollout of {what} failed ({failure.reason}): {failure.message}; auto_rollback "
                                  "is off, so the Deployment keeps trying (old pods keep serving: maxUnavailable 0)",
                                  reason=failure.reason, hint="`mlops deployments rollback " + inp.name + "` to go back")

    # ------------------------------------------------------------- rollout wait
    def _wait(self, inp: RenderInput, timeout: float) -> None:
        if inp.config.flavor == "kserve":
            self._wait_inference_service(inp, timeout)
        else:
            self._wait_rollout(inp, timeout)

    def _wait_rollout(self, inp: RenderInput, timeout: float) -> None:
        """Like ``kubectl rollout status``, plus fail-fast on pods that cannot start."""
        from kubernetes import client

        apps = client.AppsV1Api(self.api)
        name, ns = inp.name, inp.config.namespace
        deadline = time.monotonic() + timeout
        pull_errors: dict[str, float] = {}
        delay = 0.1
        while True:
            dep = self.api.sanitize_for_serialization(self._call(lambda: apps.read_namespaced_deployment(name, ns)))
            spec, status = dep.get("spec") or {}, dep.get("status") or {}
            observed = status.get("observedGeneration", 0) >= dep["metadata"].get("generation", 0)
            if observed:
                for cond in status.get("conditions") or []:
                    if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                        raise self._failure(dep, "ProgressDeadlineExceeded", cond.get("message", ""))
                desired = spec.get("replicas", 1)
                if (status.get("updatedReplicas", 0) >= desired and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
                        and status.get("availableReplicas", 0) >= status.get("updatedReplicas", 0)):
                    return
            # Before the controller observed this generation, "the newest ReplicaSet" may still be the one being
            # replaced (during a rollback: the failing one), so pods are judged only once it has.
            pods = self._new_pods(dep) if observed else []
            now = time.monotonic()
            for pod in pods:
                for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                    waiting = (cs.get("state") or {}).get("waiting") or {}
                    reason = waiting.get("reason")
                    if reason == "ErrImagePull":
                        first = pull_errors.setdefault(pod["metadata"]["name"], now)
                        if now - first < PULL_ERROR_GRACE_S:
                            continue
                    if reason in FATAL_REASONS:
                        raise self._failure(dep, reason, waiting.get("message", ""), pods=pods)
            if now > deadline:
                raise self._failure(dep, "Timeout", f"the rollout did not complete within {timeout:.0f} s "
                                    f"({status.get('updatedReplicas', 0)} updated, {status.get('availableReplicas', 0)} "
                                    f"available of {spec.get('replicas', 1)})", pods=pods)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _new_pods(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        """Pods of the Deployment's newest ReplicaSet (the one whose template is the Deployment's)."""
        from kubernetes import client

        ns = dep["metadata"]["namespace"]
        revision = (dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision")
        selector = ",".join(f"{k}={v}" for k, v in sorted(dep["spec"]["selector"]["matchLabels"].items()))
        rss = self._call(lambda: client.AppsV1Api(self.api).list_namespaced_replica_set(ns, label_selector=selector))
        uid = dep["metadata"].get("uid")
        template = dep["spec"]["template"]
        images = [c.get("image") for c in template["spec"]["containers"]]
        mine = [rs for rs in rss.items if any(o.uid == uid for o in rs.metadata.owner_references or [])]
        # The ReplicaSet of the Deployment's current template: its revision, and the same images and annotations
        # (the controller copies the template, adding only the pod-template-hash label).
        newest = [rs for rs in mine
                  if (rs.metadata.annotations or {}).get("deployment.kubernetes.io/revision") == revision
                  and [c.image for c in rs.spec.template.spec.containers] == images
                  and (rs.spec.template.metadata.annotations or {}) == (template["metadata"].get("annotations") or {})]
        if not newest:
            return []
        pod_hash = newest[0].metadata.labels.get("pod-template-hash")
        pods = self._call(lambda: client.CoreV1Api(self.api).list_namespaced_pod(
            ns, label_selector=f"{selector},pod-template-hash={pod_hash}"))
        return [self.api.sanitize_for_serialization(p) for p in pods.items]

    def _failure(self, dep: dict[str, Any], reason: str, message: str,
                 pods: list[dict[str, Any]] | None = None) -> RolloutFailedError:
        """A RolloutFailedError with the failing pods' container states and their Events."""
        from kubernetes import client

        pods = pods if pods is not None else self._new_pods(dep)
        lines = []
        for pod in pods[:3]:
            pname = pod["metadata"]["name"]
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                for state, info in (cs.get("state") or {}).items():
                    if info and state != "running":
                        lines.append(f"pod {pname} container {cs['name']}: {state} {info.get('reason', '')} "
                                     f"{info.get('message', '')}".rstrip())
            events = self._call(lambda: client.CoreV1Api(self.api).list_namespaced_event(
                pod["metadata"]["namespace"], field_selector=f"involvedObject.kind=Pod,involvedObject.name={pname}"))
            for ev in sorted(events.items, key=lambda e: str(e.last_timestamp or e.event_time or ""))[-4:]:
                if ev.type == "Warning":
                    lines.append(f"pod {pname} event {ev.reason}: {ev.message}")
        detail = message.strip()
        if lines:
            detail = (detail + "\n" if detail else "") + "\n".join(f"  {line}" for line in lines)
        hints = {
            "ImagePullBackOff": "the cluster cannot pull the image: check the registry setting under [deployer], "
                                "image_pull_secret, and that the nodes reach the registry",
            "ErrImagePull": "the cluster cannot pull the image: check the registry setting and image_pull_secret",
            "CrashLoopBackOff": "the server exits at start: `mlops deployments logs NAME` or kubectl logs --previous",
            "ProgressDeadlineExceeded": "pods did not become ready in progress_deadline seconds: kubectl describe pods",
            "Timeout": "pass a longer --wait (or rollout_timeout), or check the pods with kubectl describe",
        }
        return RolloutFailedError(detail or reason, reason=reason, hint=hints.get(reason, ""))

    def _wait_inference_service(self, inp: RenderInput, timeout: float) -> None:
        """Wait for the InferenceService's Ready condition (KServe's controller sets it)."""
        from kubernetes import client

        api = client.CustomObjectsApi(self.api)
        deadline = time.monotonic() + timeout
        while True:
            isvc = self._call(lambda: api.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", inp.config.namespace, "inferenceservices", inp.name))
            state, reason = inference_service_state(isvc)
            if state == "ready":
                return
            if state == "failed":
                raise RolloutFailedError(reason or "InferenceService is not ready", reason=reason or "NotReady",
                                         hint="kubectl describe inferenceservice " + inp.name)
            if time.monotonic() >= deadline:
                if timeout <= 0:
                    return  # wait=0: applied and accepted; the state is what KServe reports later
                raise RolloutFailedError(f"InferenceService {inp.name} was not Ready within {timeout:.0f} s "
                                         f"({reason or 'no status yet: is the KServe controller running?'})",
                                         reason="Timeout", hint="kubectl describe inferenceservice " + inp.name)
            time.sleep(0.5)

    # ------------------------------------------------------------- logs and delete
    def logs(self, name: str, *, tail: int = 100) -> str:
        """Recent lines of every pod of the deployment, each prefixed by its pod name.

        Pod logs come from the kubelet of the pod's node through the API server. A pod
        whose kubelet cannot serve logs (not running yet, or the simulated kubelet of
        this project's tests, which runs no containers) yields one line saying why.
        """
        from kubernetes import client

        flavor, obj = self._require(name)
        ns = obj["metadata"]["namespace"]
        core = client.CoreV1Api(self.api)
        if flavor == "plain":
            selector = ",".join(f"{k}={v}" for k, v in sorted(obj["spec"]["selector"]["matchLabels"].items()))
            container = "server"
        else:
            selector, container = f"serving.kserve.io/inferenceservice={name}", "kserve-container"
        pods = self._call(lambda: core.list_namespaced_pod(ns, label_selector=selector))
        out = []
        for pod in sorted(pods.items, key=lambda p: p.metadata.name):
            pname = pod.metadata.name
            try:
                text = self._call(lambda: core.read_namespaced_pod_log(pname, ns, container=container,
                                                                       tail_lines=max(1, tail)))
            except Exception as exc:
                out.append(f"[{pname}] logs unavailable: {_error_message(exc)}")
                continue
            out.extend(f"[{pname}] {line}" for line in str(text).splitlines()[-tail:])
        return "\n".join(out[-max(tail, 1) * max(1, len(pods.items)):]) + ("\n" if out else "")

    def _require(self, name: str) -> tuple[str, dict[str, Any]]:
        found = self._read_current(name, self.config.namespace)
        if found is None:
            raise NotFoundError(f"no deployment named {name!r} in namespace {self.config.namespace!r}",
                                hint="check the name with `mlops deployments list`")
        return found

    def delete(self, name: str) -> None:
        """Delete the objects; pods get their termination grace period to drain. Returns once the Deployment is gone."""
        flavor, _ = self._require(name)
        self._delete_all(name, self.config.namespace, flavor, wait=True)

    def _delete_all(self, name: str, namespace: str, flavor: str, *, wait: bool) -> None:
        if flavor == "kserve":
            self._delete_object("serving.kserve.io/v1beta1", "InferenceService", name, namespace, only_ours=True,
                                propagation="Foreground")
            main = ("serving.kserve.io/v1beta1", "InferenceService")
        else:
            apis = self.api_versions()
            for api_version, kind in ((apis.hpa, "HorizontalPodAutoscaler"), (apis.pdb, "PodDisruptionBudget"),
                                      ("v1", "Service")):
                self._delete_object(api_version, kind, name, namespace, only_ours=True)
            if "v1" in self.api_groups().get("monitoring.coreos.com", []):
                self._delete_object("monitoring.coreos.com/v1", "ServiceMonitor", name, namespace, only_ours=True)
            self._delete_object("apps/v1", "Deployment", name, namespace, only_ours=True, propagation="Foreground")
            main = ("apps/v1", "Deployment")
        if not wait:
            return
        # Foreground deletion: the object disappears once its ReplicaSets and pods are gone.
        resource = self._resource(*main)
        deadline = time.monotonic() + termination_budget(self.config)
        while time.monotonic() < deadline:
            try:
                self._call(lambda: resource.get(name=name, namespace=namespace))
            except Exception as exc:
                if getattr(exc, "status", None) == 404:
                    return
                raise
            time.sleep(0.25)
        raise MlopsError(f"{main[1]} {name} is still terminating", hint="its pods are draining; check kubectl get pods")

    # ------------------------------------------------------------- doctor
    def check(self) -> str:
        """Reachability, server version, RBAC (SelfSubjectAccessReview) and the registry, for ``mlops doctor``."""
        from .doctor import run_checks

        return run_checks(self)


def render_input(spec: DeploymentSpec, config: KubernetesDeployerConfig,
             apis: ApiVersions | None = None) -> RenderInput:
    """What the renderer gets for ``spec``: the image the builder pushed, pinned by digest."""
    if spec.image is None:
        raise InvalidInputError("the kubernetes deployer needs an image",
                                hint="the core builds and pushes one with the stack's builder; call "
                                     "mlops_core.api.deploy (and set repository under [builder])")
    if "/" not in spec.image.reference.split("@")[0]:
        raise InvalidInputError(f"image {spec.image.reference} was not pushed to a registry the cluster can pull from",
                                hint="set repository = \"REGISTRY/PATH\" under [builder] so deploys push there")
    bundle_digest = spec.image.labels.get("io.mlops.bundle.digest", "")
    if not bundle_digest and spec.bundle_path:
        from mlops_core.bundle import read_manifest

        bundle_digest = read_manifest(spec.bundle_path)[1]
    return RenderInput(name=check_name(spec.name), model=spec.model, version=spec.version,
                       bundle_digest=bundle_digest or "unknown", image=spec.image.reference,
                       image_digest=spec.image.digest, config=config, apis=apis or ApiVersions(),
                       options={k: str(v) for k, v in spec.options.items()})


def termination_budget(config: KubernetesDeployerConfig) -> float:
    from .render import termination_grace_seconds

    return float(termination_grace_seconds(config) + 30)


def deployment_state(dep: dict[str, Any]) -> tuple[str, str | None]:
    """(state, reason) of a Deployment as its controller reports it."""
    spec, status, meta = dep.get("spec") or {}, dep.get("status") or {}, dep.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "stopped", "Terminating"
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return "failed", "ProgressDeadlineExceeded"
    desired = spec.get("replicas", 1)
    if desired == 0:
        return "stopped", None
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    if (observed and status.get("updatedReplicas", 0) >= desired and status.get("availableReplicas", 0) >= desired
            and status.get("replicas", 0) <= status.get("updatedReplicas", 0)):
        return "ready", None
    return "starting", progressing.get("reason")


def inference_service_state(isvc: dict[str, Any]) -> tuple[str, str | None]:
    """(state, reason) of an InferenceService from its Ready condition (no status: KServe has not seen it)."""
    conditions = {c.get("type"): c for c in (isvc.get("status") or {}).get("conditions") or []}
    ready = conditions.get("Ready")
    if ready is None:
        return "starting", None
    if ready.get("status") == "True":
        return "ready", None
    reason = ready.get("reason")
    if reason in ("RevisionFailed", "RevisionMissing", "InferenceServiceFailed"):
        return "failed", f"{reason}: {ready.get('message', '')}".strip()
    return "starting", reason


def _error_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, (bytes, str)):
        try:
            return json.loads(body).get("message") or str(body)
        except (ValueError, AttributeError):
            return str(body)[:500]
    summary = getattr(exc, "summary", None)
    if callable(summary):
        return summary()
    return str(getattr(exc, "reason", "") or exc)


def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if not value:
        return utcnow()
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return utcnow()
