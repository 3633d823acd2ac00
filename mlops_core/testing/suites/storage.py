"""``StorageSuite``: the conformance tests of an :class:`~mlops_core.interfaces.ArtifactStore`.

::

    import pytest
    from mlops_core.testing.suites import StorageSuite

    class TestMyStore(StorageSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            store = MyStore(tmp_path / "artifacts")
            yield store
            store.close()

Every test works below its own key prefix (the ``ns`` fixture), so the suite also
runs against a shared bucket or server without cleanup between tests.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
from typing import Any, ClassVar

import pytest

from ...errors import InvalidInputError, MlopsError, NotFoundError
from ...interfaces import ArtifactStore
from ._base import ConformanceSuite

__all__ = ["StorageSuite", "TrickleReader", "FailingReader"]

#: Bigger than any sensible single read: a store that reads once, or keeps one chunk, is caught.
LARGE_SIZE = 5 * (1 << 20) + 12_345


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class TrickleReader(io.RawIOBase):
    """A source that returns at most ``step`` bytes per read, as a network stream may."""

    def __init__(self, data: bytes, step: int = 65_536) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


class FailingReader(TrickleReader):
    """Gives ``fail_after`` bytes, then raises OSError: a dropped upload."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        super().__init__(data)
        self._fail_after = fail_after

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._fail_after:
            raise OSError("kit: the source failed half-way (simulated dropped connection)")
        return super().readinto(memoryview(buffer)[: self._fail_after - self._pos])


