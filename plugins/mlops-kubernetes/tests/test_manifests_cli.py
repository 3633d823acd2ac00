"""``mlops k8s manifests`` without a cluster: a real stack (embedded registry and storage), an image given by digest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    from mlops_core.testing.models import save_kit_bundle

    kit = save_kit_bundle(tmp_path / "bundle")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_DEPLOYER": "kubernetes",
                "MLOPS_DEPLOYER__NAMESPACE": "models", "MLOPS_DEPLOYER__REPLICAS": "2"})
    out = mlops("models", "save", str(kit.path), "--name", "iris", "--alias", "prod", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    env["KIT_DIGEST"] = kit.digest
    return env


def mlops(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "mlops"
    return subprocess.run([str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_manifests_are_written_deterministically(env: dict[str, str], tmp_path: Path) -> None:
    image = f"registry.example:5000/kit/iris@{DIGEST}"
    a = mlops("k8s", "manifests", "models:/iris@prod", "--image", image, "-o", str(tmp_path / "a"), env=env, cwd=tmp_path)
    assert a.returncode == 0, a.stderr
    b = mlops("k8s", "manifests", "models:/iris@prod", "--image", image, "-o", str(tmp_path / "b"), env=env, cwd=tmp_path)
    assert b.returncode == 0, b.stderr
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["01-service-iris.yaml", "02-deployment-iris.yaml"]
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    dep = yaml.safe_load((tmp_path / "a" / "02-deployment-iris.yaml").read_text())
    # The stack's [deployer] settings apply (namespace, replicas), and the bundle digest is the registered one.
    assert dep["metadata"]["namespace"] == "models" and dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["metadata"]["annotations"]["mlops.dev/bundle-digest"] == env["KIT_DIGEST"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == image
    assert "mlops.dev/render" not in dep["metadata"]["annotations"], "deployer bookkeeping stays out of GitOps output"

    # Another flavor into the same folder: the old files go, only this render stays.
    k = mlops("k8s", "manifests", "models:/iris@prod", "--image", image, "--flavor", "kserve", "--option", "hpa=true",
              "-o", str(tmp_path / "a"), "--json", env=env, cwd=tmp_path)
    assert k.returncode == 0, k.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["01-inferenceservice-iris.yaml"]
    isvc = yaml.safe_load((tmp_path / "a" / "01-inferenceservice-iris.yaml").read_text())
    assert isvc["spec"]["predictor"]["scaleMetric"] == "cpu"


@pytest.mark.parametrize("args, message", [
    (["--image", "registry.example/kit/iris:v1"], "not pinned by digest"),
    (["--image", f"registry.example/kit/iris@{DIGEST}", "--option", "replica=2"], "unknown kubernetes option(s) replica"),
    (["--image", f"registry.example/kit/iris@{DIGEST}", "--name", "Iris_2"], "cannot name Kubernetes objects"),
    (["--image", f"registry.example/kit/iris@{DIGEST}", "--option", "memory_limit=lots"], "not a Kubernetes quantity"),
])
def test_bad_input_is_a_clear_error(env: dict[str, str], tmp_path: Path, args: list[str], message: str) -> None:
    out = mlops("k8s", "manifests", "models:/iris@prod", "-o", str(tmp_path / "x"), *args, env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_model_is_not_found(env: dict[str, str], tmp_path: Path) -> None:
    out = mlops("k8s", "manifests", "models:/nope@prod", "-o", str(tmp_path / "x"), "--image",
                f"r.example/x@{DIGEST}", env=env, cwd=tmp_path)
    assert out.returncode == 5 and "error:" in out.stderr


def test_plugin_import_stays_light() -> None:
    """Discovering the plugin imports neither the kubernetes client nor yaml."""
    code = ("import sys, mlops_kubernetes.plugin, mlops_kubernetes.config; "
            "print(any(m.startswith(('kubernetes', 'yaml')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_backend_is_registered() -> None:
    from mlops_core.plugins import get_plugin_manager

    assert "kubernetes" in get_plugin_manager().catalog.names("deployer")


def test_stack_builds_the_deployer_without_connecting(tmp_path: Path) -> Any:
    from mlops_core.stack import Stack, load_config
    from mlops_kubernetes.deployer import KubernetesDeployer

    stack = Stack(load_config(env={"MLOPS_HOME": str(tmp_path), "MLOPS_DEPLOYER": "kubernetes",
                                   "MLOPS_DEPLOYER__KUBECONFIG": str(tmp_path / "missing")}))
    deployer = stack.deployer
    assert isinstance(deployer, KubernetesDeployer) and deployer.requires_image
    from mlops_core.errors import ConfigError

    with pytest.raises(ConfigError, match="kubeconfig .* does not exist"):
        deployer.list()
    stack.close()
