"""``RedisArtifactStore``: the ArtifactStore contract on Redis.

Layout below a namespace ``ns`` (default ``mlops``):

* ``{ns}:blob:<uuid>``: the bytes of one written version of an object;
* ``{ns}:ref:<key>``: the name of the blob the key currently points at;
* ``{ns}:index``: a sorted set of every key (all scores 0), listed by prefix with
  ``ZRANGEBYLEX``.

A write streams the source into a fresh blob with ``APPEND`` in ``CHUNK_SIZE``
pieces (never the whole object in memory), then a Lua script swaps the
reference and indexes the key in one atomic step: readers see the old object
or the new one, never a partial one, and a failed write only leaves an
unreferenced blob that is deleted at once. The replaced blob is not deleted but
expires after ``grace_seconds``, so a reader streaming it keeps consistent bytes.
"""

from __future__ import annotations

import io
import uuid
from typing import IO, Any, Iterator

import attrs

from mlops_core.errors import BackendUnavailableError, ConfigError, NotFoundError
from mlops_core.interfaces import ArtifactStore, BackendContext

__all__ = ["CHUNK_SIZE", "RedisStorageConfig", "RedisArtifactStore", "create_store"]

CHUNK_SIZE = 1 << 20

_SWAP = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if old and old ~= ARGV[1] then redis.call('EXPIRE', old, ARGV[3]) end
return old
"""
_DELETE = """
local old = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if old then redis.call('EXPIRE', old, ARGV[2]) end
return old
"""


@attrs.define
class RedisStorageConfig:
    """``[storage]`` settings."""

    url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "mlops"
    #: How long a replaced or deleted object stays readable for readers already streaming it.
    grace_seconds: int = 60


class _BlobReader(io.RawIOBase):
    """Streams one blob with GETRANGE; a blob that expired under a slow reader is an error, not short data."""

    def __init__(self, client: Any, blob: str, size: int) -> None:
        self._client, self._blob, self._size, self._pos = client, blob, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), CHUNK_SIZE, self._size - self._pos)
        if n <= 0:
            return 0
        data = self._client.getrange(self._blob, self._pos, self._pos + n - 1)
        if len(data) != n:
            raise BackendUnavailableError(f"blob {self._blob} vanished while it was read",
                                          hint="raise grace_seconds, or read the artifact again")
        buffer[:n] = data
        self._pos += n
        return n


class RedisArtifactStore(ArtifactStore):
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, namespace: str = "mlops",
                 grace_seconds: int = 60) -> None:
        import redis

        if not namespace or ":" in namespace:
            raise ConfigError(f"invalid redis namespace {namespace!r}", hint="use a non-empty name without ':'")
        self._redis = redis
        try:
            self._client = redis.Redis.from_url(url)
        except ValueError as exc:
            raise ConfigError(f"invalid redis url {url!r}: {exc}", hint="use redis://host:port/db") from None
        self.uri = f"{url.rstrip('/')}#{namespace}"
        self._ns = namespace
        self._grace = int(grace_seconds)
        self._swap = self._client.register_script(_SWAP)
        self._drop = self._client.register_script(_DELETE)

    def __repr__(self) -> str:
        return f"RedisArtifactStore({self.uri!r})"

    def _ref(self, key: str) -> str:
        return f"{self._ns}:ref:{key}"

    @property
    def _index(self) -> str:
        return f"{self._ns}:index"

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._redis.ConnectionError as exc:
            raise BackendUnavailableError(f"cannot reach Redis for {self.uri}: {exc}",
                                          hint="check that the server runs and the url is right") from None

    def check(self) -> str:
        info = self._call(self._client.info, "server")
        return f"Redis {info.get('redis_version', '?')} at {self.uri}"

    def close(self) -> None:
        self._client.close()

    # the five primitives ------------------------------------------------------
    def _write(self, key: str, source: IO[bytes]) -> None:
        blob = f"{self._ns}:blob:{uuid.uuid4().hex}"
        try:
            self._call(self._client.set, blob, b"")
            while chunk := source.read(CHUNK_SIZE):
                self._call(self._client.append, blob, chunk)
        except BaseException:
            self._client.delete(blob)
            raise
        self._call(self._swap, [self._ref(key), self._index], [blob, key, self._grace])

    def _open(self, key: str) -> IO[bytes]:
        blob = self._call(self._client.get, self._ref(key))
        if blob is None:
            raise NotFoundError(f"no artifact {key!r} in {self.uri}", hint="check the key, or list the store's keys")
        size = self._call(self._client.strlen, blob)
        return io.BufferedReader(_BlobReader(self._client, blob.decode(), size), buffer_size=CHUNK_SIZE)

    def _exists(self, key: str) -> bool:
        return bool(self._call(self._client.exists, self._ref(key)))

    def _list(self, prefix: str) -> Iterator[str]:
        low, high = (b"[" + prefix.encode(), b"[" + prefix.encode() + b"\xff") if prefix else (b"-", b"+")
        for raw in self._call(self._client.zrangebylex, self._index, low, high):
            yield raw.decode()

    def _delete(self, key: str) -> None:
        self._call(self._drop, [self._ref(key), self._index], [key, self._grace])


def create_store(config: RedisStorageConfig, context: BackendContext) -> RedisArtifactStore:
    return RedisArtifactStore(config.url, namespace=config.namespace, grace_seconds=config.grace_seconds)
