"""Settings of the ``kubernetes`` deployer (``[deployer] backend = "kubernetes"``).

Every field can come from the stack file, the environment
(``MLOPS_DEPLOYER__NAMESPACE=models``) or, per deploy, ``--option key=value``.
Environment and ``--option`` values arrive as strings, so the converters accept
"3", "true", "a,b" and JSON (objects for maps, arrays for tolerations).
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import attrs

from mlops_core.errors import InvalidInputError

__all__ = ["KubernetesDeployerConfig", "FLAVORS", "with_options"]

FLAVORS = ("plain", "kserve")

#: RFC 1123 label: what Kubernetes accepts for namespaces and Service names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+]?[0-9.]+([eE][-+]?[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _to_opt_bool(value: Any) -> bool | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    return _to_bool(value)


def _to_opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _to_mapping(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a table of strings, got {value!r}")
    return {str(k): str(v) for k, v in sorted(value.items())}


def _to_tolerations(value: Any) -> tuple[Mapping[str, Any], ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if isinstance(value, Mapping):
        value = [value]
    out = []
    for item in value:
        if not isinstance(item, Mapping):
            raise ValueError(f"a toleration is a table like {{key=..., operator=..., effect=...}}, got {item!r}")
        unknown = set(item) - {"key", "operator", "value", "effect", "tolerationSeconds"}
        if unknown:
            raise ValueError(f"unknown toleration field(s) {sorted(unknown)}")
        out.append({str(k): item[k] for k in sorted(item)})
    return tuple(out)


def _quantity(_: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not _QUANTITY.match(value):
        raise ValueError(f"{attribute.name}={value!r} is not a Kubernetes quantity (e.g. 500m, 1, 256Mi, 2Gi)")


def _dns_label(_: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and (len(value) > 63 or not _DNS_LABEL.match(value)):
        raise ValueError(f"{attribute.name}={value!r} is not a valid Kubernetes name "
                         "(lower-case letters, digits and '-', at most 63, starting and ending alphanumeric)")


def _positive(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class KubernetesDeployerConfig:
    """Settings of the ``kubernetes`` deployer. Per-deploy ``--option`` can set any of them."""

    # where -----------------------------------------------------------------
    #: Namespace of every object (must exist).
    namespace: str = attrs.field(default="default", validator=_dns_label)
    #: Path of a kubeconfig; default ``$KUBECONFIG`` or ``~/.kube/config``.
    kubeconfig: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: kubeconfig context; default: its current context.
    context: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: Use the pod's service account (running inside a cluster). auto: when no kubeconfig exists
    #: and ``KUBERNETES_SERVICE_HOST`` is set.
    in_cluster: bool | None = attrs.field(default=None, converter=_to_opt_bool)
    #: ``plain`` (Deployment, Service, optional HPA/PDB/ServiceMonitor) or ``kserve`` (an InferenceService).
    flavor: str = attrs.field(default="plain", validator=attrs.validators.in_(FLAVORS))
    # image -----------------------------------------------------------------
    #: Registry host the *cluster* pulls from, when it differs from where the builder pushed
    #: (e.g. ``registry.internal:5000`` for a push to ``127.0.0.1:5000``): the image reference's
    #: host is replaced. Also what ``mlops doctor`` probes.
    registry: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: Secret of type kubernetes.io/dockerconfigjson for private registries.
    image_pull_secret: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: The interpreter in the image (the preStop hook sleeps with it: the image has no shell tools for sure).
    python: str = "python3"
    #: Port the model server listens on inside the container (the oci builder's ``port``).
    container_port: int = attrs.field(default=8080, converter=int)
    # pods --------------------------------------------------------------------
    replicas: int = attrs.field(default=1, converter=int)
    cpu_request: str | None = attrs.field(default="100m", converter=_to_opt_str, validator=_quantity)
    memory_request: str | None = attrs.field(default="256Mi", converter=_to_opt_str, validator=_quantity)
    #: No CPU limit by default: CFS throttling hurts latency more than it protects neighbours.
    cpu_limit: str | None = attrs.field(default=None, converter=_to_opt_str, validator=_quantity)
    memory_limit: str | None = attrs.field(default="1Gi", converter=_to_opt_str, validator=_quantity)
    node_selector: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping)
    tolerations: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=_to_tolerations)
    #: Extra labels on every object and pod.
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping)
    #: Extra annotations on the pods (e.g. a service mesh's sidecar settings).
    pod_annotations: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping)
    #: Service account of the pods; default: the namespace's ``default``.
    service_account: str | None = attrs.field(default=None, converter=_to_opt_str)
    # serving -----------------------------------------------------------------
    #: Port of the Service.
    service_port: int = attrs.field(default=80, converter=int)
    service_type: str = attrs.field(default="ClusterIP",
                                    validator=attrs.validators.in_(("ClusterIP", "NodePort", "LoadBalancer")))
    #: Seconds the server drains in-flight requests on SIGTERM (passed as ``--drain-timeout``).
    drain_timeout: float = attrs.field(default=30.0, converter=float, validator=_positive)
    #: Seconds the preStop hook waits before SIGTERM, so endpoints drop the pod before it stops accepting.
    prestop_delay: int = attrs.field(default=5, converter=int)
    #: Seconds a pod may take to bind its port (startup probe budget).
    startup_timeout: int = attrs.field(default=300, converter=int, validator=_positive)
    # rollout -------------------------------------------------------------------
    #: Deployment ``progressDeadlineSeconds``: a rollout with no progress for this long fails.
    progress_deadline: int = attrs.field(default=600, converter=int, validator=_positive)
    #: Seconds ``deploy`` waits for the rollout; default: the ``--wait`` of the call.
    rollout_timeout: float | None = attrs.field(default=None, converter=lambda v: None if v in (None, "") else float(v))
    #: Roll back to the previous template automatically when a rollout fails.
    auto_rollback: bool = attrs.field(default=True, converter=_to_bool)
    # optional objects ------------------------------------------------------------
    hpa: bool = attrs.field(default=False, converter=_to_bool)
    hpa_min_replicas: int = attrs.field(default=1, converter=int)
    hpa_max_replicas: int = attrs.field(default=4, converter=int)
    hpa_cpu_utilization: int = attrs.field(default=70, converter=int)
    pdb: bool = attrs.field(default=False, converter=_to_bool)
    pdb_max_unavailable: int = attrs.field(default=1, converter=int)
    #: A ServiceMonitor instead of scrape annotations: true, false, or auto (when its CRD exists).
    service_monitor: bool | None = attrs.field(default=None, converter=_to_opt_bool)

    def __attrs_post_init__(self) -> None:
        if self.replicas < 0 or self.hpa_min_replicas < 1 or self.hpa_max_replicas < self.hpa_min_replicas:
            raise ValueError("need replicas >= 0 and 1 <= hpa_min_replicas <= hpa_max_replicas")


def with_options(config: KubernetesDeployerConfig, options: Mapping[str, Any]) -> KubernetesDeployerConfig:
    """The config with per-deploy ``--option key=value`` applied (same names and converters as the settings)."""
    if not options:
        return config
    valid = {f.name for f in attrs.fields(KubernetesDeployerConfig)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise InvalidInputError(f"unknown kubernetes option(s) {', '.join(unknown)}",
                                hint=f"valid options: {', '.join(sorted(valid))}")
    try:
        return attrs.evolve(config, **dict(options))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid kubernetes option: {exc}", hint="see docs/kubernetes.md for the settings") from None
