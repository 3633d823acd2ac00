"""Settings of the ``oci`` and ``dockerfile`` builders and the ``container`` deployer.

Every field can come from the stack file or the environment
(``MLOPS_BUILDER__REPOSITORY=127.0.0.1:5000/models``); environment values arrive
as strings, so the converters accept "8080", "true", "a,b" and JSON objects.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import attrs

__all__ = ["OciBuilderConfig", "DockerfileBuilderConfig", "ContainerDeployerConfig"]


def _to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    if text in ("", "auto", "none"):
        return None
    raise ValueError(f"not a boolean: {value!r}")


def _to_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(str(v) for v in value)


def _to_mapping(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else {}
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a table of strings, got {value!r}")
    return {str(k): str(v) for k, v in value.items()}


def _to_opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


@attrs.frozen
class ImageContentConfig:
    """What goes into the image: settings the ``oci`` and ``dockerfile`` builders share."""

    #: Base image with Python: a registry reference, or ``oci:PATH[:TAG]`` for a local OCI layout.
    base: str = "python:3.11-slim"
    #: When the base's registry is unreachable and nothing is cached: ``local`` builds on the
    #: Debian base made by ``mlops image base`` (debootstrap; root) and says so, ``off`` fails.
    base_fallback: str = attrs.field(default="local", validator=attrs.validators.in_(("local", "off")))
    platform: str = "linux/amd64"
    #: Target Python MAJOR.MINOR; default: the base image's ``PYTHON_VERSION`` env, else the bundle's.
    python_version: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: Oldest glibc the image has: wheels for newer manylinux tags are not considered.
    glibc: str = "2.28"
    #: The non-root user the image runs as (numeric, so the base needs no passwd entry).
    user: str = "65532:65532"
    port: int = attrs.field(default=8080, converter=int)
    #: The interpreter in the base image (looked up on its PATH).
    python: str = "python3"
    #: Local distributions copied into the runtime layer (their dependencies go to the deps layer).
    runtime_distributions: tuple[str, ...] = attrs.field(default=("mlops-core", "mlops-server"), converter=_to_tuple)
    server_module: str = "mlops_server"
    #: More requirements for the deps layer (pip syntax), on top of the bundle's.
    extra_requirements: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    index_url: str | None = attrs.field(default=None, converter=_to_opt_str)
    extra_index_urls: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    #: Folders (or URLs of HTML pages) of wheels pip may also take, e.g. where a local build such as
    #: ``torch==2.13.0+cpu`` lies; pip's own configuration (pip.conf, ``PIP_FIND_LINKS``) applies as well.
    find_links: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping)
    #: Progress on stderr: None = when stderr is a terminal.
    progress: bool | None = attrs.field(default=None, converter=_to_bool)
    #: Compile the deps and runtime layers' Python files to bytecode at build time (faster container
    #: starts; needs a build Python of the image's MAJOR.MINOR, else it is skipped with a warning).
    compile_bytecode: bool = attrs.field(default=True, converter=lambda v: True if v is None else bool(_to_bool(v)))


@attrs.frozen
class OciBuilderConfig(ImageContentConfig):
    """Settings of the daemonless ``oci`` builder."""

    #: Where pushes go: ``REGISTRY/PATH``; the image is ``{repository}/{model}:{tag}``. Unset: no push.
    repository: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: Tag template; ``{version}`` and ``{model}`` are filled in.
    tag: str = "v{version}"
    #: Where image layouts are written; default ``<home>/images``.
    output: str | None = attrs.field(default=None, converter=_to_opt_str)
    compression_level: int = attrs.field(default=6, converter=int, validator=attrs.validators.in_(range(0, 10)))
    # registry access -----------------------------------------------------
    username: str | None = attrs.field(default=None, converter=_to_opt_str)
    password: str | None = attrs.field(default=None, converter=_to_opt_str, repr=False)
    #: Talk HTTP instead of HTTPS (default: only for loopback registries).
    plain_http: bool | None = attrs.field(default=None, converter=_to_bool)
    #: TLS verification: true, false, or a CA bundle path.
    tls_verify: str = "true"
    #: Sign pushed images (cosign format, ``sha256-<digest>.sig`` tag) with this PEM EC P-256 private key.
    signing_key: str | None = attrs.field(default=None, converter=_to_opt_str)
    signing_key_password: str | None = attrs.field(default=None, converter=_to_opt_str, repr=False)
    #: Write a CycloneDX SBOM of the image (into the layout, and pushed as an OCI referrer of the image).
    sbom: bool = attrs.field(default=True, converter=lambda v: True if v is None else bool(_to_bool(v)))
    retries: int = attrs.field(default=4, converter=int)
    chunk_size: int = attrs.field(default=16 << 20, converter=int)


@attrs.frozen
class DockerfileBuilderConfig(ImageContentConfig):
    """Settings of the ``dockerfile`` builder: same image contents, written as a Dockerfile + context."""

    #: Where contexts are written; default ``<home>/contexts``.
    output: str | None = attrs.field(default=None, converter=_to_opt_str)


@attrs.frozen
class ContainerDeployerConfig:
    """Settings of the ``container`` deployer (Docker Engine API: Docker, or podman's compatible service)."""

    #: Engine address, e.g. ``unix:///run/podman/podman.sock``; default: ``DOCKER_HOST`` or the Docker socket.
    base_url: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: ``host`` runs containers in the host network (each on its own free port); else ports are published.
    network_mode: str | None = attrs.field(default=None, converter=_to_opt_str)
    #: Host address the deployer probes and reports in URLs.
    host: str = "127.0.0.1"
    #: Port inside the container when ports are published.
    container_port: int = attrs.field(default=8080, converter=int)
    #: Extra ulimits, e.g. ``{"nofile": "1024:1024"}`` (podman without a systemd session needs them).
    ulimits: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping)
    environment: Mapping[str, str] = attrs.field(factory=dict, converter=_to_mapping)
    #: "json": the server in the container writes JSON lines to stdout (one per log message and one per
    #: request, with model, version, request id and latency) for the engine's and Kubernetes' log collectors.
    log_format: str = attrs.field(default="text", validator=attrs.validators.in_(("text", "json")))
    #: Pull the image before starting (off: the engine must already have it).
    pull: bool = attrs.field(default=True, converter=lambda v: bool(_to_bool(v)) if v is not None else True)
    #: Seconds a stopped container gets to drain in-flight requests.
    stop_timeout: int = attrs.field(default=10, converter=int)
    #: Container name prefix; containers are ``{prefix}{deployment}-{generation}``.
    prefix: str = "mlops-"
