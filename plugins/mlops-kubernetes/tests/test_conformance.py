"""The project's ``DeployerSuite`` against the kubernetes deployer on the real control plane.

Each test's image is the kit bundle built by the oci builder and pushed to the test registry (the layer cache
is shared by the module, so only the bundle layer is new each time).

Three suite tests send V2 requests to the deployment and cannot hold here: the simulated kubelet runs no
container, so nothing answers at the Service's address. They are overridden below with a skip that says so;
every other suite test runs. ``stops_serving_on_delete`` is not claimed for the same reason (it would pass
vacuously: the cluster DNS name does not resolve on this machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from mlops_core.entities import ImageRef, ModelVersion
from mlops_core.testing.suites import DeployerSuite

from k8s_testkit import build_images, make_deployer, tiny_base_layout

pytestmark = [pytest.mark.xdist_group("k8s"), pytest.mark.slow]

NO_CONTAINERS = ("the test cluster's simulated kubelet runs no container, so no server answers V2 requests "
                 "at the deployment's URL (see docs/kubernetes.md, 'What is tested here')")


@pytest.fixture(scope="module")
def builder_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("k8s-kit-home")
    return home, tiny_base_layout(home / "base")


class TestKubernetesDeployerConformance(DeployerSuite):
    stops_serving_on_delete = False

    @pytest.fixture
    def backend(self, k8s_cluster: Any, k8s_namespace: str, tmp_path: Path) -> Iterator[Any]:
        deployer = make_deployer(tmp_path, k8s_cluster.kubeconfig, k8s_namespace)
        yield deployer
        deployer.close()

    @pytest.fixture
    def deployment_image(self, oci_registry: Any, builder_home: tuple[Path, str], kit_version: ModelVersion,
                         kit_bundle: Any) -> ImageRef:
        home, base = builder_home
        return build_images(home, base, oci_registry.host, kit_version.model, kit_bundle, (1,))[1]

    def test_ready_means_it_answers(self) -> None:  # type: ignore[override]
        pytest.skip(NO_CONTAINERS)

    def test_bad_request_is_a_400_with_an_error_body(self) -> None:  # type: ignore[override]
        pytest.skip(NO_CONTAINERS)

    def test_update_keeps_serving(self, backend: Any, deploy: Any, ns: str) -> None:  # type: ignore[override]
        """The suite's update test minus its V2 request: version, previous_version, state and uniqueness."""
        deploy(version=1)
        d = deploy(version=2)
        assert (d.version, d.previous_version, d.state) == (2, 1, "ready")
        assert backend.get(d.name).version == 2
        assert [x.name for x in backend.list()].count(d.name) == 1, "an update replaces, it does not add"
