"""Exact reproducibility (issue 14.3-5) and the image commands' registry settings (14.6), for real.

The same bundle gives the same image digest whatever the base layout's folder,
the user's home, the cache's state (cold or warm) - and SOURCE_DATE_EPOCH changes
every layer alike in a warm and a cold cache. A base that lacks the platform the
build targets is refused, naming both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_core.api as api
from mlops_core.errors import InvalidInputError
from oci_testkit import Doubler, make_stack, write_multiarch_layout

EXAMPLE = np.array([[1.0, 2.0]])


def _build(home: Path, base: Path, bundle: Path | None, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[Any, Any]:
    monkeypatch.setenv("HOME", str(home / "user"))  # another user's home: nothing may depend on it
    stack = make_stack(home, base=f"oci:{base}:tiny", runtime_distributions=["mlops-core"], **kw)
    version = api.register("same", bundle if bundle is not None else Doubler(), example=EXAMPLE, stack=stack)
    return api.build(version.uri, stack=stack), stack


def test_equal_digests_across_base_folder_home_cache_state_and_source_date_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    base_a = tmp_path / "a" / ".cache" / "base"  # a dot folder, like ~/.cache
    write_multiarch_layout(base_a, "tiny")
    base_b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(base_a, base_b)

    first, stack1 = _build(tmp_path / "home1", base_a, None, monkeypatch)
    bundle = stack1.home / "cache" / "bundles" / first.labels["io.mlops.bundle.digest"].replace(":", "-")
    moved, _ = _build(tmp_path / "home2", base_b, bundle, monkeypatch)
    assert moved.digest == first.digest  # another base folder, another home, a cold cache
    assert first.labels["org.opencontainers.image.base.name"] == "oci-layout:tiny"
    assert str(tmp_path) not in json.dumps(dict(first.labels))

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    warm, stack_warm = _build(tmp_path / "home1", base_a, bundle, monkeypatch)
    warm_layers = stack_warm.builder.last_report.layers
    # home1 now holds version 2 of the model: make version 2 in the cold home too (the version is a label).
    api.register("same", bundle, stack=make_stack(tmp_path / "home3"))
    cold, stack_cold = _build(tmp_path / "home3", base_b, bundle, monkeypatch)
    assert warm.labels["io.mlops.model.version"] == cold.labels["io.mlops.model.version"] == "2"
    assert warm.digest == cold.digest != first.digest
    # The warm cache did not hand out layers written with other file times.
    assert [l["digest"] for l in warm_layers] == [l["digest"] for l in stack_cold.builder.last_report.layers]
    assert not any(l["cached"] for l in warm_layers)
    assert warm.labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


def test_a_platform_the_base_lacks_is_refused_naming_both(tmp_path: Path) -> None:
    from mlops_oci.builder import check_base_platform

    layout = tmp_path / "single"
    write_multiarch_layout(layout, "tiny")
    index = json.loads((layout / "index.json").read_text())
    inner = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    amd64 = next(m for m in inner["manifests"] if m["platform"]["architecture"] == "amd64")
    # Make the layout's tag point at the amd64 image alone (a single-platform base, like the debootstrap one).
    index["manifests"] = [{**amd64, "annotations": {"org.opencontainers.image.ref.name": "tiny"}}]
    (layout / "index.json").write_text(json.dumps(index))
    stack = make_stack(tmp_path / "home", base=f"oci:{layout}:tiny", runtime_distributions=["mlops-core"],
                       platform="linux/arm64")
    version = api.register("armmodel", Doubler(), example=EXAMPLE, stack=stack)
    with pytest.raises(InvalidInputError, match="is linux/amd64, but the build targets linux/arm64") as err:
        api.build(version.uri, stack=stack)
    assert "platform" in (err.value.hint or "")
    check_base_platform({"os": "linux", "architecture": "arm64"}, "linux/arm64", "x")  # the same platform passes


def test_image_push_and_inspect_use_the_stack_registry_settings(tmp_path: Path, basic_registry: Any,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "base"
    write_multiarch_layout(base, "tiny")
    stack = make_stack(tmp_path / "home", base=f"oci:{base}:tiny", runtime_distributions=["mlops-core"])
    version = api.register("creds", Doubler(), example=EXAMPLE, stack=stack)
    image = api.build(version.uri, stack=stack)
    target = f"{basic_registry.host}/copies/creds:v1"
    env_base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MLOPS_")}
    env_base["DOCKER_CONFIG"] = str(tmp_path / "no-docker-config")

    def mlops(*args: str, config: Path | None) -> subprocess.CompletedProcess:
        env = {**env_base, "MLOPS_HOME": str(tmp_path / "cli-home")}
        if config:
            env["MLOPS_CONFIG"] = str(config)
        return subprocess.run([sys.executable, "-m", "mlops_core.cli", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    refused = mlops("image", "push", f"{image.layout}:v1", target, config=None)
    assert refused.returncode != 0 and "hint:" in refused.stderr
    stack_file = tmp_path / "mlops.toml"
    stack_file.write_text(f'[builder]\nbackend = "oci"\nrepository = "{basic_registry.host}/copies"\n'
                          f'username = "alice"\npassword = "s3cret"\n')
    pushed = mlops("image", "push", f"{image.layout}:v1", target, "--json", config=stack_file)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["digest"] == image.digest
    shown = mlops("image", "inspect", target, "--json", config=stack_file)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["digest"] == image.digest
    # The credentials are for the stack's own registry only.
    from mlops_oci.cli import stack_registry_settings
    from mlops_oci.reference import ImageReference

    monkeypatch.setenv("MLOPS_CONFIG", str(stack_file))
    assert stack_registry_settings(ImageReference.parse(target))[0]["username"] == "alice"
    assert stack_registry_settings(ImageReference.parse("other.example/x:1"))[0]["username"] is None
