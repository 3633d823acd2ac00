"""The one renderer: (version, bundle digest, image, settings) -> Kubernetes objects as plain dicts.

Pure functions, no client import and no I/O, shared by the deployer (which applies
the objects with server-side apply) and ``mlops k8s manifests`` (which writes them
as YAML for Argo CD or Flux). Equal inputs give equal objects, and
:func:`to_yaml` turns an object into the same bytes every time (sorted keys,
block style, no timestamps).

What the objects encode, and why:

* probes on the Open Inference Protocol endpoints: readiness ``/v2/health/ready``
  (200 once every model is loaded and warm), liveness ``/v2/health/live``, and a
  startup probe on ``/v2/health/live`` that holds liveness off while the server binds;
* graceful termination matching ``mlops-server``'s drain: a preStop sleep lets the
  endpoints controller drop the pod first, then SIGTERM makes the server stop
  accepting, finish in-flight requests (``--drain-timeout``) and give idle
  keep-alive connections one more second; ``terminationGracePeriodSeconds`` covers
  all three plus a margin, so the kubelet never SIGKILLs a draining server;
* non-root (the oci builder's numeric user 65532), no privilege escalation, all
  capabilities dropped, RuntimeDefault seccomp, read-only root file system with an
  ``emptyDir`` on ``/tmp`` (the image sets ``HOME=/tmp`` and ``MLOPS_HOME=/tmp/mlops``,
  the only places the server writes);
* rolling updates with ``maxUnavailable: 0``: old pods go only once new ones are ready;
* ``protocol: TCP`` spelled out on every port: server-side apply on Kubernetes 1.20
  rejects a Service port list that omits it (``protocol`` is part of the list's key).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Mapping

import attrs

from mlops_core.errors import InvalidInputError

from .config import KubernetesDeployerConfig

__all__ = [
    "ANNOTATION",
    "ApiVersions",
    "RenderInput",
    "render",
    "to_yaml",
    "manifest_files",
    "pinned_image",
    "check_name",
    "SERVER_DRAIN_IDLE_S",
]

#: Prefix of our labels and annotations.
ANNOTATION = "mlops.dev"
#: mlops-server's extra wait for idle keep-alive connections after the drain (mlops_server.server.DRAIN_IDLE_S).
SERVER_DRAIN_IDLE_S = 1.0
#: Seconds between the end of the drain and SIGKILL, for interpreter shutdown and monitors flushing.
TERMINATION_MARGIN_S = 5

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@attrs.frozen
class ApiVersions:
    """Which API versions the target cluster serves (the deployer finds out by discovery).

    Defaults are current Kubernetes. A 1.20 API server has ``autoscaling/v2beta2`` and
    ``policy/v1beta1`` only; the objects we write have the same shape in both versions.
    """

    hpa: str = attrs.field(default="autoscaling/v2",
                           validator=attrs.validators.in_(("autoscaling/v2", "autoscaling/v2beta2")))
    pdb: str = attrs.field(default="policy/v1", validator=attrs.validators.in_(("policy/v1", "policy/v1beta1")))
    #: Emit a ServiceMonitor (monitoring.coreos.com/v1) instead of Prometheus scrape annotations.
    service_monitor: bool = False


@attrs.frozen
class RenderInput:
    """Everything the objects depend on. Nothing else (no clock, no cluster state) goes in."""

    #: Deployment name: the name of every object.
    name: str
    model: str
    version: int
    #: The bundle's content digest (``sha256:...``), recorded on objects and pods.
    bundle_digest: str
    #: Image reference as pushed by the builder (a tag or a digest reference).
    image: str
    #: The image manifest digest: the pods run exactly this image.
    image_digest: str
    config: KubernetesDeployerConfig = attrs.field(factory=KubernetesDeployerConfig)
    apis: ApiVersions = attrs.field(factory=ApiVersions)
    #: Per-deploy options, recorded so a rollback can reuse them.
    options: Mapping[str, str] = attrs.field(factory=dict, converter=lambda m: {str(k): str(v) for k, v in sorted(dict(m).items())})

    def to_json(self) -> dict[str, Any]:
        """The input as JSON (kept in an annotation: a rollback re-renders exactly the previous objects)."""
        return {
            "name": self.name, "model": self.model, "version": self.version, "bundle_digest": self.bundle_digest,
            "image": self.image, "image_digest": self.image_digest, "options": dict(self.options),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.asdict(self.config).items()},
            "apis": attrs.asdict(self.apis),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RenderInput":
        return cls(name=data["name"], model=data["model"], version=int(data["version"]),
                   bundle_digest=data["bundle_digest"], image=data["image"], image_digest=data["image_digest"],
                   config=KubernetesDeployerConfig(**data["config"]), apis=ApiVersions(**data["apis"]),
                   options=data.get("options") or {})


# ----------------------------------------------------------------- helpers
def check_name(name: str) -> str:
    """Kubernetes object names here must be DNS-1035 labels (Services need one); say what to do otherwise."""
    if len(name) > 63 or not _DNS1035.match(name):
        raise InvalidInputError(
            f"{name!r} cannot name Kubernetes objects",
            hint="pass --name with lower-case letters, digits and '-', starting with a letter, at most 63 characters",
        )
    return name


def pinned_image(reference: str, digest: str, registry: str | None = None) -> str:
    """``REGISTRY/REPO@sha256:...``: the tag is dropped so every pod runs exactly the built image.

    ``registry`` replaces the reference's registry host (the cluster may reach the
    registry under another name than the machine that pushed).
    """
    if not _DIGEST.match(digest or ""):
        raise InvalidInputError(f"image digest {digest!r} is not sha256:<64 hex>",
                                hint="deploy an image the builder pushed (its ImageRef carries the manifest digest)")
    repo = reference.split("@", 1)[0]
    last = repo.rsplit("/", 1)
    if ":" in last[-1]:
        repo = repo[: -(len(last[-1]) - last[-1].index(":"))]
    if registry:
        first, sep, rest = repo.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            repo = f"{registry}/{rest}"
        else:
            repo = f"{registry}/{repo}"
    return f"{repo}@{digest}"


def _label_value(value: str) -> str | None:
    return value if len(value) <= 63 and _LABEL_VALUE.match(value) else None


def _labels(inp: RenderInput, *, with_version: bool) -> dict[str, str]:
    labels = dict(inp.config.labels)
    labels.update({
        "app.kubernetes.io/instance": inp.name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "mlops-core",
        "app.kubernetes.io/managed-by": "mlops-core",
    })
    model = _label_value(inp.model)
    if model:
        labels["app.kubernetes.io/name"] = model
    if with_version:
        labels["app.kubernetes.io/version"] = str(inp.version)
    return labels


def _selector(inp: RenderInput) -> dict[str, str]:
    # Immutable on a Deployment: only what never changes for this name.
    return {"app.kubernetes.io/instance": inp.name, "app.kubernetes.io/managed-by": "mlops-core"}


def _annotations(inp: RenderInput) -> dict[str, str]:
    return {
        f"{ANNOTATION}/model": inp.model,
        f"{ANNOTATION}/model-version": str(inp.version),
        f"{ANNOTATION}/model-uri": f"models:/{inp.model}/{inp.version}",
        f"{ANNOTATION}/bundle-digest": inp.bundle_digest,
        f"{ANNOTATION}/image-digest": inp.image_digest,
        f"{ANNOTATION}/options": json.dumps(dict(inp.options), sort_keys=True, separators=(",", ":")),
    }


def termination_grace_seconds(config: KubernetesDeployerConfig) -> int:
    """preStop delay + the server's drain + its idle keep-alive wait + a margin."""
    return int(config.prestop_delay + math.ceil(config.drain_timeout + SERVER_DRAIN_IDLE_S) + TERMINATION_MARGIN_S)


