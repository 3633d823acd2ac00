"""The ``container`` deployer: runs model images through the Docker Engine API (the ``docker`` SDK).

Works with Docker and with podman's compatible service (``podman system service``).
Deployment state lives in container labels, so any machine that talks to the
same engine sees the same deployments:

``io.mlops.deployment``  the deployment name
``io.mlops.generation``  1, 2, 3... one per deploy of that name
``io.mlops.front-port``  the deployment's stable host port (see below)
``io.mlops.model`` / ``io.mlops.version`` / ``io.mlops.previous-version`` / ``io.mlops.created-at``

**A stable address.** Each deployment has a front (:mod:`mlops_oci.front`): a
small proxy process on this host that owns the deployment's port for its whole
life; the deployment's URL is the front's and never changes. Containers sit
behind it, each on a port of its own.

**Update** (same semantics as the process deployer): start a container of the
new version next to the old one, wait until it answers
``/v2/models/{m}/versions/{v}/ready`` with 200, switch the front to it (new
requests and the next request of every keep-alive connection go to the new
container), then stop the old one with SIGTERM so it drains its in-flight
requests, and remove it; the old version is recorded as ``previous_version``. If
the new container fails to become ready it is removed and the old one keeps
serving. The *current* container of a deployment is the one the front serves
(else its oldest generation): a crashed update can leave a newer one behind,
never a half-switched state. A front that died (a reboot) is started again, on
the same port, by the next call that looks at the deployment.

Every engine failure becomes an :class:`~mlops_core.errors.MlopsError` with a hint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

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


_ENGINE_HINT = ("check that the container engine runs and answers (`docker info`, or `podman system service`), "
                "and see its logs")


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Turn any failure of the engine or the docker SDK into a project error that names ``what``."""
    try:
        yield
    except MlopsError:
        raise
    except Exception as exc:  # docker.errors.*, requests' connection errors, urllib3's protocol errors
        import docker.errors

        explanation = getattr(exc, "explanation", None) or str(exc)
        if isinstance(exc, docker.errors.NotFound):
            raise NotFoundError(f"the container engine has no such object while {what}: {explanation}",
                                hint="it was removed meanwhile (another update or undeploy?); list the deployments "
                                     "with `mlops deployments list` and try again") from None
        if isinstance(exc, docker.errors.APIError):
            raise BackendUnavailableError(f"the container engine failed while {what}: {explanation}",
                                          hint=_ENGINE_HINT) from None
        if isinstance(exc, (docker.errors.DockerException, OSError, ConnectionError)) or \
                type(exc).__module__.startswith(("requests", "urllib3")):
            raise BackendUnavailableError(f"cannot talk to the container engine while {what}: "
                                          f"{type(exc).__name__}: {exc}", hint=_ENGINE_HINT) from None
        raise


