"""The project's conformance suites (mlops_core.testing), run against the mlops-oci backends.

* ``oci`` builder: ``BuilderSuite`` on a tiny local OCI layout as the base (no registry,
  no daemon). Every capability is claimed: digests are reproducible (fixed times,
  canonical JSON), content addressed, and the layout is written on disk.
* ``dockerfile`` builder: ``BuilderSuite`` too. Its ImageRef.digest is a digest of the
  build context's inputs (no image exists yet), which is still reproducible and content
  addressed, and ImageRef.layout is the context folder: every capability applies.
* ``container`` deployer: ``DeployerSuite`` through podman's Docker-compatible API, with
  the local registry, the debootstrap Python base and the podman service of conftest.py
  (slow). Each test builds and pushes the kit bundle's image with the oci builder; the
  layer cache is shared by the module, so only the small bundle layer is new each time.

The builders share one stack home per module (its cache under ``cache/oci``): the
first build resolves the wheels with pip, later ones take them from the cache, as a
warm CI machine would. Every test writes its images to its own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from mlops_core.entities import ArtifactRef, ImageRef, ModelVersion
from mlops_core.errors import NotFoundError
from mlops_core.interfaces import BackendContext
from mlops_core.plugins import get_plugin_manager
from mlops_core.testing.suites import BuilderSuite, DeployerSuite
from mlops_oci.builder import OciImageBuilder
from mlops_oci.config import ContainerDeployerConfig, DockerfileBuilderConfig, OciBuilderConfig
from mlops_oci.dockerfile import DockerfileBuilder
from oci_testkit import write_multiarch_layout


def _context(home: Path, name: str) -> BackendContext:
    return BackendContext(home=home, hooks=get_plugin_manager().hooks, name=name, base_dir=home)


@pytest.fixture(scope="module")
def builder_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stack home for the module's builds: its wheel and layer cache is shared, its images are not."""
    return tmp_path_factory.mktemp("oci-kit-home")


@pytest.fixture(scope="module")
def tiny_layout(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small local multi-arch base (PYTHON_VERSION=3.11.9, no real Python: built, never run)."""
    layout = tmp_path_factory.mktemp("oci-kit-base") / "layout"
    write_multiarch_layout(layout, "tiny")
    return f"oci:{layout}:tiny"


class TestOciBuilderConformance(BuilderSuite):
    @pytest.fixture
    def backend(self, builder_home: Path, tiny_layout: str, tmp_path: Path) -> OciImageBuilder:
        config = OciBuilderConfig(base=tiny_layout, runtime_distributions=["mlops-core"], python_version="3.11",
                                  output=str(tmp_path / "images"), progress=False)
        return OciImageBuilder(config, _context(builder_home, "oci"))


class TestDockerfileBuilderConformance(BuilderSuite):
    @pytest.fixture
    def backend(self, builder_home: Path, tmp_path: Path) -> DockerfileBuilder:
        config = DockerfileBuilderConfig(base="localhost/mlops-kit/tiny:1", runtime_distributions=["mlops-core"],
                                         python_version="3.11", output=str(tmp_path / "contexts"), progress=False)
        return DockerfileBuilder(config, _context(builder_home, "dockerfile"))


@pytest.fixture(scope="module")
def warm_engine(registry: Any, python_base: str, podman_service: Any, builder_home: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An image of the kit model kept in podman for the module, so the layers every test image
    shares with it (base, deps, runtime) are pulled once; each test adds only its bundle layer."""
    from mlops_core.testing.models import save_kit_bundle

    folder = tmp_path_factory.mktemp("oci-kit-warm")
    bundle = save_kit_bundle(folder / "bundle")
    version = ModelVersion(model="kit-warm", version=1,
                           artifact=ArtifactRef(uri=bundle.path.as_uri(), digest=bundle.digest))
    config = OciBuilderConfig(base=python_base, repository=f"{registry.host}/kit", output=str(folder / "images"),
                              progress=False)
    image = OciImageBuilder(config, _context(builder_home, "oci")).build(version, bundle.path, push=True)
    pulled = podman_service.podman("pull", "--tls-verify=false", image.reference, check=False)
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    yield
    podman_service.podman("rmi", "--ignore", image.reference, check=False)


@pytest.mark.slow
class TestContainerDeployerConformance(DeployerSuite):
    # Every capability: an update starts the new container, waits until it answers, then
    # removes the old one and records previous_version; delete stops and removes containers.
    # The kit gives one image per test (deployment_image), so its update deploys the image
    # of version 1 under version 2: that checks the rolling switch and the labels, not that
    # the container serves a different model (test_oci_e2e.py does that with two images).
    deploy_wait = 180.0

    @pytest.fixture
    def backend(self, podman_service: Any, builder_home: Path, ns: str) -> Iterator[Any]:
        from mlops_oci.deployer import ContainerDeployer

        config = ContainerDeployerConfig(base_url=podman_service.base_url, network_mode="host",
                                         ulimits={"nofile": "1024:1024", "nproc": "1024:1024"}, stop_timeout=10)
        deployer = ContainerDeployer(config, _context(builder_home, "container"))
        yield deployer
        try:
            # The engine is shared by the session: remove only this test's deployments (the kit
            # already deleted the ones it made), then check that no container of them is left.
            for d in deployer.list():
                if d.name.startswith(ns):
                    try:
                        deployer.delete(d.name)
                    except NotFoundError:
                        pass
            left = podman_service.podman("ps", "-a", "-q", "--filter", f"label=io.mlops.deployment={ns}-dep").stdout
            assert not left.split(), f"containers left after every deployment was deleted: {left}"
        finally:
            deployer.close()

    @pytest.fixture
    def deployment_image(self, registry: Any, python_base: str, podman_service: Any, builder_home: Path,
                         warm_engine: None, kit_version: ModelVersion, kit_bundle: Any,
                         tmp_path: Path) -> Iterator[ImageRef]:
        """The kit bundle's image, built on the debootstrap Python base and pushed to the local registry."""
        config = OciBuilderConfig(base=python_base, repository=f"{registry.host}/kit", output=str(tmp_path / "images"),
                                  progress=False)
        image = OciImageBuilder(config, _context(builder_home, "oci")).build(kit_version, kit_bundle.path, push=True)
        yield image
        # podman's vfs storage keeps a full copy of the root file system per image: drop this
        # test's image (pulled by digest) once its containers are gone. No --force: a container
        # still using it is reported by the backend fixture instead.
        repository = image.reference.rsplit(":", 1)[0]
        podman_service.podman("rmi", "--ignore", f"{repository}@{image.digest}", check=False)
