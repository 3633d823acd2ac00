"""Engine failures reach the user as project errors with a hint (issue 14.1), against a real podman service."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import PodmanService, need
from mlops_core.errors import BackendUnavailableError, MlopsError, NotFoundError
from mlops_core.interfaces import BackendContext


def test_a_vanished_engine_and_a_missing_container_are_project_errors() -> None:
    need("podman", "podman")
    pytest.importorskip("docker", reason="the container deployer needs the docker SDK (pip install docker)")
    import docker.errors

    from mlops_oci.config import ContainerDeployerConfig
    from mlops_oci.deployer import ContainerDeployer, engine_errors

    root = Path(tempfile.mkdtemp(prefix="mlops-pm-", dir="/tmp"))
    service = PodmanService(root, [])
    try:
        deployer = ContainerDeployer(ContainerDeployerConfig(base_url=service.base_url),
                                     BackendContext(home=root / "home", hooks=None, name="container"))
        assert deployer.list() == []
        with pytest.raises(NotFoundError) as missing:
            deployer.get("nothing")
        assert missing.value.hint
        # The SDK's own exceptions, raised by the real engine, become project errors.
        with pytest.raises(NotFoundError, match="no such object while reading container x") as err:
            with engine_errors("reading container x"):
                deployer.client.containers.get("does-not-exist")
        assert err.value.hint and not isinstance(err.value, docker.errors.DockerException)
        with pytest.raises(MlopsError):
            with engine_errors("creating a container"):
                deployer.client.containers.create("localhost/no/such-image:1")
        service.stop()  # the engine goes away under a live client
        with pytest.raises(BackendUnavailableError) as gone:
            deployer.list()
        assert "container engine" in str(gone.value) and gone.value.hint
        deployer.close()
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)
