"""mlops-redis-storage: discovered through its entry point, and conformant (the mlops-core kit)."""

from __future__ import annotations

import uuid

import pytest

from mlops_core.errors import BackendUnavailableError
from mlops_core.interfaces import BackendContext
from mlops_core.plugins import PluginManager
from mlops_core.testing.suites import StorageSuite

from mlops_redis_storage.store import RedisArtifactStore

pytestmark = pytest.mark.slow


def test_plugin_is_installed_and_discovered() -> None:
    pm = PluginManager()
    assert "redis" in [p.name for p in pm.plugins()], [f.describe() for f in pm.all_failures()]
    assert "redis" in pm.catalog.names("storage")


def test_built_through_the_plugin_manager(redis_url: str, tmp_path) -> None:
    import mlops_redis_storage.plugin as plugin

    pm = PluginManager(autoload=False)
    pm.register(plugin, name="redis")
    store = pm.build("storage", "redis", {"url": redis_url, "namespace": "built"},
                     BackendContext(tmp_path, pm.hooks, "redis"))
    try:
        assert store.check().startswith("Redis ")
        store.write_bytes("a/b", b"x")
        assert store.list("a/") == ["a/b"]
    finally:
        store.close()


def test_unreachable_server_is_a_clear_error() -> None:
    store = RedisArtifactStore("redis://127.0.0.1:1/0")
    with pytest.raises(BackendUnavailableError, match="cannot reach Redis"):
        store.exists("x")


def test_a_reader_keeps_the_version_it_opened(redis_url: str) -> None:
    store = RedisArtifactStore(redis_url, namespace=f"t{uuid.uuid4().hex[:8]}")
    store.write_bytes("m", b"A" * 3_000_000)
    with store.open("m") as f:
        head = f.read(10)
        store.write_bytes("m", b"B" * 10)  # replaced while being read
        rest = f.read()
    assert head + rest == b"A" * 3_000_000
    assert store.read_bytes("m") == b"B" * 10


def test_failed_write_leaves_no_blob(redis_url: str) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    store = RedisArtifactStore(redis_url, namespace=ns)

    class Broken:
        def read(self, n: int = -1) -> bytes:
            raise OSError("dropped")

    with pytest.raises(OSError):
        store.write("k", Broken())
    assert list(store._client.scan_iter(f"{ns}:*")) == []


class TestRedisStore(StorageSuite):
    """The whole kit on one shared server: a namespace per test, keys under a prefix per test."""

    @pytest.fixture
    def backend(self, redis_url: str):
        store = RedisArtifactStore(redis_url, namespace=f"kit{uuid.uuid4().hex[:8]}")
        yield store
        store.close()
