"""``DeployerSuite``: the conformance tests of a :class:`~mlops_core.interfaces.Deployer`.

The suite deploys a real bundle (a model that doubles its input), then talks to
it with a plain Open Inference Protocol V2 client. The central promise checked
is that **"ready" means "answers"**: the moment ``deploy`` returns a deployment
in state ``ready``, the health, metadata and inference endpoints answer on the
first try, with no retry loop on the client's side::

    class TestMyDeployer(DeployerSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            deployer = MyDeployer(tmp_path)
            yield deployer
            deployer.close()

A deployer with ``requires_image = True`` also needs a ``deployment_image``
fixture returning the ImageRef to run (build it with your builder from
``kit_version`` and ``kit_bundle``); without one those tests skip.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, ClassVar

import pytest

from ...entities import Deployment, DeploymentSpec, ImageRef
from ...errors import NotFoundError
from ...interfaces import Deployer
from ..models import EXAMPLE_INPUT, EXPECTED_OUTPUT, flatten
from ._base import ConformanceSuite
from ._fixtures import BundleFixtures

__all__ = ["DeployerSuite", "v2_request"]


def v2_request(url: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP call, no retry: (status, parsed JSON or text). Connection errors raise AssertionError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise AssertionError(f"{url}{path} does not answer: {exc}") from None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class DeployerSuite(BundleFixtures, ConformanceSuite):
    """Conformance tests for a Deployer; define the ``backend`` fixture."""

    CAPABILITIES: ClassVar[dict[str, str]] = {
        "supports_update": "updates an existing deployment in place (deploy to the same name) and records previous_version",
        "stops_serving_on_delete": "stops answering at the deployment URL once delete returns",
    }
    supports_update = True
    stops_serving_on_delete = True
    #: Seconds passed as ``deploy(..., wait=)``.
    deploy_wait: ClassVar[float] = 120.0

    @pytest.fixture
    def deployment_image(self) -> ImageRef | None:
        """Override for ``requires_image`` deployers: the image of ``kit_bundle`` to run."""
        return None

    @pytest.fixture
    def deploy(self, backend: Deployer, kit_bundle: Any, deployment_image: ImageRef | None, ns: str) -> Any:
        """``deploy(version=1, name=None) -> Deployment``; every deployment is deleted after the test."""
        if getattr(backend, "requires_image", False) and deployment_image is None:
            pytest.skip(f"{type(backend).__name__} requires an image: define a deployment_image fixture")
        names: set[str] = set()

        def _deploy(version: int = 1, name: str | None = None) -> Deployment:
            name = name or f"{ns}-dep"
            names.add(name)
            spec = DeploymentSpec(name=name, model=f"{ns}-model", version=version, bundle_path=str(kit_bundle.path),
                                  image=deployment_image, options={})
            return backend.deploy(spec, wait=self.deploy_wait)

        yield _deploy
        for name in names:
            try:
                backend.delete(name)
            except NotFoundError:
                pass

    def infer_body(self, deployment: Deployment, kit_bundle: Any) -> dict[str, Any]:
        spec = kit_bundle.manifest["signature"]["inputs"][0]
        return {"id": "kit-1", "inputs": [{"name": spec["name"], "datatype": "FP64", "shape": [2, 2],
                                          "data": flatten(EXAMPLE_INPUT)}]}

    # tests ---------------------------------------------------------------------
    def test_is_a_deployer(self, backend: Any) -> None:
        assert isinstance(backend, Deployer)
        assert isinstance(backend.check(), str)

    def test_deploy_returns_a_ready_deployment(self, deploy: Any, ns: str) -> None:
        d = deploy()
        assert isinstance(d, Deployment)
        assert (d.name, d.model, d.version) == (f"{ns}-dep", f"{ns}-model", 1)
        assert d.state == "ready", f"deploy returned state {d.state!r}; it must wait until the server answers"
        assert d.url and d.url.startswith(("http://", "https://")), "a ready deployment has an http(s) URL"
        assert d.previous_version is None

    def test_ready_means_it_answers(self, deploy: Any, kit_bundle: Any, ns: str) -> None:
        """The first request after deploy returns must succeed: no warm-up, no retry."""
        d = deploy()
        status, body = v2_request(d.url, "/v2/health/ready")
        assert status == 200, f"/v2/health/ready answered {status} {body!r} right after deploy returned 'ready'"
        status, _ = v2_request(d.url, "/v2/health/live")
        assert status == 200
        status, body = v2_request(d.url, f"/v2/models/{ns}-model/ready")
        assert status == 200, f"/v2/models/{ns}-model/ready answered {status} {body!r}"
        status, body = v2_request(d.url, f"/v2/models/{ns}-model/infer", self.infer_body(d, kit_bundle))
        assert status == 200, f"inference failed with {status}: {body!r}"
        assert flatten(body["outputs"][0]["data"]) == flatten(EXPECTED_OUTPUT), body

    def test_bad_request_is_a_400_with_an_error_body(self, deploy: Any, ns: str) -> None:
        d = deploy()
        status, body = v2_request(d.url, f"/v2/models/{ns}-model/infer", {"inputs": [{"name": "x"}]})
        assert 400 <= status < 500, f"a malformed request must get a 4xx, got {status}"
        assert isinstance(body, dict) and isinstance(body.get("error"), str), 'error bodies are {"error": "..."}'

    def test_get_and_list(self, backend: Deployer, deploy: Any, ns: str) -> None:
        d = deploy()
        got = backend.get(d.name)
        assert (got.name, got.version, got.state, got.url) == (d.name, 1, "ready", d.url)
        assert d.name in [x.name for x in backend.list()]
        assert isinstance(backend.logs(d.name), str)
        assert isinstance(backend.logs(d.name, tail=1), str)

    def test_unknown_deployment_is_not_found(self, backend: Deployer, ns: str) -> None:
        with pytest.raises(NotFoundError):
            backend.get(f"{ns}-nothing")

    def test_update_keeps_serving(self, backend: Deployer, deploy: Any, kit_bundle: Any, ns: str) -> None:
        self.require("supports_update")
        deploy(version=1)
        d = deploy(version=2)
        assert (d.version, d.previous_version, d.state) == (2, 1, "ready")
        assert backend.get(d.name).version == 2
        status, body = v2_request(d.url, f"/v2/models/{ns}-model/infer", self.infer_body(d, kit_bundle))
        assert status == 200, body
        assert [x.name for x in backend.list()].count(d.name) == 1, "an update replaces, it does not add"

    def test_delete(self, backend: Deployer, deploy: Any, ns: str) -> None:
        d = deploy()
        backend.delete(d.name)
        with pytest.raises(NotFoundError):
            backend.get(d.name)
        assert d.name not in [x.name for x in backend.list()]
        if self.stops_serving_on_delete:
            try:
                status, _ = v2_request(d.url, "/v2/health/ready", timeout=3)
            except AssertionError:
                return  # connection refused: stopped
            assert status != 200, "the deployment still answers after delete"
