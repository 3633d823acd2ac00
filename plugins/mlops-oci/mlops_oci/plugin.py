"""The mlops-oci plugin: builders ``oci`` and ``dockerfile``, deployer ``container``, ``mlops image`` commands.

Import-cheap on purpose: backends are import strings, loaded only when a stack
builds them, and the CLI handlers load only when their command runs.
"""

from __future__ import annotations

from typing import Any

from mlops_core import hookimpl


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_builder(
        "oci", "mlops_oci.builder:OciImageBuilder", config="mlops_oci.config:OciBuilderConfig",
        summary="daemonless, reproducible OCI image (layout on disk, optional push to any registry)",
    )
    backends.add_builder(
        "dockerfile", "mlops_oci.dockerfile:DockerfileBuilder", config="mlops_oci.config:DockerfileBuilderConfig",
        summary="a Dockerfile and build context for docker, buildah or kaniko (same image contents)",
    )
    backends.add_deployer(
        "container", "mlops_oci.deployer:ContainerDeployer", config="mlops_oci.config:ContainerDeployerConfig",
        summary="runs the image through the Docker Engine API (Docker, or podman's compatible service)",
    )


@hookimpl
def mlops_add_cli_commands(commands: Any) -> None:
    sub = commands.group("image", help="inspect and push OCI images built by the oci builder",
                         description="Inspect OCI images (in a layout on disk or in a registry) and push layouts.")
    inspect = sub.add("inspect", handler="mlops_oci.cli:inspect_command", help="show an image's digest, layers, labels, user and entrypoint",
                             description="Show an image from an OCI layout folder (PATH[:TAG]) or a registry "
                                         "(REGISTRY/REPOSITORY:TAG).")
    inspect.add_argument("image", metavar="LAYOUT_OR_REFERENCE")
    inspect.add_argument("--platform", default="linux/amd64", help="platform to pick from a multi-arch index")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    push = sub.add("push", handler="mlops_oci.cli:push_command", help="push an image from an OCI layout folder to a registry",
                          description="Push the image of an OCI layout folder (as written by `mlops build`) "
                                      "to REGISTRY/REPOSITORY:TAG; blobs the registry has are skipped.")
    push.add_argument("layout", metavar="LAYOUT[:TAG]")
    push.add_argument("reference", metavar="REFERENCE")
    push.add_argument("--json", action="store_true", help="print JSON")
    base = sub.add("base", handler="mlops_oci.cli:base_command", help="make a Python base image locally with debootstrap (no registry needed)",
                          description="Make (or reuse from the cache) a Debian bookworm + python3 base image as an "
                                      "OCI layout, for machines that cannot pull python:3.11-slim. Prints the value "
                                      "for the oci builder's base setting. Needs root and debootstrap.")
    base.add_argument("--cache", default=None, help="cache folder (default ~/.cache/mlops-core/bases)")
    base.add_argument("--json", action="store_true", help="print JSON")
