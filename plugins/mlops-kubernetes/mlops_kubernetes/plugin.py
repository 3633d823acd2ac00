"""The mlops-kubernetes plugin: deployer ``kubernetes`` and the ``mlops k8s`` commands.

Import-cheap on purpose: the backend is an import string, loaded only when a
stack builds it, and the CLI handler loads only when its command runs.
"""

from __future__ import annotations

from typing import Any

from mlops_core import hookimpl


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_deployer(
        "kubernetes", "mlops_kubernetes.deployer:KubernetesDeployer",
        config="mlops_kubernetes.config:KubernetesDeployerConfig",
        summary="Deployment + Service (or a KServe InferenceService) by server-side apply; waits for the rollout "
                "and rolls back on failure",
    )


@hookimpl
def mlops_add_cli_commands(subparsers: Any) -> None:
    k8s = subparsers.add_parser("k8s", help="Kubernetes tools: GitOps manifests for a model version",
                                description="Kubernetes tools of the mlops-kubernetes plugin.")
    sub = k8s.add_subparsers(dest="k8s_command", metavar="COMMAND", required=True)
    manifests = sub.add_parser(
        "manifests", help="write deterministic YAML for Argo CD or Flux (the objects `mlops deploy` applies)",
        description="Render the objects the kubernetes deployer would apply for a model version and write them "
                    "to DIR, one object per file (NN-KIND-NAME.yaml), with sorted keys: the same inputs give the "
                    "same bytes. The image comes from the stack's builder (built and pushed, as by `mlops deploy`) "
                    "unless --image names one already pushed. Settings come from the stack's [deployer] when it is "
                    "the kubernetes deployer, then --option. API versions are current Kubernetes "
                    "(autoscaling/v2, policy/v1) unless --cluster asks the configured cluster.")
    manifests.add_argument("uri", metavar="MODEL_URI", help="models:/NAME[/VERSION|@ALIAS]")
    manifests.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write the YAML files to")
    manifests.add_argument("--flavor", choices=["plain", "kserve"], default=None,
                           help="plain (Deployment, Service, ...) or kserve (InferenceService); default: the setting")
    manifests.add_argument("--name", default=None, help="object name (default: the model name)")
    manifests.add_argument("--namespace", default=None, help="namespace written into the objects")
    manifests.add_argument("--image", default=None, metavar="REFERENCE@sha256:DIGEST",
                           help="an image already pushed, pinned by digest (skips the build)")
    manifests.add_argument("--option", action="append", metavar="KEY=VALUE",
                           help="deployer setting for this rendering (e.g. replicas=3, hpa=true)")
    manifests.add_argument("--cluster", action="store_true",
                           help="pick HPA/PDB versions and ServiceMonitor by discovery on the configured cluster")
    manifests.add_argument("--json", action="store_true", help="print the written files as JSON")
    manifests.set_defaults(handler="mlops_kubernetes.cli:manifests_command")
