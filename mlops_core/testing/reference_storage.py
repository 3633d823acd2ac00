"""The reference model of :class:`~mlops_core.interfaces.ArtifactStore` for conformance tests.

``InMemoryArtifactStore`` keeps blobs in a dict behind a lock. It is obviously
correct rather than fast: a write reads the whole source first and publishes the
object only when the source is exhausted, so a failing source leaves nothing
behind (the atomicity every store must provide). The storage state machine runs
a real backend side by side with it; it is also a handy throwaway store in tests.
"""

from __future__ import annotations

import io
import threading
from typing import IO, Iterator

from ..errors import NotFoundError
from ..interfaces import ArtifactStore

__all__ = ["InMemoryArtifactStore"]


class InMemoryArtifactStore(ArtifactStore):
    """Blobs in a dict: the reference for conformance tests."""

    def __init__(self, uri: str = "memory://mlops-testing") -> None:
        self.uri = uri
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def check(self) -> str:
        return f"in-memory store ({len(self._blobs)} objects)"

    def _write(self, key: str, source: IO[bytes]) -> None:
        buf = io.BytesIO()
        while chunk := source.read(1 << 16):
            buf.write(chunk)
        with self._lock:  # published only once the whole source was read
            self._blobs[key] = buf.getvalue()

    def _open(self, key: str) -> IO[bytes]:
        with self._lock:
            try:
                return io.BytesIO(self._blobs[key])
            except KeyError:
                raise NotFoundError(f"no artifact {key!r} in {self.uri}", hint="check the key") from None

    def _exists(self, key: str) -> bool:
        with self._lock:
            return key in self._blobs

    def _list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            keys = [k for k in self._blobs if k.startswith(prefix)]
        return iter(keys)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._blobs.pop(key, None)