class FrontClient:
    """Talks to one deployment's front (:mod:`mlops_oci.front`) over its Unix control socket."""

    def __init__(self, control: Path) -> None:
        self.control = control

    def call(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any] | None:
        """The front's answer, or None when no front listens on the control socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(self.control))
                s.sendall((json.dumps({"op": op, **fields}) + "\n").encode())
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None


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
        with engine_errors("asking the engine's version"):
            version = self.client.version()
        return f"engine {version.get('Components', [{}])[0].get('Name', 'docker')} {version.get('Version', '?')}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _containers(self, name: str | None = None) -> list[Any]:
        label = f"{L}deployment={name}" if name else f"{L}deployment"
        with engine_errors(f"listing the containers of {name or 'every deployment'}"):
            found = self.client.containers.list(all=True, filters={"label": label})
        return sorted(found, key=lambda c: int(c.labels.get(f"{L}generation", "0")))

    # ------------------------------------------------------------ fronts
    def _front(self, name: str) -> FrontClient:
        # Unix socket paths are limited to 108 bytes: a short name under a private folder, keyed by home + name.
        key = hashlib.sha256(f"{Path(self.context.home).resolve()}\0{self.config.base_url}\0{name}".encode())
        folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"mlops-fronts-{os.getuid()}"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return FrontClient(folder / f"{key.hexdigest()[:20]}.sock")

    def _start_front(self, name: str, port: int, target: str) -> dict[str, Any]:
        """Start the deployment's front on ``port`` forwarding to ``target``; its ping answer."""
        front = self._front(name)
        logs = Path(self.context.home) / "logs" / "fronts"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlops_oci.front", "--listen", f"{self.config.host}:{port}",
                 "--target", target, "--control", str(front.control)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + 15
        while True:
            answer = front.call("ping", timeout=1.0)
            if answer and answer.get("pid") == proc.pid:
                return answer
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                tail = (logs / f"{name}.log").read_text(errors="replace")[-800:]
                raise BackendUnavailableError(
                    f"the front of deployment {name!r} did not start on {self.config.host}:{port}:\n{tail}",
                    hint="the port may be taken by another program: deploy with --option port=FREE_PORT")
            time.sleep(0.05)

    def _ensure_front(self, name: str, port: int, target: str) -> dict[str, Any]:
        """The running front of ``name`` (switched to ``target``), started if it is not running."""
        front = self._front(name)
        answer = front.call("ping")
        if answer is None:
            return self._start_front(name, port, target)
        if answer.get("target") != target:
            answer = front.call("switch", target=target)
            if not answer or not answer.get("ok"):
                raise BackendUnavailableError(f"the front of deployment {name!r} refused to switch to {target}: "
                                              f"{answer}", hint="undeploy and deploy again")
        return answer

    def _current(self, name: str, containers: list[Any]) -> Any:
        """The container the front serves (else the oldest generation)."""
        answer = self._front(name).call("ping", timeout=2.0)
        if answer:
            for c in containers:
                if self._direct_address(c) == answer.get("target"):
                    return c
        return containers[0]

    # ------------------------------------------------------------ state
    def _state(self, container: Any, url: str | None, model: str, version: int) -> str:
        status = container.status
        if status in ("created", "restarting"):
            return "starting"
        if status == "running":
            return "ready" if url and self._ready(url, model, version, 1.0) else "starting"
        if status in ("exited", "dead", "removing", "stopped"):
            return "failed"
        return "unknown"

    def _direct_address(self, container: Any) -> str | None:
        """HOST:PORT where the container itself listens on the host."""
        port = container.labels.get(f"{L}port")
        if port:
            return f"{self.config.host}:{port}"
        ports = (container.attrs.get("NetworkSettings") or {}).get("Ports") or {}
        binding = ports.get(f"{self.config.container_port}/tcp")
        if binding:
            return f"{self.config.host}:{binding[0]['HostPort']}"
        return None

    def _url(self, container: Any) -> str | None:
        address = self._direct_address(container)
        return f"http://{address}" if address else None

    def _to_deployment(self, container: Any, *, refresh: bool = True) -> Deployment:
        name = container.labels[f"{L}deployment"]
        if refresh:
            with engine_errors(f"reading container {container.name} of deployment {name!r}"):
                container.reload()
        labels = container.labels
        direct = self._url(container)
        front_port = labels.get(f"{L}front-port")
        model, version = labels[f"{L}model"], int(labels[f"{L}version"])
        probe_model = labels.get(f"{L}model.name", model)  # what the image serves (its labels, inherited)
        probe_version = int(labels.get(f"{L}model.version", version))
        url = direct
        if front_port and container.status == "running" and direct:
            if self._front(name).call("ping") is None:  # the front died (a reboot): start it again, same port
                self._start_front(name, int(front_port), direct.removeprefix("http://"))
            url = f"http://{self.config.host}:{front_port}"
        prev = labels.get(f"{L}previous-version")
        return Deployment(
            name=name, model=model, version=version,
            backend=self.context.name, state=self._state(container, direct, probe_model, probe_version), url=url,
            previous_version=int(prev) if prev else None,
            created_at=_parse_time(labels.get(f"{L}created-at")), updated_at=_parse_time(labels.get(f"{L}updated-at")),
            details={"container": container.name, "container_id": container.id[:12], "image": labels.get(f"{L}image", ""),
                     "generation": int(labels.get(f"{L}generation", "0")), "container_url": direct},
            options=json.loads(labels.get(f"{L}options", "{}")),
        )

    @staticmethod
    def _ready(url: str, model: str, version: int, timeout: float) -> bool:
        """The model version itself is ready (not only the server process)."""
        import urllib.error
        import urllib.parse
        import urllib.request

        path = f"/v2/models/{urllib.parse.quote(model, safe='')}/versions/{version}/ready"
        try:
            with urllib.request.urlopen(url + path, timeout=timeout) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # ------------------------------------------------------------ primitives
    def get(self, name: str) -> Deployment:
        for attempt in range(3):
            containers = self._containers(name)
            if not containers:
                raise NotFoundError(f"no deployment named {name!r} in the container engine",
                                    hint="list them with `mlops deployments list` (or deploy one)")
            try:
                return self._to_deployment(self._current(name, containers))
            except (NotFoundError, BackendUnavailableError):
                if attempt == 2:
                    raise
                # The container went away between the listing and the lookup (an update finished; podman
                # may answer 500 for a container it is removing): list again. A dead engine fails the listing.
        raise AssertionError("unreachable")

    def list(self) -> Sequence[Deployment]:
        names = sorted({c.labels[f"{L}deployment"] for c in self._containers()})
        out = []
        for name in names:
            try:
                out.append(self.get(name))
            except NotFoundError:
                continue  # undeployed meanwhile
        return out

    def logs(self, name: str, *, tail: int = 100) -> str:
        containers = self._containers(name)
        if not containers:
            raise NotFoundError(f"no deployment named {name!r}", hint="check the name with `mlops deployments list`")
        current = self._current(name, containers)
        with engine_errors(f"reading the logs of {current.name}"):
            return current.logs(tail=tail, stdout=True, stderr=True).decode("utf-8", "replace")

    def delete(self, name: str) -> None:
        containers = self._containers(name)
        if not containers:
            raise NotFoundError(f"no deployment named {name!r}", hint="check the name with `mlops deployments list`")
        self._front(name).call("stop")
        for c in containers:
            self._remove(c)

    def _remove(self, container: Any) -> None:
        import docker.errors

        try:
            with engine_errors(f"removing container {container.name}"):
                if container.status == "running":
                    container.stop(timeout=self.config.stop_timeout)  # SIGTERM: the server drains, then exits
                container.remove(force=True)
        except NotFoundError:
            pass
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
        except Exception as exc:  # noqa: BLE001 - connection errors of the SDK
            with engine_errors(f"pulling {image}"):
                raise exc

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
        previous = self._current(spec.name, old) if old else None
        front_port = self._front_port(spec, old)
        generation = (max(int(c.labels.get(f"{L}generation", "0")) for c in old) + 1) if old else 1
        now = utcnow().isoformat()
        created_at = previous.labels.get(f"{L}created-at", now) if previous else now
        labels = {
            f"{L}deployment": spec.name, f"{L}model": spec.model, f"{L}version": str(spec.version),
            f"{L}generation": str(generation), f"{L}created-at": created_at, f"{L}updated-at": now,
            f"{L}image": image, f"{L}options": json.dumps(dict(spec.options), sort_keys=True),
            f"{L}front-port": str(front_port),
        }
        if previous is not None:
            labels[f"{L}previous-version"] = previous.labels[f"{L}version"]
        kwargs: dict[str, Any] = {
            "name": f"{self.config.prefix}{spec.name}-{generation}", "detach": True, "labels": labels,
            "environment": {**dict(self.config.environment), "MLOPS_LOG_FORMAT": self.config.log_format},
            "ulimits": [docker.types.Ulimit(name=k, soft=int(v.split(":")[0]), hard=int(v.split(":")[-1]))
                        for k, v in self.config.ulimits.items()],
        }
        image_labels = self._image_labels(image)
        healthcheck = self._healthcheck(image_labels)
        # The readiness probe asks for the model version the image serves (its labels say which).
        served_model = image_labels.get(f"{L}model.name", spec.model)
        served_version = int(image_labels.get(f"{L}model.version", spec.version))
        if healthcheck:
            kwargs["healthcheck"] = healthcheck
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
        except Exception as exc:  # noqa: BLE001 - connection errors of the SDK
            with engine_errors(f"starting {image}"):
                raise exc
        try:
            self._wait_ready(container, served_model, served_version, wait)
            address = self._direct_address(container)
            assert address is not None
            # Switch: from here on the front sends every new request to the new container.
            self._ensure_front(spec.name, front_port, address)
        except BaseException:
            self._remove(container)
            raise
        # The old ones stop (SIGTERM: they answer what they have, then exit) and go.
        for c in old:
            self._remove(c)
        return self._to_deployment(container)

    def _image_labels(self, image: str) -> dict[str, str]:
        import docker.errors

        try:
            with engine_errors(f"inspecting image {image}"):
                return dict(self.client.images.get(image).labels or {})
        except (NotFoundError, docker.errors.ImageNotFound):
            return {}

    @staticmethod
    def _healthcheck(labels: dict[str, str]) -> dict[str, Any] | None:
        """The image's health check (from its ``io.mlops.healthcheck`` label), for the engine's create call.

        Docker reads HEALTHCHECK from the image config, podman only from Docker-format
        images: passing it explicitly makes both run it.
        """
        raw = labels.get(f"{L}healthcheck")
        if not raw:
            return None
        try:
            test = json.loads(raw)
        except ValueError:
            return None
        return {"test": ["CMD", *test], "interval": 10_000_000_000, "timeout": 5_000_000_000,
                "retries": 3, "start_period": 120_000_000_000}

    def _front_port(self, spec: DeploymentSpec, old: list[Any]) -> int:
        """The deployment's stable port: kept from before, else ``--option port=N``, else a free one."""
        for c in old:
            if c.labels.get(f"{L}front-port"):
                return int(c.labels[f"{L}front-port"])
        if spec.options.get("port"):
            try:
                return int(spec.options["port"])
            except (TypeError, ValueError):
                raise InvalidInputError(f"option port={spec.options['port']!r} is not a port number",
                                        hint="pass --option port=8080 (or leave it out for a free port)") from None
        return _free_port(self.config.host)

    def _wait_ready(self, container: Any, model: str, version: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            with engine_errors(f"waiting for container {container.name}"):
                container.reload()
            url = self._url(container)
            if container.status in ("exited", "dead"):
                with engine_errors(f"reading the logs of {container.name}"):
                    tail = container.logs(tail=30).decode("utf-8", "replace")
                raise MlopsError(f"container {container.name} exited before it was ready:\n{tail}",
                                 hint="the previous version (if any) keeps serving; fix the model or image and deploy again")
            if container.status == "running" and url and self._ready(url, model, version, 1.0):
                return
            if time.monotonic() > deadline:
                with engine_errors(f"reading the logs of {container.name}"):
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
