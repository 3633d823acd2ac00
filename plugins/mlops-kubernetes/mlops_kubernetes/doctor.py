"""``mlops doctor`` for the kubernetes deployer: reachability, server version, RBAC and the registry.

RBAC is asked, not guessed: one ``SelfSubjectAccessReview`` per verb and resource
the deployer uses, in its namespace (what ``kubectl auth can-i`` does). The list
matches ``docs/k8s-rbac.yaml``; a test checks that Role grants every one of them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from mlops_core.errors import BackendUnavailableError, MlopsError

if TYPE_CHECKING:  # pragma: no cover
    from .deployer import KubernetesDeployer

__all__ = ["required_permissions", "run_checks", "registry_status"]


def required_permissions(flavor: str, *, hpa: bool, pdb: bool, service_monitor: bool) -> list[tuple[str, str, str]]:
    """(API group, resource, verb) the deployer needs for these settings."""
    rw = ("get", "list", "create", "patch", "delete")
    perms: list[tuple[str, str, str]] = []
    if flavor == "kserve":
        perms += [("serving.kserve.io", "inferenceservices", v) for v in rw]
    else:
        perms += [("apps", "deployments", v) for v in rw]
        perms += [("", "services", v) for v in rw]
        perms += [("apps", "replicasets", v) for v in ("get", "list")]
        perms += [("", "events", "list")]
        if hpa:
            perms += [("autoscaling", "horizontalpodautoscalers", v) for v in rw]
        if pdb:
            perms += [("policy", "poddisruptionbudgets", v) for v in rw]
        if service_monitor:
            perms += [("monitoring.coreos.com", "servicemonitors", v) for v in rw]
    perms += [("", "pods", "list"), ("", "pods/log", "get")]
    return perms


def registry_status(registry: str, timeout: float = 5.0) -> str:
    """Probe ``/v2/`` of an OCI registry: 200 or 401 (auth required) means it answers."""
    host = registry.split("/", 1)[0]
    local = host.startswith(("127.", "localhost", "[::1]"))
    schemes = ("http",) if local else ("https", "http")
    last = ""
    for scheme in schemes:
        url = f"{scheme}://{host}/v2/"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return f"registry {host} answers ({scheme}, HTTP {resp.status})"
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return f"registry {host} answers ({scheme}, HTTP 401: credentials needed)"
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
    raise BackendUnavailableError(f"registry {host} does not answer at /v2/: {last}",
                                  hint="check the registry setting under [deployer] (the cluster pulls from there)")


def _builder_repository(deployer: "KubernetesDeployer") -> str | None:
    """The stack builder's push target, when there is one: the registry the cluster pulls from by default."""
    stack = deployer.context.stack
    if stack is None:
        return None
    builder = stack.config.components.get("builder")
    repository = (builder.settings.get("repository") if builder is not None else None) or None
    return str(repository) if repository else None


def run_checks(deployer: "KubernetesDeployer") -> str:
    from kubernetes import client

    config = deployer.config
    api = deployer.api
    info = deployer._call(lambda: client.VersionApi(api).get_code())
    apis = deployer.api_versions(config)
    if config.flavor == "kserve" and not deployer._has_kserve():
        raise MlopsError(f"Kubernetes {info.git_version} at {api.configuration.host} has no KServe "
                         "(serving.kserve.io/v1beta1) API", hint="install KServe or set flavor = \"plain\"")
    perms = required_permissions(config.flavor, hpa=config.hpa, pdb=config.pdb, service_monitor=apis.service_monitor)
    authz = client.AuthorizationV1Api(api)
    denied = []
    for group, resource, verb in perms:
        sub = None
        if "/" in resource:
            resource, sub = resource.split("/", 1)
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(namespace=config.namespace, group=group,
                                                            resource=resource, subresource=sub, verb=verb)))
        result: Any = deployer._call(lambda: authz.create_self_subject_access_review(review))
        if not result.status.allowed:
            denied.append(f"{verb} {group + '/' if group else ''}{resource}{'/' + sub if sub else ''}")
    if denied:
        raise MlopsError(f"Kubernetes {info.git_version} reachable, but the account may not: {', '.join(denied)} "
                         f"(namespace {config.namespace})",
                         hint="bind the Role in docs/k8s-rbac.yaml to the account (kubectl apply -f docs/k8s-rbac.yaml)")
    parts = [f"Kubernetes {info.git_version} at {api.configuration.host}", f"namespace {config.namespace}",
             f"RBAC ok ({len(perms)} checks)", f"HPA {apis.hpa}, PDB {apis.pdb}",
             "ServiceMonitor" if apis.service_monitor else "scrape annotations"]
    registry = config.registry or _builder_repository(deployer)
    if registry:
        parts.append(registry_status(registry))
    else:
        parts.append("registry: none configured (set repository under [builder])")
    return "; ".join(parts)
