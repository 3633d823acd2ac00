"""Rendered objects against published schemas, offline.

* plain objects: the OpenAPI schemas of a *current* Kubernetes, shipped by the
  ``kubernetes-validate`` package (its newest version, strict: unknown fields fail),
  because the 1.20 API server of the cluster tests alone cannot show the manifests are modern;
* the KServe InferenceService: the ``openAPIV3Schema`` of the CRD in ``data/`` (see
  ``data/README.md`` for where it comes from), made strict the same way.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mlops_kubernetes.config import KubernetesDeployerConfig
from mlops_kubernetes.render import ApiVersions, RenderInput, render

DATA = Path(__file__).parent / "data"
DIGEST = "sha256:" + "ab" * 32
BUNDLE = "sha256:" + "cd" * 32


def rendered(**config: Any) -> list[dict[str, Any]]:
    apis = config.pop("apis", ApiVersions())
    return render(RenderInput(name="iris", model="iris", version=3, bundle_digest=BUNDLE,
                              image="127.0.0.1:5000/models/iris:v3", image_digest=DIGEST,
                              config=KubernetesDeployerConfig(**config), apis=apis))


ALL_ON = dict(hpa=True, pdb=True, image_pull_secret="regcred", node_selector={"pool": "models"},
              tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
              service_account="models", cpu_limit="2", labels={"team": "fraud"})


def test_kubernetes_validate_ships_a_current_version() -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    major, minor = (int(x) for x in version.split(".")[:2])
    assert (major, minor) >= (1, 30), f"kubernetes-validate's newest schema is {version}"


@pytest.mark.parametrize("config", [{}, ALL_ON], ids=["defaults", "everything-on"])
def test_plain_objects_match_current_kubernetes_schemas(config: dict[str, Any]) -> None:
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    objects = rendered(**config)
    assert {o["kind"] for o in objects} >= ({"Deployment", "Service"} | ({"HorizontalPodAutoscaler", "PodDisruptionBudget"}
                                                                        if config else set()))
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError with the path


def test_kubernetes_validate_catches_a_wrong_object() -> None:
    """The check has teeth: a typo'd field and a wrong type are refused."""
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    dep = next(o for o in rendered() if o["kind"] == "Deployment")
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


@functools.lru_cache(maxsize=1)
def kserve_validator() -> jsonschema.Draft4Validator:
    """Draft 4 is what OpenAPI v3 schemas build on. The meta-schema check of the 0.5 MB schema
    (what ``jsonschema.validate`` does on every call) is skipped: it takes ~20 s and proves nothing here."""
    crd = json.loads((DATA / "kserve-inferenceservice-crd.json").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return jsonschema.Draft4Validator(strict(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


def strict(schema: Any) -> Any:
    """Refuse unknown fields where the CRD lists properties (the API server would silently prune them)."""
    if isinstance(schema, dict):
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


@pytest.mark.parametrize("config", [{}, ALL_ON], ids=["defaults", "everything-on"])
def test_inference_service_matches_the_kserve_crd(config: dict[str, Any]) -> None:
    (isvc,) = rendered(flavor="kserve", **config)
    kserve_validator().validate(isvc)


def test_kserve_schema_catches_a_wrong_object() -> None:
    (isvc,) = rendered(flavor="kserve")
    validator = kserve_validator()
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["container"] = bad["spec"]["predictor"].pop("containers")
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["minReplicas"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)
    bad = copy.deepcopy(isvc)
    del bad["spec"]["predictor"]
    with pytest.raises(jsonschema.ValidationError, match="predictor"):
        validator.validate(bad)


def test_crd_copy_records_its_source() -> None:
    crd = json.loads((DATA / "kserve-inferenceservice-crd.json").read_text())
    assert crd["metadata"]["name"] == "inferenceservices.serving.kserve.io"
    assert "kserve==0.21.0" in crd["metadata"]["annotations"]["mlops.dev/source"]
    assert (DATA / "README.md").is_file()
