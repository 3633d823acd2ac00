"""FsspecArtifactStore on a local folder, memory:// and a real S3 API (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import random
import string
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_core.errors import ConfigError, InvalidInputError, NotFoundError
from mlops_core.interfaces import ArtifactStore, BackendContext, validate_key
from mlops_fsspec_storage.config import FsspecStorageConfig
from mlops_fsspec_storage.store import CHUNK_SIZE, FsspecArtifactStore, create_store

BUCKET = "mlops-fsspec-test"


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """A moto S3 server on a free loopback port, with one bucket; stopped at the end of the module."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (see requirements-test.txt)")
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'mlops-fsspec-storage[s3]')")
    pytest.importorskip("boto3")
    from mlops_core.testing.s3 import moto_s3

    with moto_s3(tmp_path_factory.mktemp("moto"), BUCKET) as s3:
        yield s3.endpoint, s3.client


def s3_options(endpoint: str) -> dict:
    # 5 MiB parts (S3's minimum) so that tests reach multipart uploads with modest sizes.
    return {"key": "testing", "secret": "testing", "endpoint_url": endpoint,
            "client_kwargs": {"region_name": "us-east-1"}, "default_block_size": 5 * 2**20}


S3 = pytest.param("s3", marks=[pytest.mark.slow, pytest.mark.xdist_group("moto-s3")])


@pytest.fixture(params=["local", "memory", S3])
def store(request, tmp_path) -> FsspecArtifactStore:
    if request.param == "local":
        return FsspecArtifactStore(str(tmp_path / "root"))
    if request.param == "memory":
        return FsspecArtifactStore(f"memory://mlops-test-{uuid.uuid4().hex}")
    endpoint, _client = request.getfixturevalue("s3_endpoint")
    return FsspecArtifactStore(f"s3://{BUCKET}/{uuid.uuid4().hex}", s3_options(endpoint))


class FailingStream(io.RawIOBase):
    """Yields ``fail_after`` bytes, then raises: a network or disk failure in mid-stream."""

    def __init__(self, fail_after: int) -> None:
        self.left = fail_after

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            raise RuntimeError("source broke mid-stream")
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return b"x" * n


