"""The shared base cache under concurrency (issues 13.6 / 15.1), for real.

Two processes make the same debootstrap base into one empty cache at the same
time: both must return the same complete layout, and no work folder may stay.
The adoption path of the final rename is exercised on its own too (what a loser
does when no lock protects it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_oci.layers import BlobStore, canonical_json
from mlops_oci.localbase import _publish, debootstrap_base_layout, default_cache, verify_layout

_SCRIPT = """
import json, sys
from pathlib import Path
from mlops_oci.localbase import debootstrap_base_layout
print(json.dumps(str(debootstrap_base_layout(Path(sys.argv[1])))))
"""


def _small_layout(dest: Path, content: bytes) -> None:
    store = BlobStore(dest / "blobs")
    digest = store.put_bytes(content)
    manifest = canonical_json({"schemaVersion": 2, "config": {"digest": digest, "size": len(content)}, "layers": []})
    (dest / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [
        {"digest": store.put_bytes(manifest), "size": len(manifest)}]}))


def test_the_loser_of_the_final_rename_adopts_a_complete_result(tmp_path: Path) -> None:
    winner, loser, dest = tmp_path / "winner", tmp_path / "loser", tmp_path / "dest"
    _small_layout(winner, b"{}")
    _small_layout(loser, b"{}")
    _publish(winner, dest)
    assert verify_layout(dest, deep=True)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    _publish(loser, dest)  # os.rename meets a non-empty folder: ENOTEMPTY, the old failure
    assert verify_layout(dest, deep=True)
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before


def test_an_incomplete_leftover_is_replaced_not_adopted(tmp_path: Path) -> None:
    broken, fresh, dest = tmp_path / "broken", tmp_path / "fresh", tmp_path / "dest"
    _small_layout(broken, b"{}")
    next((broken / "blobs" / "sha256").iterdir()).write_bytes(b"truncated")
    os.rename(broken, dest)
    assert not verify_layout(dest)
    _small_layout(fresh, b'{"a":1}')
    _publish(fresh, dest)
    assert verify_layout(dest, deep=True)
    assert not list(tmp_path.glob(".trash-*"))


def test_quickstart_and_tests_share_one_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from oci_testkit import debootstrap_base_layout as tests_base  # noqa: F401  (imports the tests' entry)
    import inspect

    import oci_testkit

    assert "make()" in inspect.getsource(oci_testkit.debootstrap_base_layout)  # no cache folder of its own
    monkeypatch.setenv("MLOPS_BASE_CACHE", str(tmp_path))
    assert default_cache() == tmp_path


@pytest.mark.slow
def test_two_concurrent_builders_of_one_base_share_the_result(tmp_path: Path) -> None:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("debootstrap and root are needed (apt-get install debootstrap)")
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _SCRIPT, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    paths = {json.loads(out.strip().splitlines()[-1]) for out, _ in outs}
    assert len(paths) == 1
    layout = Path(paths.pop())
    assert verify_layout(layout, deep=True)
    leftovers = [p.name for p in cache.iterdir() if p.name.startswith((".work-", ".trash-"))]
    assert leftovers == []
    # A third call is served from the cache without building (same folder, nothing new written).
    assert debootstrap_base_layout(cache) == layout
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["platform"]["os"] == "linux"


@pytest.mark.slow
def test_the_debootstrap_base_is_single_platform_and_its_dpkg_status_feeds_the_sbom() -> None:
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.skip("debootstrap and root are needed (apt-get install debootstrap)")
    import platform as host_platform

    from mlops_oci.sbom import dpkg_packages

    layout = debootstrap_base_layout()
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_text())
    expected = {"x86_64": "amd64", "aarch64": "arm64"}.get(host_platform.machine())
    assert config["architecture"] == index["manifests"][0]["platform"]["architecture"] == expected
    layers = [layout / "blobs" / "sha256" / d["digest"].split(":")[1] for d in manifest["layers"]]
    names = {p["name"] for p in dpkg_packages(layers)}
    assert {"python3", "libgomp1", "libc6", "dpkg"} <= names  # libgomp1: LightGBM loads it from the system
    # The volatile files that made two runs differ are gone.
    import gzip
    import tarfile

    with gzip.open(layers[0]) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        members = {m.name.lstrip("./") for m in tar}
    assert "var/cache/ldconfig/aux-cache" not in members and "etc/machine-id" not in members
