"""Content-addressed bundle storage (mlops_core.artifacts) on a plain local store.

Bundles are built by hand here (files + manifest.json) so these tests depend on
nothing but the storage contract. The same tests run on the fsspec store when
the mlops-fsspec-storage plugin is installed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import IO, Iterator

import pytest

from mlops_core.artifacts import (
    BLOB_PREFIX,
    blob_key,
    delete_unreferenced_blobs,
    parse_digest,
    pull_bundle,
    push_bundle,
)
from mlops_core.entities import ArtifactRef
from mlops_core.errors import AlreadyExistsError, IntegrityError, InvalidInputError, NotFoundError
from mlops_core.interfaces import ArtifactStore


class FolderStore(ArtifactStore):
    """The smallest correct store: a local folder, temp file + os.replace; counts writes and opens."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = root.as_uri()
        self.writes: list[str] = []
        self.opens: list[str] = []

    def _write(self, key: str, source: IO[bytes]) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                for chunk in iter(lambda: source.read(1 << 16), b""):
                    f.write(chunk)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.writes.append(key)

    def _open(self, key: str) -> IO[bytes]:
        self.opens.append(key)
        try:
            return open(self.root / key, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"no {key}") from None

    def _exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def _list(self, prefix: str) -> Iterator[str]:
        for p in self.root.rglob("*"):
            key = p.relative_to(self.root).as_posix()
            if p.is_file() and key.startswith(prefix) and ".tmp-" not in key:
                yield key

    def _delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


def _fsspec_store(url: str) -> ArtifactStore:
    store_mod = pytest.importorskip("mlops_fsspec_storage.store", reason="mlops-fsspec-storage is not installed")
    return store_mod.FsspecArtifactStore(url)


