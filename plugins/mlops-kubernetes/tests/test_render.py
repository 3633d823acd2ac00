"""The renderer without a cluster: object contents, determinism, settings, and errors that say what to do."""

from __future__ import annotations

import json

import pytest
import yaml

from mlops_core.errors import InvalidInputError
from mlops_kubernetes.config import KubernetesDeployerConfig, with_options
from mlops_kubernetes.render import (
    ApiVersions,
    RenderInput,
    manifest_files,
    pinned_image,
    render,
    termination_grace_seconds,
    to_yaml,
)

DIGEST = "sha256:" + "ab" * 32
BUNDLE = "sha256:" + "cd" * 32


def make_input(**config: object) -> RenderInput:
    apis = config.pop("apis", ApiVersions())
    return RenderInput(name="iris", model="iris", version=3, bundle_digest=BUNDLE,
                       image="127.0.0.1:5000/models/iris:v3", image_digest=DIGEST,
                       config=KubernetesDeployerConfig(**config), apis=apis)  # type: ignore[arg-type]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objects}


def test_plain_objects_and_their_contract() -> None:
    objs = by_kind(render(make_input()))
    assert list(objs) == ["Service", "Deployment"]
    dep = objs["Deployment"]
    assert dep["apiVersion"] == "apps/v1" and dep["metadata"]["namespace"] == "default"
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == f"127.0.0.1:5000/models/iris@{DIGEST}", "pods run exactly the built image, by digest"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["runAsUser"] == 65532 and sc["capabilities"] == {"drop": ["ALL"]}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert all(p["protocol"] == "TCP" for p in c["ports"])
    # Termination covers preStop + drain + idle keep-alive wait + margin.
    assert c["args"] == ["--port", "8080", "--drain-timeout", "30"]
    assert pod["terminationGracePeriodSeconds"] == 5 + 31 + 5 == termination_grace_seconds(KubernetesDeployerConfig())
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["python3", "-c", "import time; time.sleep(5)"]
    svc = objs["Service"]
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # Version-independent selector (immutable on a Deployment), version on the pods.
    assert "app.kubernetes.io/version" not in dep["spec"]["selector"]["matchLabels"]
    tmpl_meta = dep["spec"]["template"]["metadata"]
    assert tmpl_meta["labels"]["app.kubernetes.io/version"] == "3"
    assert tmpl_meta["annotations"]["mlops.dev/bundle-digest"] == BUNDLE
    assert tmpl_meta["annotations"]["prometheus.io/scrape"] == "true"
    assert dep["metadata"]["annotations"]["mlops.dev/model-uri"] == "models:/iris/3"
    assert dep["metadata"]["labels"]["app.kubernetes.io/name"] == "iris"


def test_optional_objects_follow_discovery() -> None:
    old = make_input(hpa=True, pdb=True, apis=ApiVersions(hpa="autoscaling/v2beta2", pdb="policy/v1beta1",
                                                         service_monitor=True))
    objs = by_kind(render(old))
    assert objs["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2beta2"
    assert objs["PodDisruptionBudget"]["apiVersion"] == "policy/v1beta1"
    assert "replicas" not in objs["Deployment"]["spec"], "with an HPA the autoscaler owns spec.replicas"
    assert objs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "prometheus.io/scrape" not in objs["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    new = by_kind(render(make_input(hpa=True, pdb=True)))
    assert new["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    assert new["PodDisruptionBudget"]["apiVersion"] == "policy/v1"
    # The two HPA/PDB versions carry the same spec.
    assert new["HorizontalPodAutoscaler"]["spec"] == objs["HorizontalPodAutoscaler"]["spec"]


def test_kserve_flavor() -> None:
    (isvc,) = render(make_input(flavor="kserve", replicas=2))
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 2)
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container" and c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert isvc["metadata"]["annotations"]["mlops.dev/bundle-digest"] == BUNDLE


def test_same_inputs_same_bytes_and_order() -> None:
    a = manifest_files(render(make_input(hpa=True, pdb=True, labels={"team": "fraud", "a": "b"})))
    b = manifest_files(render(make_input(pdb=True, hpa=True, labels={"a": "b", "team": "fraud"})))
    assert a == b
    assert list(a) == ["01-service-iris.yaml", "02-deployment-iris.yaml", "03-horizontalpodautoscaler-iris.yaml",
                       "04-poddisruptionbudget-iris.yaml"]
    text = a["02-deployment-iris.yaml"]
    assert text.startswith("---\napiVersion: apps/v1\n")
    assert yaml.safe_load(text)["kind"] == "Deployment"
    assert to_yaml(render(make_input())) == "".join(manifest_files(render(make_input())).values())
    # Something else changes the bytes.
    c = manifest_files(render(make_input(replicas=2)))
    assert c["02-deployment-iris.yaml"] != a["02-deployment-iris.yaml"]


def test_render_input_round_trips_through_its_annotation() -> None:
    inp = make_input(hpa=True, tolerations='[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]',
                     node_selector={"pool": "models"})
    again = RenderInput.from_json(json.loads(json.dumps(inp.to_json())))
    assert again == inp
    assert render(again) == render(inp)


def test_settings_and_options() -> None:
    base = KubernetesDeployerConfig()
    cfg = with_options(base, {"replicas": "3", "hpa": "true", "cpu_limit": "2", "tolerations": "[]"})
    assert (cfg.replicas, cfg.hpa, cfg.cpu_limit) == (3, True, "2")
    with pytest.raises(InvalidInputError, match="unknown kubernetes option.*replica\\b"):
        with_options(base, {"replica": "3"})
    with pytest.raises(InvalidInputError, match="not a Kubernetes quantity"):
        with_options(base, {"memory_limit": "lots"})
    with pytest.raises(ValueError, match="not a valid Kubernetes name"):
        KubernetesDeployerConfig(namespace="Models_Prod")
    with pytest.raises(ValueError):
        KubernetesDeployerConfig(flavor="knative")


def test_names_and_images_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="cannot name Kubernetes objects") as err:
        render(RenderInput(name="Iris_v2", model="Iris_v2", version=1, bundle_digest=BUNDLE,
                           image="r.example/iris:v1", image_digest=DIGEST))
    assert "--name" in err.value.hint
    with pytest.raises(InvalidInputError, match="not sha256"):
        pinned_image("r.example/iris:v1", "latest")
    assert pinned_image("127.0.0.1:5000/m/iris:v1", DIGEST) == f"127.0.0.1:5000/m/iris@{DIGEST}"
    assert pinned_image("127.0.0.1:5000/m/iris:v1", DIGEST, "registry.svc:5000") == f"registry.svc:5000/m/iris@{DIGEST}"
    assert pinned_image(f"reg:5000/m/iris@{DIGEST}", DIGEST) == f"reg:5000/m/iris@{DIGEST}"


def test_long_model_names_stay_out_of_label_values() -> None:
    name = "m" * 80
    objs = render(RenderInput(name="short", model=name, version=1, bundle_digest=BUNDLE, image="r.example/x:v1",
                              image_digest=DIGEST))
    dep = by_kind(objs)["Deployment"]
    assert "app.kubernetes.io/name" not in dep["metadata"]["labels"], "label values are at most 63 characters"
    assert dep["metadata"]["annotations"]["mlops.dev/model"] == name