def _probe(path: str, *, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http", "scheme": "HTTP"}, "periodSeconds": period,
            "timeoutSeconds": timeout, "failureThreshold": failures, "successThreshold": 1}


def _resources(config: KubernetesDeployerConfig) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", config.cpu_request), ("memory", config.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", config.cpu_limit), ("memory", config.memory_limit)) if v}
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _container(inp: RenderInput, name: str) -> dict[str, Any]:
    config = inp.config
    image = pinned_image(inp.image, inp.image_digest, config.registry)
    startup_period = 2
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--port", str(config.container_port), "--drain-timeout", _number(config.drain_timeout)],
        "ports": [{"name": "http", "containerPort": config.container_port, "protocol": "TCP"}],
        "readinessProbe": _probe("/v2/health/ready", period=5, failures=3),
        "livenessProbe": _probe("/v2/health/live", period=10, failures=3),
        "startupProbe": _probe("/v2/health/live", period=startup_period,
                               failures=max(1, math.ceil(config.startup_timeout / startup_period))),
        "resources": _resources(config),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "capabilities": {"drop": ["ALL"]},
        },
        "lifecycle": {"preStop": {"exec": {"command": [
            config.python, "-c", f"import time; time.sleep({config.prestop_delay})"]}}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _pod_spec(inp: RenderInput, container_name: str) -> dict[str, Any]:
    config = inp.config
    spec: dict[str, Any] = {
        "containers": [_container(inp, container_name)],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": termination_grace_seconds(config),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if config.image_pull_secret:
        spec["imagePullSecrets"] = [{"name": config.image_pull_secret}]
    if config.node_selector:
        spec["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        spec["tolerations"] = [dict(t) for t in config.tolerations]
    if config.service_account:
        spec["serviceAccountName"] = config.service_account
    return spec


def _meta(inp: RenderInput, *, with_version: bool = True) -> dict[str, Any]:
    return {"name": inp.name, "namespace": inp.config.namespace, "labels": _labels(inp, with_version=with_version),
            "annotations": _annotations(inp)}


# ------------------------------------------------------------------ flavors
def _scrape_annotations(config: KubernetesDeployerConfig) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(config.container_port),
            "prometheus.io/path": "/metrics"}


def _plain(inp: RenderInput) -> list[dict[str, Any]]:
    config = inp.config
    check_name(inp.name)
    pod_annotations = dict(config.pod_annotations)
    pod_annotations.update({k: v for k, v in _annotations(inp).items() if not k.endswith("/options")})
    if not inp.apis.service_monitor:
        pod_annotations.update(_scrape_annotations(config))
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": _selector(inp)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 10,
        "progressDeadlineSeconds": config.progress_deadline,
        "template": {
            "metadata": {"labels": _labels(inp, with_version=True), "annotations": pod_annotations},
            "spec": _pod_spec(inp, "server"),
        },
    }
    if not config.hpa:
        # With an HPA the autoscaler owns spec.replicas; not listing it leaves the field to it.
        deployment_spec["replicas"] = config.replicas
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(inp, with_version=False),
         "spec": {"type": config.service_type, "selector": _selector(inp),
                  "ports": [{"name": "http", "port": config.service_port, "targetPort": "http", "protocol": "TCP"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(inp), "spec": deployment_spec},
    ]
    if config.hpa:
        objects.append({
            "apiVersion": inp.apis.hpa, "kind": "HorizontalPodAutoscaler", "metadata": _meta(inp, with_version=False),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": inp.name},
                     "minReplicas": config.hpa_min_replicas, "maxReplicas": config.hpa_max_replicas,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": config.hpa_cpu_utilization}}}]},
        })
    if config.pdb:
        objects.append({
            "apiVersion": inp.apis.pdb, "kind": "PodDisruptionBudget", "metadata": _meta(inp, with_version=False),
            "spec": {"maxUnavailable": config.pdb_max_unavailable, "selector": {"matchLabels": _selector(inp)}},
        })
    if inp.apis.service_monitor:
        objects.append({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": _meta(inp, with_version=False),
            "spec": {"selector": {"matchLabels": _selector(inp)},
                     "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}]},
        })
    return objects


def _kserve(inp: RenderInput) -> list[dict[str, Any]]:
    """One InferenceService with our image as a custom predictor container.

    KServe owns the Deployment/Knative Service, autoscaling and traffic (canary via
    ``canaryTrafficPercent``, scale to zero with ``minReplicas: 0``), so no Service,
    HPA or PDB of ours. The container is KServe's ``kserve-container`` and speaks the
    V2 protocol on the same port with the same probes.
    """
    config = inp.config
    check_name(inp.name)
    pod = _pod_spec(inp, "kserve-container")
    if config.pod_annotations:
        pod["annotations"] = dict(config.pod_annotations)  # PredictorSpec.annotations go to the pods
    predictor: dict[str, Any] = {
        "minReplicas": config.hpa_min_replicas if config.hpa else config.replicas,
        "maxReplicas": config.hpa_max_replicas if config.hpa else max(1, config.replicas),
        **pod,
    }
    if config.hpa:
        predictor.update({"scaleMetric": "cpu", "scaleTarget": config.hpa_cpu_utilization})
    meta = _meta(inp)
    # KServe copies these to the predictor's pods; serving.kserve.io/enable-prometheus-scraping
    # makes its own scrape setup pick up /metrics on the container port.
    meta["annotations"].update({
        "serving.kserve.io/enable-prometheus-scraping": "true",
        **_scrape_annotations(config),
    })
    return [{"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
             "spec": {"predictor": predictor}}]


def render(inp: RenderInput) -> list[dict[str, Any]]:
    """The objects for ``inp`` in apply order (Service before Deployment, so endpoints exist first)."""
    return _kserve(inp) if inp.config.flavor == "kserve" else _plain(inp)


# ---------------------------------------------------------------------- YAML
def to_yaml(obj: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> str:
    """Deterministic YAML: sorted keys, block style, no aliases, long lines kept whole."""
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    if isinstance(obj, Mapping):
        return yaml.dump(dict(obj), Dumper=_NoAliases, sort_keys=True, default_flow_style=False,
                         allow_unicode=True, width=4096, explicit_start=True)
    return "".join(to_yaml(o) for o in obj)


def manifest_files(objects: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """File name -> YAML text, one object per file: ``NN-kind-name.yaml`` (NN keeps the apply order)."""
    out = {}
    for i, obj in enumerate(objects, 1):
        out[f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"] = to_yaml(obj)
    return out
