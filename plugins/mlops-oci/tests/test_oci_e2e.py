"""End to end, for real: debootstrap base -> local registry -> oci build -> podman (Docker API) -> V2 predictions.

Slow (a cold run: debootstrap about 45 s once, then wheel download and layer
writing for scikit-learn, image pull into podman's vfs storage); CI runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import mlops_core.api as api
from mlops_core.errors import NotFoundError
from oci_testkit import make_stack

pytestmark = pytest.mark.slow


def _infer(url: str, model: str, rows: np.ndarray) -> list[Any]:
    body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]}
    resp = requests.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["model_name"] == model
    return out["outputs"][0]["data"]


def test_build_push_run_predict_update_rollback(tmp_path: Path, registry: Any, python_base: str,
                                                podman_service: Any) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    first = LogisticRegression(max_iter=500).fit(x, y)
    second = DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y)  # deliberately different answers
    stack = make_stack(
        tmp_path / "home", base=python_base, repository=f"{registry.host}/models",
        deployer={"base_url": podman_service.base_url, "network_mode": "host",
                  "ulimits": '{"nofile": "1024:1024", "nproc": "1024:1024"}'},
    )
    v1 = api.register("iris", first, example=x[:3], stack=stack)
    v2 = api.register("iris", second, example=x[:3], stack=stack)
    rows = x[[0, 60, 120, 70, 140]]

    dep = api.deploy(v1.uri, name="iris", wait=180, stack=stack)
    assert (dep.state, dep.version, dep.previous_version) == ("ready", 1, None)
    assert _infer(dep.url, "iris", rows) == first.predict(rows).tolist()
    assert requests.get(f"{dep.url}/v2/health/ready", timeout=5).status_code == 200
    inspect = podman_service.podman("inspect", dep.details["container"], "--format", "{{.Config.User}}").stdout.strip()
    assert inspect == "65532:65532"  # runs as the image's non-root user

    updated = api.deploy(v2.uri, name="iris", wait=180, stack=stack)
    assert (updated.state, updated.version, updated.previous_version) == ("ready", 2, 1)
    assert _infer(updated.url, "iris", rows) == second.predict(rows).tolist()
    assert [d.name for d in api.deployments(stack=stack)] == ["iris"]
    assert len(podman_service.podman("ps", "-a", "-q", "--filter", "label=io.mlops.deployment=iris").stdout.split()) == 1
    report = stack.builder.last_report
    assert {l["name"]: l["cached"] for l in report.layers} == {"deps": True, "runtime": True, "bundle": False}

    back = api.rollback("iris", wait=180, stack=stack)
    assert (back.version, back.previous_version) == (1, 2)
    assert _infer(back.url, "iris", rows) == first.predict(rows).tolist()
    assert api.deployment_logs("iris", stack=stack)

    api.undeploy("iris", stack=stack)
    with pytest.raises(NotFoundError):
        api.deployment("iris", stack=stack)
