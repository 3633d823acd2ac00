"""mlops-kubernetes: deploy models to Kubernetes (plain objects or a KServe InferenceService) and write GitOps manifests.

Backends (registered through the ``mlops_core.plugins`` entry point ``kubernetes``):

* deployer ``kubernetes`` (:class:`~mlops_kubernetes.deployer.KubernetesDeployer`)

Commands: ``mlops k8s manifests``. Nothing heavy is imported here: the
``kubernetes`` client loads when a deployer first talks to a cluster.
"""

from ._version import __version__

__all__ = ["__version__"]