class GeneratedStream(io.RawIOBase):
    """``size`` pseudo-random bytes produced on demand; records the largest read asked for."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.left = size
        self.rng = random.Random(seed)
        self.largest_read = 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.largest_read = max(self.largest_read, n)
        data = self.rng.randbytes(n)
        self.left -= n
        self.hash.update(data)
        return data


# ----------------------------------------------------------------- basics
def test_round_trip_and_overwrite(store):
    store.write_bytes("models/a/model.pkl", b"v1")
    assert store.read_bytes("models/a/model.pkl") == b"v1"
    assert store.exists("models/a/model.pkl")
    store.write_bytes("models/a/model.pkl", b"v2 longer")
    assert store.read_bytes("models/a/model.pkl") == b"v2 longer"
    store.write_bytes("empty", b"")
    assert store.read_bytes("empty") == b""


def test_missing_keys(store):
    with pytest.raises(NotFoundError, match="nope"):
        store.open("nope/x")
    with pytest.raises(NotFoundError):
        store.read_bytes("nope")
    assert not store.exists("nope")
    store.delete("nope")  # absent keys are not an error


def test_a_folder_is_not_a_key(store):
    store.write_bytes("dir/file", b"x")
    assert not store.exists("dir")
    with pytest.raises(NotFoundError):
        store.read_bytes("dir")


def test_listing_is_relative_to_the_root(store):
    for key in ["a/1", "a/2", "a/sub/3", "b/1", "top", "ab"]:
        store.write_bytes(key, key.encode())
    assert store.list() == ["a/1", "a/2", "a/sub/3", "ab", "b/1", "top"]
    assert store.list("a/") == ["a/1", "a/2", "a/sub/3"]
    assert store.list("a/sub/") == ["a/sub/3"]
    assert store.list("a") == ["a/1", "a/2", "a/sub/3", "ab"]
    assert store.list("missing/") == []


def test_listing_of_an_empty_store(store):
    assert store.list() == []
    assert store.list("blobs/") == []


def test_other_roots_are_not_listed(tmp_path):
    outer = FsspecArtifactStore(str(tmp_path))
    inner = FsspecArtifactStore(str(tmp_path / "inner"))
    outer.write_bytes("outside", b"o")
    inner.write_bytes("inside", b"i")
    assert inner.list() == ["inside"]
    assert outer.list() == ["inner/inside", "outside"]


def test_delete(store):
    store.write_bytes("x/y", b"1")
    store.write_bytes("x/z", b"2")
    store.delete("x/y")
    assert not store.exists("x/y")
    assert store.list() == ["x/z"]
    with pytest.raises(NotFoundError):
        store.read_bytes("x/y")


BAD_KEYS = ["../x", "/etc/passwd", "a/../../x", "a/../b", "./a", "a/.", "a//b", "a\\b", "", "a/", "a\x00b", ".."]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_traversal_is_rejected(store, key, tmp_path):
    with pytest.raises(InvalidInputError):
        store.write_bytes(key, b"evil")
    with pytest.raises(InvalidInputError):
        store.open(key)
    with pytest.raises(InvalidInputError):
        store.exists(key)
    with pytest.raises(InvalidInputError):
        store.delete(key)
    assert store.list() == []
    assert not any(p.name in {"x", "passwd", "b", "evil"} for p in tmp_path.rglob("*") if p.is_file())


@pytest.mark.parametrize("prefix", ["../", "/abs/", "a/../"])
def test_list_rejects_unsafe_prefixes(store, prefix):
    with pytest.raises(InvalidInputError):
        store.list(prefix)


# ----------------------------------------------------------------- atomicity
@pytest.mark.parametrize("fail_after", [0, 100, 12 * 2**20], ids=["at-once", "small", "multipart"])
def test_failure_mid_stream_publishes_nothing(store, fail_after, request):
    with pytest.raises(RuntimeError, match="mid-stream"):
        store.write("blobs/new", FailingStream(fail_after))
    assert not store.exists("blobs/new")
    assert store.list() == []  # no temporary leftovers either
    if "s3" in request.node.callspec.id:
        _endpoint, client = request.getfixturevalue("s3_endpoint")
        assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted


def test_failed_overwrite_keeps_the_old_object(store):
    store.write_bytes("k", b"old")
    with pytest.raises(RuntimeError):
        store.write("k", FailingStream(10))
    assert store.read_bytes("k") == b"old"
    assert store.list() == ["k"]


def test_readers_see_old_or_new_never_partial(tmp_path):
    store = FsspecArtifactStore(str(tmp_path / "root"))
    size = 3 * CHUNK_SIZE + 17
    store.write_bytes("k", b"a" * size)
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        for i in range(20):
            store.write_bytes("k", (b"b" if i % 2 else b"a") * size)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not stop.is_set() or reads == 0:
        data = store.read_bytes("k")
        reads += 1
        if len(data) != size or len(set(data)) != 1:
            errors.append(f"read {len(data)} bytes of {sorted(set(data))}")
    thread.join()
    assert errors == []


def test_direct_put_only_on_object_stores(store, request):
    kind = request.node.callspec.id
    assert store._direct_put == kind.startswith("s3")


# ----------------------------------------------------------------- streaming
def test_large_file_is_streamed(store):
    size = 64 * 2**20 + 5
    source = GeneratedStream(size, seed=7)
    store.write("big/blob", source)
    assert source.left == 0
    assert source.largest_read <= CHUNK_SIZE  # read in chunks, never as a whole

    h, total = hashlib.sha256(), 0
    with store.open("big/blob") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            assert len(chunk) <= CHUNK_SIZE
            total += len(chunk)
            h.update(chunk)
    assert total == size
    assert h.hexdigest() == source.hash.hexdigest()
    store.delete("big/blob")


# ----------------------------------------------------------------- config, plugin, errors
def test_default_url_is_the_stack_home(tmp_path):
    context = BackendContext(home=tmp_path / ".mlops", hooks=None, name="default")
    store = create_store(FsspecStorageConfig(), context)
    assert store.uri == (tmp_path / ".mlops" / "artifacts").as_uri()
    assert not (tmp_path / ".mlops").exists()  # created on first use, not before
    store.write_bytes("a/b", b"x")
    assert (tmp_path / ".mlops" / "artifacts" / "a" / "b").read_bytes() == b"x"


def test_check_reports_the_url_and_leaves_nothing(store):
    message = store.check()
    assert store.uri in message
    assert store.list() == []


def test_uri_is_canonical(tmp_path):
    assert FsspecArtifactStore(str(tmp_path / "r") + "/").uri == (tmp_path / "r").as_uri()
    assert FsspecArtifactStore("memory://abc/").uri == "memory:///abc"


def test_unknown_scheme_names_the_problem():
    with pytest.raises(ConfigError, match="unknown URL scheme 'nosuchscheme'"):
        FsspecArtifactStore("nosuchscheme://bucket/x")


def test_missing_implementation_names_the_package(monkeypatch):
    from fsspec.registry import known_implementations

    monkeypatch.setitem(known_implementations, "mlopsfake", {
        "class": "mlops_no_such_module.FakeFileSystem", "err": "Install mlops-fake-fs to access fake storage"})
    with pytest.raises(ConfigError) as info:
        FsspecArtifactStore("mlopsfake://bucket/x")
    assert "mlops-fake-fs" in str(info.value)
    assert info.value.hint.startswith("pip install mlops-fake-fs")


def test_missing_gcsfs_names_gcsfs():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover
        pytest.skip("gcsfs is installed")
    with pytest.raises(ConfigError) as info:
        FsspecArtifactStore("gs://bucket/x")
    assert "pip install gcsfs" in info.value.hint
    assert "mlops-fsspec-storage[gcs]" in info.value.hint


def test_plugin_is_discovered_and_builds_the_store(tmp_path):
    from mlops_core.plugins import PluginManager

    pm = PluginManager()
    assert not [f for f in pm.all_failures() if f.name == "fsspec"]
    spec = pm.catalog.get("storage", "fsspec")
    assert spec.distribution == "mlops-fsspec-storage"
    assert {"file", "memory", "s3"} <= set(spec.schemes)
    context = BackendContext(home=tmp_path, hooks=pm.hooks, name="fsspec")
    store = pm.build("storage", "fsspec", {"url": f"memory://plugin-{uuid.uuid4().hex}"}, context)
    assert isinstance(store, ArtifactStore)
    store.write_bytes("k", b"v")
    assert store.read_bytes("k") == b"v"
    with pytest.raises(ConfigError, match="urll"):
        pm.build("storage", "fsspec", {"urll": "x"}, context)


def test_plugin_module_is_import_cheap():
    code = ("import sys, mlops_fsspec_storage, mlops_fsspec_storage.plugin, mlops_fsspec_storage.config; "
            "heavy = [m for m in ('fsspec', 's3fs', 'botocore') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------- properties
def key_oracle(key: str) -> bool:
    """A key is safe iff it is a canonical relative POSIX path that resolves strictly inside a root."""
    if not key or "\\" in key or any(ord(c) < 0x20 for c in key):
        return False
    if posixpath.isabs(key) or posixpath.normpath(key) != key:
        return False
    return posixpath.normpath(posixpath.join("/root", key)).startswith("/root/")


PATHY = st.sampled_from(["a", "b", "Z", "0", "é", " ", "-", "_", ".", "..", "/", "//", "\\", "\x00", "\n", "\x1f",
                         "\x7f", "~", ".a", "a."])
ANY_KEY = st.one_of(st.lists(PATHY, max_size=12).map("".join), st.text(max_size=24))


@settings(max_examples=800, deadline=None)
@given(ANY_KEY)
def test_validate_key_accepts_exactly_the_keys_inside_the_root(key):
    try:
        validate_key(key)
        accepted = True
    except InvalidInputError:
        accepted = False
    assert accepted == key_oracle(key), key


SEGMENT = st.text(alphabet=string.ascii_letters + string.digits + "._-~ ", min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))
VALID_KEY = st.lists(SEGMENT, min_size=1, max_size=4).map("/".join)


def _no_file_folder_clash(keys) -> bool:
    keys = set(keys)
    return not any(k.startswith(other + "/") for k in keys for other in keys)


@pytest.mark.parametrize("kind", ["local", "memory"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.dictionaries(VALID_KEY, st.binary(max_size=4096), min_size=1, max_size=5).filter(
    lambda d: _no_file_folder_clash(d)))
def test_random_bytes_round_trip_under_random_valid_keys(kind, data):
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "root") if kind == "local" else f"memory://prop-{uuid.uuid4().hex}"
        store = FsspecArtifactStore(url)
        for key, value in data.items():
            assert key_oracle(key)
            store.write(key, io.BytesIO(value))
        for key, value in data.items():
            assert store.read_bytes(key) == value
        assert store.list() == sorted(data)
        for key in data:
            store.delete(key)
        assert store.list() == []


# ----------------------------------------------------------------- with mlops_core.artifacts
def test_bundles_round_trip_through_the_store(store, tmp_path):
    import json

    from mlops_core.artifacts import blob_key, pull_bundle, push_bundle
    from mlops_core.errors import IntegrityError

    files = {"model.pkl": os.urandom(2 * CHUNK_SIZE + 1), "conf/params.json": b"{}", "copy.pkl": b""}
    bundle = tmp_path / "bundle"
    entries = []
    for rel, data in files.items():
        (bundle / rel).parent.mkdir(parents=True, exist_ok=True)
        (bundle / rel).write_bytes(data)
        entries.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    # One validator checks loads, pushes and pulls: the manifest is a complete one.
    (bundle / "manifest.json").write_text(json.dumps({"schema": "mlops-bundle/1", "format": "test", "files": entries}))

    ref = push_bundle(store, bundle)
    assert ref.uri == store.uri
    assert push_bundle(store, bundle) == ref
    assert len(store.list("blobs/")) == len(files) + 1

    dest = pull_bundle(store, ref, tmp_path / "pulled")
    assert all((dest / rel).read_bytes() == data for rel, data in files.items())

    key = blob_key(hashlib.sha256(files["model.pkl"]).hexdigest())
    stored = store.read_bytes(key)
    store.write_bytes(key, bytes([stored[0] ^ 0xFF]) + stored[1:])
    with pytest.raises(IntegrityError):
        pull_bundle(store, ref, tmp_path / "pulled-again")
    assert not (tmp_path / "pulled-again").exists()


def test_storage_options_from_the_environment_are_json():
    assert FsspecStorageConfig(storage_options='{"anon": true}').storage_options == {"anon": True}
    assert FsspecStorageConfig(storage_options="").storage_options == {}
    with pytest.raises(ValueError, match="JSON"):
        FsspecStorageConfig(storage_options="anon=true")
    with pytest.raises(ValueError, match="url"):
        FsspecStorageConfig(url="")
