"""The dockerfile builder writes a complete context, and podman builds it into an equivalent image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_core.api as api
from conftest import need
from mlops_core.errors import ConfigError
from oci_testkit import Doubler, make_stack


@pytest.fixture()
def context(tmp_path: Path, tiny_base: str) -> dict[str, Any]:
    stack = make_stack(tmp_path / "home", backend="dockerfile", base=tiny_base, runtime_distributions=["mlops-core"],
                       python_version="3.11")
    version = api.register("doubler", Doubler(), example=np.array([[1.0]]), stack=stack)
    image = api.build(version.uri, stack=stack)
    return {"stack": stack, "version": version, "image": image, "dir": Path(image.layout)}


def test_context_is_complete_and_matches_the_oci_layers(context: dict[str, Any]) -> None:
    ctx = context["dir"]
    dockerfile = (ctx / "Dockerfile").read_text()
    assert dockerfile.splitlines()[2].startswith("FROM ") and "RUN" not in dockerfile
    assert 'USER 65532:65532' in dockerfile and 'ENTRYPOINT ["python3", "-s", "/opt/mlops/boot.py"' in dockerfile
    assert '"io.mlops.bundle.digest"="' + context["version"].artifact.digest + '"' in dockerfile
    assert (ctx / "layers/runtime/opt/mlops/boot.py").is_file()
    assert (ctx / "layers/deps/opt/mlops/site-packages/attr/__init__.py").is_file()
    manifest = json.loads((ctx / "layers/bundle/opt/mlops/bundle/manifest.json").read_text())
    for entry in manifest["files"]:
        assert (ctx / "layers/bundle/opt/mlops/bundle" / entry["path"]).is_file()
    with pytest.raises(ConfigError, match="cannot push"):
        api.build(context["version"].uri, push=True, stack=context["stack"])


def test_podman_builds_the_context(context: dict[str, Any], podman_service: Any) -> None:
    """A real `podman build` (no RUN steps, so it is quick even on vfs); the image has our config."""
    need("podman", "podman")
    tag = "localhost/mlops-test/doubler:v1"
    build = podman_service.podman("build", "--tls-verify=false", "--pull=missing", "-t", tag, str(context["dir"]), check=False)
    assert build.returncode == 0, build.stderr[-2000:]
    info = json.loads(podman_service.podman("image", "inspect", tag).stdout)[0]
    assert info["Config"]["User"] == "65532:65532"
    assert info["Config"]["Entrypoint"][:3] == ["python3", "-s", "/opt/mlops/boot.py"]
    assert info["Config"]["Labels"]["io.mlops.model.name"] == "doubler"
    assert len(info["RootFS"]["Layers"]) == 4  # base + the same three layers
    listing = podman_service.podman("run", "--rm", "--entrypoint", "/usr/local/bin/python3", tag, check=False)
    # The tiny base has no real Python; running it is the e2e test's job (with the oci builder).
    assert listing.returncode != 0


def test_podman_builds_from_a_local_layout_in_a_dot_folder(tmp_path: Path, podman_service: Any) -> None:
    """`FROM oci:PATH` with a folder starting with a dot (like ~/.cache or .mlops) builds (issue 14.8)."""
    from oci_testkit import write_multiarch_layout

    layout = tmp_path / ".cache" / "Bases" / "tiny"
    write_multiarch_layout(layout, "tiny")
    stack = make_stack(tmp_path / ".mlops", backend="dockerfile", base=f"oci:{layout}:tiny",
                       runtime_distributions=["mlops-core"], python_version="3.11")
    version = api.register("dotted", Doubler(), example=np.array([[1.0]]), stack=stack)
    image = api.build(version.uri, stack=stack)
    dockerfile = (Path(image.layout) / "Dockerfile").read_text()
    assert "/.cache/" not in next(line for line in dockerfile.splitlines() if line.startswith("FROM "))
    build = podman_service.podman("build", "-t", "localhost/mlops-test/dotted:v1", image.layout, check=False)
    assert build.returncode == 0, build.stderr[-2000:]
    info = json.loads(podman_service.podman("image", "inspect", "localhost/mlops-test/dotted:v1").stdout)[0]
    assert info["Config"]["Labels"]["io.mlops.model.name"] == "dotted"
