"""Layer tarballs are reproducible and safe; references parse; settings convert from strings."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from mlops_core.errors import InvalidInputError
from mlops_oci.config import OciBuilderConfig
from mlops_oci.layers import BlobStore, FileTree, canonical_json, materialize, write_layer
from mlops_oci.reference import DOCKER_HUB, ImageReference
from mlops_oci.wheels import TargetPlatform


def _tree(src: Path) -> FileTree:
    (src / "pkg").mkdir(parents=True, exist_ok=True)
    (src / "pkg" / "a.py").write_text("print('a')\n")
    (src / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (src / "pkg" / "run.sh").chmod(0o700)
    (src / "pkg" / "private.txt").write_text("x")
    (src / "pkg" / "private.txt").chmod(0o600)
    tree = FileTree()
    tree.add_tree("opt/app", src)
    tree.add_bytes("opt/app/z.txt", b"zzz")
    tree.add_symlink("opt/app/link", "z.txt")
    return tree


def test_same_inputs_give_the_same_blob_and_entries_are_normalised(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    a = write_layer(_tree(tmp_path / "src1"), store)
    b = write_layer(_tree(tmp_path / "src2"), store)
    assert a == b
    raw = store.path(a.digest).read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME field is 0
    assert not raw[3] & 0x08  # no FNAME flag: no file name recorded
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(raw))) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:3] == ["opt", "opt/app", "opt/app/link"]  # parents first, every parent present
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
        if m.isdir():
            assert m.mode == 0o755
    modes = {m.name: m.mode for m in members}
    assert modes["opt/app/pkg/run.sh"] == 0o755  # executable stays executable, for everyone
    assert modes["opt/app/pkg/private.txt"] == 0o644  # readable by the non-root runtime user
    assert next(m for m in members if m.name == "opt/app/link").linkname == "z.txt"


def test_diff_id_is_the_uncompressed_tar_digest(tmp_path: Path) -> None:
    import hashlib

    store = BlobStore(tmp_path / "blobs")
    layer = write_layer(_tree(tmp_path / "src"), store)
    tar_bytes = gzip.decompress(store.path(layer.digest).read_bytes())
    assert layer.diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    assert layer.size == store.path(layer.digest).stat().st_size


def test_source_date_epoch_sets_mtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    store = BlobStore(tmp_path / "blobs")
    layer = write_layer(_tree(tmp_path / "src"), store)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(store.path(layer.digest).read_bytes()))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InvalidInputError, match="SOURCE_DATE_EPOCH"):
        write_layer(_tree(tmp_path / "src"), store)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "/", "a\\b", "./a", ""])
def test_unsafe_paths_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="unsafe path"):
        FileTree().add_bytes(bad, b"x")


def test_changed_file_size_during_write_is_detected(tmp_path: Path) -> None:
    from mlops_core.errors import IntegrityError

    src = tmp_path / "f"
    src.write_text("short")
    tree = FileTree()
    tree.add_file("f", src)
    src.write_text("much longer now")
    with pytest.raises(IntegrityError, match="changed size|grew"):
        write_layer(tree, BlobStore(tmp_path / "blobs"))


def test_materialize_writes_the_same_tree(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "src")
    materialize(tree, tmp_path / "out")
    assert (tmp_path / "out/opt/app/z.txt").read_bytes() == b"zzz"
    assert (tmp_path / "out/opt/app/pkg/private.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out/opt/app/link").is_symlink()


def test_canonical_json_is_stable() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'.encode()


@pytest.mark.parametrize("text,expected", [
    ("python:3.11-slim", (DOCKER_HUB, "library/python", "3.11-slim", None)),
    ("docker.io/org/img", (DOCKER_HUB, "org/img", "latest", None)),
    ("127.0.0.1:5000/models/iris:v3", ("127.0.0.1:5000", "models/iris", "v3", None)),
    ("localhost/a/b@sha256:" + "a" * 64, ("localhost", "a/b", None, "sha256:" + "a" * 64)),
    ("ghcr.io/o/r:t@sha256:" + "b" * 64, ("ghcr.io", "o/r", "t", "sha256:" + "b" * 64)),
])
def test_references_parse(text: str, expected: tuple) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("bad", ["", "UPPER/case", "a:b:c", "x@sha256:123", "repo:bad tag"])
def test_bad_references_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        ImageReference.parse(bad)


def test_settings_from_environment_strings() -> None:
    cfg = OciBuilderConfig(port="9000", runtime_distributions="mlops-core, mlops-server", plain_http="true",
                           labels='{"team": "ml"}', repository="")
    assert cfg.port == 9000 and cfg.runtime_distributions == ("mlops-core", "mlops-server")
    assert cfg.plain_http is True and cfg.labels == {"team": "ml"} and cfg.repository is None


def test_target_platform_tags() -> None:
    t = TargetPlatform.parse("linux/arm64", "3.11", "2.28")
    assert t.pip_platforms[0] == "manylinux_2_28_aarch64" and "manylinux2014_aarch64" in t.pip_platforms
    with pytest.raises(InvalidInputError, match="unsupported target platform"):
        TargetPlatform.parse("windows/amd64", "3.11", "2.28")


def test_the_boot_script_compiles_and_its_healthcheck_reports_unhealthy_without_a_server(tmp_path: Path) -> None:
    import subprocess
    import sys

    from mlops_oci.wheels import BOOT_SCRIPT

    compile(BOOT_SCRIPT, "boot.py", "exec")
    (tmp_path / "boot.py").write_text(BOOT_SCRIPT)
    # Outside a container PID 1 is init (no --port, nothing on 8080 here is ours): the check must fail cleanly.
    done = subprocess.run([sys.executable, str(tmp_path / "boot.py"), "--healthcheck"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr
