"""mlops-oci: daemonless OCI image builds for mlops-core models, a registry client, and a container deployer.

Backends (registered through the ``mlops_core.plugins`` entry point ``oci``):

* builder ``oci`` (:class:`~mlops_oci.builder.OciImageBuilder`)
* builder ``dockerfile`` (:class:`~mlops_oci.dockerfile.DockerfileBuilder`)
* deployer ``container`` (:class:`~mlops_oci.deployer.ContainerDeployer`)

Nothing heavy is imported here.
"""

from ._version import __version__

__all__ = ["__version__"]