class StorageSuite(ConformanceSuite):
    """Conformance tests for an ArtifactStore; define the ``backend`` fixture."""

    CAPABILITIES: ClassVar[dict[str, str]] = {
        "atomic_writes": "never shows a partial object when a write fails half-way",
        "concurrent_writes": "accepts writes from several threads on one instance",
        "large_objects": "stores objects of several MiB",
        "state_machine": "can run the Hypothesis comparison with the in-memory reference (a few hundred operations)",
    }
    atomic_writes = True
    concurrent_writes = True
    large_objects = True
    state_machine = True
    #: Hypothesis settings for the state machine (merged over stateful.DEFAULT_SETTINGS).
    state_machine_settings: ClassVar[dict[str, Any]] = {}

    # basics -------------------------------------------------------------------
    def test_is_an_artifact_store(self, backend: Any) -> None:
        assert isinstance(backend, ArtifactStore)
        assert isinstance(backend.uri, str) and backend.uri, "set ArtifactStore.uri to the store's root URI"
        assert isinstance(backend.check(), str)

    def test_round_trip(self, backend: ArtifactStore, ns: str) -> None:
        backend.write_bytes(f"{ns}/model.bin", b"hello artifacts")
        assert backend.read_bytes(f"{ns}/model.bin") == b"hello artifacts"

    def test_every_byte_value_survives(self, backend: ArtifactStore, ns: str) -> None:
        data = bytes(range(256)) * 4 + b"\r\n\x00\x1a"
        backend.write_bytes(f"{ns}/bytes", data)
        assert backend.read_bytes(f"{ns}/bytes") == data

    def test_empty_object(self, backend: ArtifactStore, ns: str) -> None:
        backend.write_bytes(f"{ns}/empty", b"")
        assert backend.exists(f"{ns}/empty")
        assert backend.read_bytes(f"{ns}/empty") == b""

    def test_nested_keys(self, backend: ArtifactStore, ns: str) -> None:
        key = f"{ns}/bundles/sha256-abc/files/model.pkl"
        backend.write_bytes(key, b"nested")
        assert backend.read_bytes(key) == b"nested"
        assert backend.list(f"{ns}/bundles/") == [key]

    def test_large_object_is_streamed_whole(self, backend: ArtifactStore, ns: str) -> None:
        """A source that trickles 64 KiB per read must be stored whole, and read back whole in small reads."""
        self.require("large_objects")
        data = payload(LARGE_SIZE, seed=1)
        source = TrickleReader(data)
        backend.write(f"{ns}/large.bin", source)
        digest = hashlib.sha256()
        size = 0
        with backend.open(f"{ns}/large.bin") as f:
            while chunk := f.read(100_000):
                digest.update(chunk)
                size += len(chunk)
        assert size == len(data), f"read back {size} bytes of {len(data)}: the object was truncated"
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest(), "the bytes read back differ from those written"

    def test_overwrite_returns_the_new_bytes(self, backend: ArtifactStore, ns: str) -> None:
        """No stale reads: after a second write, every read returns the second content."""
        key = f"{ns}/latest"
        backend.write_bytes(key, b"first version")
        assert backend.read_bytes(key) == b"first version"
        backend.write_bytes(key, b"second, longer version")
        assert backend.read_bytes(key) == b"second, longer version"
        backend.write_bytes(key, b"3rd")
        with backend.open(key) as f:
            assert f.read() == b"3rd", "a shorter overwrite must not leave the old tail behind"

    def test_open_missing_raises_not_found(self, backend: ArtifactStore, ns: str) -> None:
        with pytest.raises(NotFoundError):
            backend.open(f"{ns}/missing")
        with pytest.raises(NotFoundError):
            backend.read_bytes(f"{ns}/never/written")

    def test_exists(self, backend: ArtifactStore, ns: str) -> None:
        assert not backend.exists(f"{ns}/a")
        backend.write_bytes(f"{ns}/a", b"1")
        assert backend.exists(f"{ns}/a")
        assert not backend.exists(f"{ns}/a-not")

    def test_list_by_prefix(self, backend: ArtifactStore, ns: str) -> None:
        keys = [f"{ns}/a/one", f"{ns}/a/two/three", f"{ns}/b/four", f"{ns}/ab/five"]
        for i, key in enumerate(keys):
            backend.write_bytes(key, str(i).encode())
        assert backend.list(f"{ns}/a/") == sorted(keys[:2]), "list(prefix) returns full keys below the prefix"
        assert backend.list(f"{ns}/") == sorted(keys)
        assert set(keys) <= set(backend.list(""))
        assert backend.list(f"{ns}/nothing/") == []

    def test_delete(self, backend: ArtifactStore, ns: str) -> None:
        backend.write_bytes(f"{ns}/x", b"1")
        backend.write_bytes(f"{ns}/xy", b"2")
        backend.delete(f"{ns}/x")
        assert not backend.exists(f"{ns}/x")
        assert backend.read_bytes(f"{ns}/xy") == b"2", "deleting a key must not touch keys it prefixes"
        with pytest.raises(NotFoundError):
            backend.open(f"{ns}/x")
        assert backend.list(f"{ns}/") == [f"{ns}/xy"]
        backend.delete(f"{ns}/x")  # absent keys are not an error
        backend.delete(f"{ns}/never-existed")

    @pytest.mark.parametrize("key", ["../escape", "/absolute", "a//b", "a/./b", "a/../b", "back\\slash", ""])
    def test_unsafe_keys_are_refused(self, backend: ArtifactStore, key: str) -> None:
        for call in (lambda: backend.write_bytes(key, b"x"), lambda: backend.open(key),
                     lambda: backend.exists(key), lambda: backend.delete(key)):
            with pytest.raises(InvalidInputError):
                call()

    def test_failed_write_leaves_nothing(self, backend: ArtifactStore, ns: str) -> None:
        """Atomic writes: a source failing half-way leaves no object and no temporary key visible."""
        self.require("atomic_writes")
        data = payload(3 * (1 << 20), seed=2)
        with pytest.raises((OSError, MlopsError)):
            backend.write(f"{ns}/partial", FailingReader(data, fail_after=1 << 20))
        assert not backend.exists(f"{ns}/partial"), "a failed write published a partial object"
        assert backend.list(f"{ns}/") == [], f"a failed write left keys behind: {backend.list(ns + '/')}"

    def test_failed_overwrite_keeps_the_old_object(self, backend: ArtifactStore, ns: str) -> None:
        self.require("atomic_writes")
        backend.write_bytes(f"{ns}/kept", b"the good version")
        with pytest.raises((OSError, MlopsError)):
            backend.write(f"{ns}/kept", FailingReader(payload(2 << 20, seed=3), fail_after=1 << 20))
        assert backend.read_bytes(f"{ns}/kept") == b"the good version"
        assert backend.list(f"{ns}/") == [f"{ns}/kept"]

    def test_concurrent_writers(self, backend: ArtifactStore, ns: str) -> None:
        self.require("concurrent_writes")
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            try:
                for j in range(10):
                    backend.write_bytes(f"{ns}/t{i}/o{j}", payload(10_000 + j, seed=i * 100 + j))
            except BaseException as exc:  # reported below, with the thread's error
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i in range(4):
            for j in range(10):
                assert backend.read_bytes(f"{ns}/t{i}/o{j}") == payload(10_000 + j, seed=i * 100 + j)

    def test_matches_reference_model(self, backend: ArtifactStore, ns: str) -> None:
        """Hypothesis: random writes, overwrites, deletes and listings agree with an in-memory store."""
        self.require("state_machine")
        pytest.importorskip("hypothesis", reason="the state machine needs hypothesis (pip install hypothesis)")
        from ..stateful import run_storage_state_machine

        run_storage_state_machine(backend, settings_overrides=self.state_machine_settings)
