"""The oci builder against a real registry, checked by skopeo and umoci; reproducibility; incremental pushes.

These builds use a small multi-arch base (not runnable) and only mlops-core in the
runtime layer, so they take seconds; the slow end-to-end test runs a real image.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_core.api as api
from conftest import need, skopeo_inspect
from mlops_core.errors import ConfigError, InvalidInputError
from oci_testkit import Doubler, make_stack

EXAMPLE = np.array([[1.0, 2.0]])


class Tripler:
    def predict(self, x: Any) -> Any:
        return x * 3


def _stack(home: Path, registry: Any, base: str, **kw: Any) -> Any:
    return make_stack(home, base=base, repository=f"{registry.host}/models", runtime_distributions=["mlops-core"], **kw)


@pytest.fixture()
def built(tmp_path: Path, registry: Any, tiny_base: str) -> dict[str, Any]:
    stack = _stack(tmp_path / "home", registry, tiny_base, labels='{"team": "ml"}')
    version = api.register("doubler", Doubler(), example=EXAMPLE, stack=stack)
    image = api.build(version.uri, push=True, stack=stack)
    return {"stack": stack, "version": version, "image": image, "report": stack.builder.last_report}


def test_pushed_image_is_accepted_by_skopeo_with_labels_user_and_entrypoint(built: dict[str, Any], registry: Any) -> None:
    image, version = built["image"], built["version"]
    assert image.reference == f"{registry.host}/models/doubler:v1"
    info = skopeo_inspect(image.reference)
    assert info["Digest"] == image.digest
    labels = info["Labels"]
    assert labels["org.opencontainers.image.title"] == "doubler"
    assert labels["org.opencontainers.image.version"] == "1"
    # A real time: when the bundle was saved (SOURCE_DATE_EPOCH is unset here), the same in config and label.
    saved = built["stack"].home / "cache" / "bundles" / version.artifact.digest.replace(":", "-") / "manifest.json"
    created_at = json.loads(saved.read_text())["created_at"]
    assert labels["org.opencontainers.image.created"] == created_at[:19] + "Z"
    assert skopeo_inspect(image.reference, config=True)["created"] == created_at[:19] + "Z"
    assert labels["io.mlops.model.name"] == "doubler" and labels["io.mlops.model.version"] == "1"
    assert labels["io.mlops.bundle.digest"] == version.artifact.digest
    assert labels["org.opencontainers.image.base.name"].endswith("/base/tiny:1")
    assert labels["org.example.base"] == "tiny" and labels["team"] == "ml"  # base labels kept, user labels added
    config = skopeo_inspect(image.reference, config=True)
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"][:3] == ["python3", "-s", "/opt/mlops/boot.py"]
    assert config["config"]["Entrypoint"][3:] == ["--bundle", "/opt/mlops/bundle", "--name", "doubler",
                                                  "--model-version", "1", "--host", "0.0.0.0"]
    assert config["config"]["Cmd"] == ["--port", "8080"]
    # skopeo's OCI config type has no Healthcheck field: read the raw config blob the registry serves.
    from mlops_oci.registry import RegistryClient

    raw_manifest = skopeo_inspect(image.reference, raw=True)
    raw_config = json.loads(RegistryClient(registry.host).get_blob("models/doubler", raw_manifest["config"]["digest"]))
    assert raw_config["config"]["Healthcheck"]["Test"] == ["CMD", "python3", "-s", "/opt/mlops/boot.py",
                                                           "--healthcheck"]
    assert "PYTHON_VERSION=3.11.9" in config["config"]["Env"]  # the base's env is kept
    assert config["architecture"] == "amd64"  # the amd64 entry of the base's index
    assert len(config["rootfs"]["diff_ids"]) == 4  # base + deps + runtime + bundle
    manifest = skopeo_inspect(image.reference, raw=True)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


def test_umoci_unpacks_the_image_with_the_expected_files(built: dict[str, Any], registry: Any, tmp_path: Path) -> None:
    umoci = need("umoci", "umoci")
    skopeo = need("skopeo", "skopeo")
    image = built["image"]
    layout = tmp_path / "pulled"
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{image.reference}", f"oci:{layout}:img"],
                   check=True, capture_output=True)
    for source, tag in ((layout, "img"), (Path(image.layout), "v1")):  # pulled from the registry, and our own layout
        bundle = tmp_path / f"unpacked-{tag}"
        subprocess.run([umoci, "unpack", "--image", f"{source}:{tag}", str(bundle)], check=True, capture_output=True)
        rootfs = bundle / "rootfs"
        assert (rootfs / "etc/os-release").read_text().endswith("ARCH=amd64\n")  # base layer
        assert (rootfs / "opt/mlops/boot.py").is_file()
        assert (rootfs / "opt/mlops/runtime/mlops_core/__init__.py").is_file()
        assert list((rootfs / "opt/mlops/runtime").glob("mlops_core-*.dist-info/entry_points.txt"))
        assert (rootfs / "opt/mlops/site-packages/attr/__init__.py").is_file()  # a dependency, unpacked
        assert (rootfs / "opt/mlops/site-packages/pluggy").is_dir()
        bundle_manifest = json.loads((rootfs / "opt/mlops/bundle/manifest.json").read_text())
        for entry in bundle_manifest["files"]:
            assert (rootfs / "opt/mlops/bundle" / entry["path"]).stat().st_size == entry["size"]
        for path in (rootfs / "opt/mlops").rglob("*"):
            st = path.lstat()
            assert st.st_uid == 0 and st.st_gid == 0
            if not path.is_symlink():
                assert st.st_mode & stat.S_IROTH, path  # readable by the non-root user
        runtime_config = json.loads((bundle / "config.json").read_text())
        assert runtime_config["process"]["user"]["uid"] == 65532
        assert runtime_config["process"]["args"][:3] == ["python3", "-s", "/opt/mlops/boot.py"]


def test_same_inputs_give_identical_digests(built: dict[str, Any], registry: Any, tiny_base: str, tmp_path: Path) -> None:
    """A second stack with its own empty cache, registering the same bundle, builds the same image."""
    other = _stack(tmp_path / "other-home", registry, tiny_base, labels='{"team": "ml"}')
    bundle = built["stack"].home / "cache" / "bundles" / built["version"].artifact.digest.replace(":", "-")
    version = api.register("doubler", bundle, stack=other)
    image = api.build(version.uri, stack=other)
    assert image.digest == built["image"].digest
    assert other.builder.last_report.layers == [{**layer, "cached": False} for layer in built["report"].layers]
    # And a warm rebuild takes every layer from the cache.
    again = api.build(version.uri, stack=other)
    assert again.digest == image.digest
    assert all(layer["cached"] for layer in other.builder.last_report.layers)
    assert not other.builder.last_report.pip_ran


def test_model_only_change_reuses_and_does_not_reupload_deps_and_runtime(built: dict[str, Any], registry: Any) -> None:
    stack = built["stack"]
    first = {layer["name"]: layer for layer in built["report"].layers}
    uploads_before = registry.completed_uploads("models/doubler")
    v2 = api.register("doubler", Tripler(), example=EXAMPLE, stack=stack)
    image = api.build(v2.uri, push=True, stack=stack)
    report = stack.builder.last_report
    second = {layer["name"]: layer for layer in report.layers}
    assert second["deps"]["digest"] == first["deps"]["digest"] and second["deps"]["cached"]
    assert second["runtime"]["digest"] == first["runtime"]["digest"] and second["runtime"]["cached"]
    assert second["bundle"]["digest"] != first["bundle"]["digest"] and not second["bundle"]["cached"]
    new_uploads = registry.completed_uploads("models/doubler")[len(uploads_before):]
    # Counted by the registry itself: only the new bundle layer and the new config were uploaded...
    assert first["deps"]["digest"] not in new_uploads and first["runtime"]["digest"] not in new_uploads
    # ... and the new image's SBOM (a referrer of the image; its empty config blob was there already).
    import hashlib

    sbom_blob = "sha256:" + hashlib.sha256(Path(image.layout, "sbom.cdx.json").read_bytes()).hexdigest()
    blobs = Path(image.layout, "blobs", "sha256")
    manifest = json.loads((blobs / image.digest.split(":")[1]).read_bytes())
    assert sorted(new_uploads) == sorted([second["bundle"]["digest"], manifest["config"]["digest"], sbom_blob])
    assert report.push.uploaded == new_uploads
    assert first["deps"]["digest"] in report.push.existing
    assert skopeo_inspect(image.reference)["Labels"]["io.mlops.model.version"] == "2"


def test_base_from_a_local_oci_layout_and_builds_without_push(tmp_path: Path, registry: Any) -> None:
    from oci_testkit import write_multiarch_layout

    layout = tmp_path / "base-layout"
    write_multiarch_layout(layout, "tiny")
    stack = make_stack(tmp_path / "home", base=f"oci:{layout}:tiny", runtime_distributions=["mlops-core"],
                       platform="linux/arm64")
    version = api.register("armmodel", Doubler(), example=EXAMPLE, stack=stack)
    image = api.build(version.uri, stack=stack)
    assert image.reference == "armmodel:v1" and Path(image.layout, "index.json").is_file()
    from mlops_oci.cli import inspect_image

    info = inspect_image(f"{image.layout}:v1")
    assert info["platform"] == "linux/arm64" and info["digest"] == image.digest
    with pytest.raises(ConfigError, match="no repository"):
        api.build(version.uri, push=True, stack=stack)


def test_python_mismatch_between_base_and_bundle_is_refused() -> None:
    from mlops_oci.builder import target_python
    from mlops_oci.config import OciBuilderConfig

    with pytest.raises(InvalidInputError, match="Python 3.12 but the bundle was saved with Python 3.11"):
        target_python(OciBuilderConfig(), {"PYTHON_VERSION": "3.12.1"}, {"python": {"version": "3.11.7"}})
    # An explicit python_version overrides the check; without any hint the bundle's version is used.
    assert target_python(OciBuilderConfig(python_version="3.12"), {}, {"python": {"version": "3.11.7"}}) == "3.12"
    assert target_python(OciBuilderConfig(), {}, {"python": {"version": "3.11.7"}}) == "3.11"


def test_image_cli_inspect_and_push(built: dict[str, Any], registry: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from mlops_oci.cli import inspect_command, push_command

    layout = built["image"].layout
    target = f"{registry.host}/copies/doubler:v1"
    assert push_command(argparse.Namespace(layout=f"{layout}:v1", reference=target, json=True)) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["digest"] == built["image"].digest and pushed["uploaded"]
    assert inspect_command(argparse.Namespace(image=target, platform="linux/amd64", json=True)) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["digest"] == built["image"].digest and info["user"] == "65532:65532"
    assert inspect_command(argparse.Namespace(image=f"{layout}:v1", platform="linux/amd64", json=False)) == 0
    assert "io.mlops.model.name=doubler" in capsys.readouterr().out


def test_plugin_registers_its_backends() -> None:
    from mlops_core.plugins import PluginManager

    pm = PluginManager()
    assert not [f for f in pm.all_failures() if f.name == "oci"]
    specs = {(s.component, s.name): s for s in pm.catalog.specs() if s.plugin == "oci"}
    assert set(specs) == {("builder", "oci"), ("builder", "dockerfile"), ("deployer", "container")}
    assert specs[("builder", "oci")].distribution == "mlops-oci"


def test_progress_is_drawn_only_on_a_terminal() -> None:
    import io

    from mlops_oci.progress import Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    quiet, tty = io.StringIO(), Tty()
    for stream in (quiet, tty):
        p = Progress(stream=stream)
        p.start("layer deps", 2048)
        p.advance(2048)
        p.done("ok")
    assert quiet.getvalue() == ""
    assert "layer deps: ok" in tty.getvalue() and "\r" in tty.getvalue()


def test_sbom_lists_the_installed_wheels_and_is_a_listed_referrer(built: dict[str, Any], registry: Any) -> None:
    import gzip
    import io
    import tarfile

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from mlops_oci.registry import RegistryClient
    from mlops_oci.sbom import referrers_tag

    image, report = built["image"], built["report"]
    sbom_bytes = Path(image.layout, "sbom.cdx.json").read_bytes()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(sbom_bytes.decode()) is None  # the official schema
    sbom = json.loads(sbom_bytes)
    listed = {(c["name"], c["version"]) for c in sbom["components"]}
    # What is really installed: every dist-info in the deps layer, read from the layer blob itself.
    deps = next(l for l in report.layers if l["name"] == "deps")
    blob = Path(image.layout, "blobs", "sha256", deps["digest"].split(":")[1]).read_bytes()
    installed = set()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".dist-info/METADATA"):
                meta = tar.extractfile(member).read().decode()
                fields = dict(line.split(": ", 1) for line in meta.splitlines()[:5] if ": " in line)
                from packaging.utils import canonicalize_name

                installed.add((str(canonicalize_name(fields["Name"])), fields["Version"]))
    assert installed and installed <= listed
    assert "mlops-core" in {name for name, _ in listed}  # the runtime layer's distributions too
    assert sbom["metadata"]["component"]["hashes"][0]["content"] == image.digest.split(":")[1]
    # Pushed as a referrer of the image: the referrers tag's index lists it, and it holds the same SBOM.
    index = skopeo_inspect(f"{registry.host}/models/doubler:{referrers_tag(image.digest)}", raw=True)
    sboms = [m for m in index["manifests"] if m.get("artifactType") == "application/vnd.cyclonedx+json"]
    assert [m["digest"] for m in sboms] == [report.sbom["digest"]]
    artifact = skopeo_inspect(f"{registry.host}/models/doubler@{report.sbom['digest']}", raw=True)
    assert artifact["subject"]["digest"] == image.digest
    assert RegistryClient(registry.host).get_blob("models/doubler", artifact["layers"][0]["digest"]) == sbom_bytes


def test_several_platforms_make_an_image_index(tmp_path: Path, registry: Any, tiny_base: str) -> None:
    """The base offers amd64 and arm64: one build makes both images and an index (only amd64 can run here)."""
    stack = _stack(tmp_path / "home", registry, tiny_base, platform="linux/amd64,linux/arm64")
    version = api.register("multi", Doubler(), example=EXAMPLE, stack=stack)
    image = api.build(version.uri, push=True, stack=stack)
    index = skopeo_inspect(image.reference, raw=True)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    from mlops_oci.registry import RegistryClient

    assert RegistryClient(registry.host).get_manifest("models/multi", "v1")[2] == image.digest
    arm = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--override-arch", "arm64",
                          f"docker://{image.reference}"], check=True, capture_output=True, text=True)
    assert json.loads(arm.stdout)["Architecture"] == "arm64"
    arm_config = skopeo_inspect(f"{registry.host}/models/multi@{index['manifests'][1]['digest']}", config=True)
    assert arm_config["architecture"] == "arm64"
    # The layout on disk holds the index too, and every platform has its SBOM referrer.
    layout_index = json.loads(Path(image.layout, "index.json").read_text())
    assert layout_index["manifests"][0]["digest"] == image.digest
    from mlops_oci.sbom import referrers_tag

    for m in index["manifests"]:
        refs = skopeo_inspect(f"{registry.host}/models/multi:{referrers_tag(m['digest'])}", raw=True)
        assert [r["artifactType"] for r in refs["manifests"]] == ["application/vnd.cyclonedx+json"]
    # Each platform's image is exactly what a single-platform build of that platform makes.
    single = _stack(tmp_path / "home", registry, tiny_base, platform="linux/arm64")
    assert api.build(version.uri, stack=single).digest == index["manifests"][1]["digest"]
