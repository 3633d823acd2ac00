"""Rolling updates of the container deployer under load lose no request (issue 14.1), for real.

podman (Docker API) runs the containers; the deployment's URL is its front's and
never changes. Eight client threads send V2 requests the whole time: six keep-alive
clients (``http.client``, one persistent connection each, reopened only when the
server says ``Connection: close``) and two that open a new connection per request.
No client retries: any error counts. Three updates (v1 -> v2 -> v1 -> v2) must
lose nothing, and every answer must come from a version that was deployed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mlops_core.api as api
from mlops_core.testing.load import LoadGenerator
from oci_testkit import make_stack

pytestmark = pytest.mark.slow


def test_three_rolling_updates_under_eight_clients_lose_nothing(tmp_path: Path, registry: Any, python_base: str,
                                                                podman_service: Any) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    first = LogisticRegression(max_iter=500).fit(x, y)
    second = DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y)
    rows = x[[0, 60, 120, 70, 140]]
    answers = {tuple(first.predict(rows).tolist()): 1, tuple(second.predict(rows).tolist()): 2}
    assert len(answers) == 2
    stack = make_stack(
        tmp_path / "home", base=python_base, repository=f"{registry.host}/models",
        deployer={"base_url": podman_service.base_url, "network_mode": "host",
                  "ulimits": '{"nofile": "1024:1024", "nproc": "1024:1024"}'},
    )
    v1 = api.register("iris", first, example=x[:3], stack=stack)
    v2 = api.register("iris", second, example=x[:3], stack=stack)
    body = json.dumps({"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                                   "data": rows.ravel().tolist()}]}).encode()
    dep = api.deploy(v1.uri, name="iris", wait=180, stack=stack)
    url = dep.url
    try:
        served: list[int] = []
        with LoadGenerator(url, "/v2/models/iris/infer", body,
                           identify=lambda data: answers.get(tuple(json.loads(data)["outputs"][0]["data"]))) as load:
            load.wait_for(200)
            for target in (v2, v1, v2):
                updated = api.deploy(target.uri, name="iris", wait=180, stack=stack)
                assert updated.url == url  # one address for the deployment's whole life
                assert updated.version == target.version
                served.append(updated.version)
                load.wait_for(200)
        versions = [o.version for o in load.outcomes if not o.error]
        failed = load.failures()
        print(f"\n{len(versions)} answered, {len(failed)} failed over 3 updates; "
              f"answers per version {{1: {versions.count(1)}, 2: {versions.count(2)}}}")
        assert failed == []  # an answer no deployed version gives counts as a failure too
        assert versions.count(1) > 0 and versions.count(2) > 0
        kinds = {o.client.split("-")[0] for o in load.outcomes}
        assert kinds == {"keepalive", "new"}
        # The old containers are gone: one container serves, and it is the last version.
        ids = podman_service.podman("ps", "-a", "-q", "--filter", "label=io.mlops.deployment=iris").stdout.split()
        assert len(ids) == 1
        assert api.deployment("iris", stack=stack).version == 2
        # The image's HEALTHCHECK runs the server's readiness probe in the container.
        health = podman_service.podman("healthcheck", "run", ids[0], check=False)
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        api.undeploy("iris", stack=stack)