@pytest.fixture(params=["folder", "fsspec-file", "fsspec-memory"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "folder":
        return FolderStore(tmp_path / "store")
    if request.param == "fsspec-file":
        return _fsspec_store(str(tmp_path / "fsspec-store"))
    return _fsspec_store(f"memory://test-artifacts-{uuid.uuid4().hex}")


def make_bundle(folder: Path, files: dict[str, bytes], **extra) -> Path:
    """Write ``files`` and a manifest.json listing them, like mlops_core.bundle does."""
    folder.mkdir(parents=True)
    entries = []
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        entries.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    manifest = {"schema": "mlops-bundle/1", "format": "test", "files": entries, **extra}
    (folder / "manifest.json").write_bytes(json.dumps(manifest, sort_keys=True).encode())
    return folder


def write_manifest(folder: Path, entries: list[dict]) -> None:
    """A manifest valid in every field but ``files`` (one validator checks pushes, pulls and loads)."""
    manifest = {"schema": "mlops-bundle/1", "format": "test", "files": entries}
    (folder / "manifest.json").write_bytes(json.dumps(manifest).encode())


def blobs(store: ArtifactStore) -> list[str]:
    return store.list(BLOB_PREFIX)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


FILES = {
    "model.pkl": os.urandom(3 * (1 << 20) + 123),  # several 1 MiB chunks and a partial one
    "sub/dir/weights.bin": b"w" * 1000,
    "empty.txt": b"",
    "copy-a.txt": b"same bytes",
    "copy-b.txt": b"same bytes",
}


# ----------------------------------------------------------------- round trip
def test_push_pull_round_trip(store, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", FILES)
    ref = push_bundle(store, bundle)

    manifest_bytes = (bundle / "manifest.json").read_bytes()
    assert ref == ArtifactRef(uri=store.uri, digest="sha256:" + hashlib.sha256(manifest_bytes).hexdigest())
    assert store.read_bytes(blob_key(parse_digest(ref.digest))) == manifest_bytes

    dest = pull_bundle(store, ref, tmp_path / "cache" / "b1")
    assert dest == tmp_path / "cache" / "b1"
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    assert (dest / "manifest.json").read_bytes() == manifest_bytes
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(
        [*FILES, "manifest.json"])
    assert leftovers(dest.parent) == []


def test_pull_cache_hit_reads_nothing(tmp_path):
    store = FolderStore(tmp_path / "store")
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    dest = pull_bundle(store, ref, tmp_path / "dest")
    store.opens.clear()
    assert pull_bundle(store, ref, dest) == dest
    assert store.opens == []


def test_pull_refuses_a_foreign_existing_folder(store, tmp_path):
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    other = make_bundle(tmp_path / "other", {"x": b"x"})
    with pytest.raises(AlreadyExistsError):
        pull_bundle(store, ref, other)
    assert (other / "x").read_bytes() == b"x"


# ----------------------------------------------------------------- dedupe
def test_pushing_twice_writes_each_blob_once(tmp_path):
    store = FolderStore(tmp_path / "store")
    bundle = make_bundle(tmp_path / "bundle", FILES)
    unique = {hashlib.sha256(d).hexdigest() for d in FILES.values()}

    ref1 = push_bundle(store, bundle)
    assert len(blobs(store)) == len(unique) + 1  # + the manifest
    assert len(store.writes) == len(unique) + 1
    assert len(set(store.writes)) == len(store.writes)

    ref2 = push_bundle(store, bundle)
    assert ref2 == ref1
    assert len(store.writes) == len(unique) + 1  # nothing new
    assert len(blobs(store)) == len(unique) + 1


def test_bundles_share_equal_files(store, tmp_path):
    push_bundle(store, make_bundle(tmp_path / "a", {"model.pkl": b"shared", "a.txt": b"only a"}))
    before = set(blobs(store))
    push_bundle(store, make_bundle(tmp_path / "b", {"renamed.pkl": b"shared", "b.txt": b"only b"}))
    added = set(blobs(store)) - before
    assert added == {blob_key(hashlib.sha256(b"only b").hexdigest()),
                     blob_key(hashlib.sha256((tmp_path / "b" / "manifest.json").read_bytes()).hexdigest())}


# ----------------------------------------------------------------- tampering in the store
def _payload_key(data: bytes) -> str:
    return blob_key(hashlib.sha256(data).hexdigest())


def test_flipped_byte_in_a_blob_fails_the_pull(store, tmp_path):
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    key = _payload_key(FILES["model.pkl"])
    data = bytearray(store.read_bytes(key))
    data[len(data) // 2] ^= 0x01
    store.write_bytes(key, bytes(data))

    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="model.pkl.*sha256"):
        pull_bundle(store, ref, dest)
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_truncated_blob_fails_the_pull(store, tmp_path):
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    key = _payload_key(FILES["model.pkl"])
    store.write_bytes(key, FILES["model.pkl"][:-1])

    with pytest.raises(IntegrityError, match="bytes"):
        pull_bundle(store, ref, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert leftovers(tmp_path) == []


def test_overlong_blob_fails_the_pull(store, tmp_path):
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    key = _payload_key(FILES["sub/dir/weights.bin"])
    store.write_bytes(key, FILES["sub/dir/weights.bin"] + b"extra")
    with pytest.raises(IntegrityError, match="larger"):
        pull_bundle(store, ref, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_tampered_manifest_blob_fails_the_pull(store, tmp_path):
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    key = blob_key(parse_digest(ref.digest))
    store.write_bytes(key, store.read_bytes(key).replace(b'"test"', b'"tset"'))
    with pytest.raises(IntegrityError, match="manifest"):
        pull_bundle(store, ref, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_missing_blob_is_not_found(store, tmp_path):
    ref = push_bundle(store, make_bundle(tmp_path / "bundle", FILES))
    store.delete(_payload_key(FILES["sub/dir/weights.bin"]))
    with pytest.raises(NotFoundError, match="weights.bin"):
        pull_bundle(store, ref, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert leftovers(tmp_path) == []


def test_missing_manifest_is_not_found(store, tmp_path):
    ref = ArtifactRef(uri=store.uri, digest="sha256:" + "0" * 64)
    with pytest.raises(NotFoundError):
        pull_bundle(store, ref, tmp_path / "dest")


@pytest.mark.parametrize("digest", ["", "sha256:", "md5:" + "0" * 32, "sha256:" + "G" * 64, "sha256:" + "A" * 64])
def test_bad_digest_is_invalid_input(tmp_path, digest):
    with pytest.raises(InvalidInputError):
        pull_bundle(FolderStore(tmp_path / "s"), ArtifactRef(uri="x", digest=digest), tmp_path / "dest")


# ----------------------------------------------------------------- bad local bundles
def test_local_file_not_matching_its_hash_is_never_published(store, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", {"a.txt": b"good", "model.pkl": b"original"})
    (bundle / "model.pkl").write_bytes(b"modified")  # same size, other bytes
    with pytest.raises(IntegrityError, match="model.pkl.*sha256"):
        push_bundle(store, bundle)
    assert not store.exists(_payload_key(b"original"))
    assert not store.exists(_payload_key(b"modified"))
    manifest_hex = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert not store.exists(blob_key(manifest_hex))
    assert all(".tmp-" not in k for k in store.list())


def test_local_file_of_wrong_size_fails_before_any_write(store, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", {"a.txt": b"good", "model.pkl": b"original"})
    (bundle / "model.pkl").write_bytes(b"longer than before")
    with pytest.raises(IntegrityError, match="bytes"):
        push_bundle(store, bundle)
    assert store.list() == []


def test_missing_local_file_fails_before_any_write(store, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", {"a.txt": b"good", "model.pkl": b"original"})
    (bundle / "model.pkl").unlink()
    with pytest.raises(IntegrityError, match="model.pkl"):
        push_bundle(store, bundle)
    assert store.list() == []


def test_missing_manifest_in_bundle(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError):
        push_bundle(store, tmp_path / "empty")


@pytest.mark.parametrize("bad", ["../evil", "/etc/passwd", "a/../../b", "a/./b", "a//b", "a\\b", ".", "x/", "",
                                 "manifest.json", "a\nb"])
def test_unsafe_manifest_paths_are_refused_before_any_write(store, tmp_path, bad):
    bundle = make_bundle(tmp_path / "bundle", {"ok.txt": b"ok"})
    write_manifest(bundle, [
        {"path": "ok.txt", "sha256": hashlib.sha256(b"ok").hexdigest(), "size": 2},
        {"path": bad, "sha256": "0" * 64, "size": 0},
    ])
    with pytest.raises(IntegrityError):
        push_bundle(store, bundle)
    assert store.list() == []


@pytest.mark.parametrize("entries", [
    [{"path": "a", "sha256": "0" * 64, "size": 0}, {"path": "a", "sha256": "0" * 64, "size": 0}],
    [{"path": "a", "sha256": "0" * 64, "size": 0}, {"path": "a/b", "sha256": "0" * 64, "size": 0}],
    [{"path": "a", "sha256": "abc", "size": 0}],
    [{"path": "a", "sha256": "0" * 64, "size": -1}],
    [{"path": "a", "sha256": "0" * 64, "size": True}],
    [{"path": "a", "sha256": "0" * 64}],
    ["a"],
])
def test_malformed_manifest_entries_are_refused(store, tmp_path, entries):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "a").write_bytes(b"")
    write_manifest(bundle, entries)
    with pytest.raises(IntegrityError, match="manifest"):
        push_bundle(store, bundle)
    assert store.list() == []


def test_symlink_leaving_the_bundle_is_refused(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"secret")
    bundle = make_bundle(tmp_path / "bundle", {"ok.txt": b"ok"})
    (bundle / "leak.txt").symlink_to(secret)
    write_manifest(bundle, [{"path": "leak.txt", "sha256": hashlib.sha256(b"secret").hexdigest(), "size": 6}])
    with pytest.raises(IntegrityError, match="outside"):
        push_bundle(store, bundle)
    assert store.list() == []


def test_unsafe_path_in_a_stored_manifest_writes_nothing_outside(store, tmp_path):
    """A manifest blob whose hash is right but whose paths escape: refused before any file is written."""
    evil = json.dumps({"schema": "mlops-bundle/1", "format": "test", "files": [{"path": "../../escaped.txt", "sha256": hashlib.sha256(b"x").hexdigest(),
                                  "size": 1}]}).encode()
    store.write_bytes(_payload_key(evil), evil)
    store.write_bytes(_payload_key(b"x"), b"x")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(IntegrityError, match="unsafe"):
        pull_bundle(store, ArtifactRef(store.uri, "sha256:" + hashlib.sha256(evil).hexdigest()), work / "a" / "dest")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (work / "a" / "dest").exists()


class _ShortReadStore(FolderStore):
    """A broken store that stops reading its source after one chunk."""

    def _write(self, key: str, source: IO[bytes]) -> None:
        super()._write(key, io.BytesIO(source.read(4)))


def test_a_store_that_does_not_read_to_the_end_cannot_skip_verification(tmp_path):
    store = _ShortReadStore(tmp_path / "store")
    bundle = make_bundle(tmp_path / "bundle", {"model.pkl": b"0123456789"})
    with pytest.raises(IntegrityError, match="not fully read"):
        push_bundle(store, bundle)
    assert store.list() == []


# ----------------------------------------------------------------- garbage collection
def test_delete_unreferenced_blobs(store, tmp_path):
    ref_a = push_bundle(store, make_bundle(tmp_path / "a", {"shared": b"shared", "a": b"only a"}))
    ref_b = push_bundle(store, make_bundle(tmp_path / "b", {"shared": b"shared", "b": b"only b"}))
    b_manifest = blob_key(parse_digest(ref_b.digest))

    planned = delete_unreferenced_blobs(store, {ref_a.digest}, dry_run=True)
    assert sorted(planned) == sorted([_payload_key(b"only b"), b_manifest])
    assert store.exists(b_manifest)

    assert sorted(delete_unreferenced_blobs(store, {ref_a.digest})) == sorted(planned)
    assert not store.exists(b_manifest)
    dest = pull_bundle(store, ref_a, tmp_path / "dest")
    assert (dest / "shared").read_bytes() == b"shared"

    with pytest.raises(NotFoundError):
        delete_unreferenced_blobs(store, {ref_b.digest})
    assert len(blobs(store)) == 3  # nothing deleted when a kept bundle is missing
