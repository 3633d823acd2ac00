"""The ``container`` deployer: runs model images through the Docker Engine API (the ``docker`` SDK).

Works with Docker and with podman's compatible service (``podman system service``).
State lives in container labels, so any machine that talks to the same engine
sees the same deployments and nothing is kept on disk:

``io.mlops.deployment``  the deployment name
``io.mlops.generation``  1, 2, 3... one per deploy of that name
``io.mlops.model`` / ``io.mlops.version`` / ``io.mlops.previous-version`` / ``io.mlops.created-at``

Update (same semantics as the process deployer): start a container of the new
version next to the old one, wait until ``/v2/health/ready`` answers 200,
switch (the deployment's URL becomes the new container's), then stop and remove
the old one; the old version is recorded as ``previous_version``. If the new
container fails to become ready it is removed and the old one keeps serving.
The *current* container of a deployment is its oldest generation: a crashed
update can leave a newer one behind, never a half-switched state.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Sequence

from mlops_core.entities import Deployment, DeploymentSpec, utcnow
from mlops_core.errors import BackendUnavailableError, ConfigError, InvalidInputError, MlopsError, NotFoundError
from mlops_core.interfaces import BackendContext, Deployer

from .config import ContainerDeployerConfig

__all__ = ["ContainerDeployer"]

L = "io.mlops."


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ContainerDeployer(Deployer):
    requires_image = True

    def __init__(self, config: ContainerDeployerConfig, context: BackendContext) -> None:
        self.config = config
        self.context = context
        self._client: Any = None

    # ------------------------------------------------------------ engine
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import docker
            except ImportError:
                raise ConfigError("the container deployer needs the docker SDK",
                                  hint="pip install 'mlops-oci[container]'") from None
            try:
                if self.config.base_url:
                    self._client = docker.DockerClient(base_url=self.config.base_url)
                else:
                    self._client = docker.from_env()
                self._client.ping()
            except Exception as exc:
                self._client = None
                raise BackendUnavailableError(
                    f"cannot reach the container engine{' at ' + self.config.base_url if self.config.base_url else ''}: {exc}",
                    hint="start Docker, or `podman system service --time=0 unix:///PATH/podman.sock` and set "
                         "[deployer] base_url = \"unix:///PATH/podman.sock\"",
                ) from None
        return self._client

    def check(self) -> str:
        version = self.client.version()
        return f"engine {version.get('Components', [{}])[0].get('Name', 'docker')} {version.get('Version', '?')}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _containers(self, name: str | None = None) -> list[Any]:
        label = f"{L}deployment={name}" if name else f"{L}deployment"
        found = self.client.containers.list(all=True, filters={"label": label})
        return sorted(found, key=lambda c: int(c.labels.get(f"{L}generation", "0")))

    # ------------------------------------------------------------ state
    def _state(self, container: Any, url: str | None) -> str:
        status = container.status
        if status in ("created", "restarting"):
            return "starting"
        if status == "running":
            return "ready" if url and self._ready(url, 1.0) else "starting"
        if status in ("exited", "dead", "removing", "stopped"):
            return "failed"
        return "unknown"

    def _url(self, container: Any) -> str | None:
        port = container.labels.get(f"{L}port")
        if port:
            return f"http://{self.config.host}:{port}"
        ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        binding = ports.get(f"{self.config.container_port}/tcp")
        if binding:
            return f"http://{self.config.host}:{binding[0]['HostPort']}"
        return None

    def _to_deployment(self, container: Any, *, refresh: bool = True) -> Deployment:
        if refresh:
            container.reload()
        labels = container.labels
        url = self._url(container)
        prev = labels.get(f"{L}previous-version")
        return Deployment(
            name=labels[f"{L}deployment"], model=labels[f"{L}model"], version=int(labels[f"{L}version"]),
            backend=self.context.name, state=self._state(container, url), url=url,
            previous_version=int(prev) if prev else None,
            created_at=_parse_time(labels.get(f"{L}created-at")), updated_at=_parse_time(labels.get(f"{L}updated-at")),
            details={"container": container.name, "container_id": container.id[:12], "image": labels.get(f"{L}image", ""),
                     "generation": int(labels.get(f"{L}generation", "0"))},
            options=json.loads(labels.get(f"{L}options", "{}")),
        )

    @staticmethod
    def _ready(url: str, timeout: float) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # ------------------------------------------------------------ primitives
    def get(self, name: str) -> Deployment:
        containers = self._containers(name)
        if not containers:
            raise NotFoundError(f"no deployment named {name!r} in the container engine",
                                hint="list them with `mlops deployments` (or deploy one)")
        return self._to_deployment(containers[0])

    def list(self) -> Sequence[Deployment]:
        current: dict[str, Any] = {}
        for c in self._containers():
            current.setdefault(c.labels[f"{L}deployment"], c)
        return [self._to_deployment(c) for _, c in sorted(current.items())]

    def logs(self, name: str, *, tail: int = 100) -> str:
        containers = self._containers(name)
        if not containers:
            raise NotFoundError(f"no deployment named {name!r}", hint="check the name with `mlops deployments`")
        return containers[0].logs(tail=tail, stdout=True, stderr=True).decode("utf-8", "replace")

    def delete(self, name: str) -> None:
        containers = self._containers(name)
        if not containers:
            raise NotFoundError(f"no deployment named {name!r}", hint="check the name with `mlops deployments`")
        for c in containers:
            self._remove(c)

    def _remove(self, container: Any) -> None:
        import docker.errors

        try:
            if container.status == "running":
                container.stop(timeout=self.config.stop_timeout)  # SIGTERM: the server drains, then exits
            container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def _pull(self, image: str) -> None:
        import docker.errors

        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            raise BackendUnavailableError(f"the container engine could not pull {image}: {exc.explanation or exc}",
                                          hint="check that the engine can reach the registry (for a registry without "
                                               "TLS, list it as insecure in the engine's registries configuration)") from None

    def deploy(self, spec: DeploymentSpec, *, wait: float = 60.0) -> Deployment:
        import docker.errors
        import docker.types

        if spec.image is None:
            raise InvalidInputError("the container deployer needs an image", hint="the core builds one when "
                                    "the deployer requires_image; call mlops_core.api.deploy")
        image = spec.image.reference
        if "@" not in image and spec.image.digest and "/" in image.split(":")[0]:
            # Pull exactly what was built, not whatever the tag points at now.
            image = f"{image.rsplit(':', 1)[0] if ':' in image.rsplit('/', 1)[-1] else image}@{spec.image.digest}"
        if self.config.pull:
            self._pull(image)

        old = self._containers(spec.name)
        previous = old[0] if old else None
        generation = (max(int(c.labels.get(f"{L}generation", "0")) for c in old) + 1) if old else 1
        now = utcnow().isoformat()
        created_at = previous.labels.get(f"{L}created-at", now) if previous else now
        labels = {
            f"{L}deployment": spec.name, f"{L}model": spec.model, f"{L}version": str(spec.version),
            f"{L}generation": str(generation), f"{L}created-at": created_at, f"{L}updated-at": now,
            f"{L}image": image, f"{L}options": json.dumps(dict(spec.options), sort_keys=True),
        }
        if previous is not None:
            labels[f"{L}previous-version"] = previous.labels[f"{L}version"]
        kwargs: dict[str, Any] = {
            "name": f"{self.config.prefix}{spec.name}-{generation}", "detach": True, "labels": labels,
            "environment": dict(self.config.environment),
            "ulimits": [docker.types.Ulimit(name=k, soft=int(v.split(":")[0]), hard=int(v.split(":")[-1]))
                        for k, v in self.config.ulimits.items()],
        }
        if self.config.network_mode == "host":
            port = _free_port(self.config.host)
            labels[f"{L}port"] = str(port)
            kwargs["network_mode"] = "host"
            kwargs["command"] = ["--port", str(port)]
        else:
            if self.config.network_mode:
                kwargs["network_mode"] = self.config.network_mode
            kwargs["command"] = ["--port", str(self.config.container_port)]
            kwargs["ports"] = {f"{self.config.container_port}/tcp": (self.config.host, None)}
        try:
            container = self.client.containers.run(image, **kwargs)
        except docker.errors.APIError as exc:
            raise MlopsError(f"the container engine refused to start {image}: {exc.explanation or exc}",
                             hint="see the engine's logs") from None
        try:
            self._wait_ready(container, wait)
        except BaseException:
            self._remove(container)
            raise
        # Switch: the new container is now the deployment; the old ones stop (draining) and go.
        for c in old:
            self._remove(c)
        return self._to_deployment(container)

    def _wait_ready(self, container: Any, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            container.reload()
            url = self._url(container)
            if container.status in ("exited", "dead"):
                tail = container.logs(tail=30).decode("utf-8", "replace")
                raise MlopsError(f"container {container.name} exited before it was ready:\n{tail}",
                                 hint="the previous version (if any) keeps serving; fix the model or image and deploy again")
            if container.status == "running" and url and self._ready(url, 1.0):
                return
            if time.monotonic() > deadline:
                tail = container.logs(tail=30).decode("utf-8", "replace")
                raise MlopsError(f"container {container.name} was not ready within {wait:.0f} s:\n{tail}",
                                 hint="pass a longer wait, or check the logs; the previous version keeps serving")
            time.sleep(0.25)


def _parse_time(value: str | None) -> Any:
    import datetime as dt

    if not value:
        return utcnow()
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return utcnow()
