"""``FsspecArtifactStore``: the ArtifactStore contract on any fsspec filesystem.

Keys are relative POSIX paths below the root of ``url`` (already validated by
:meth:`mlops_core.interfaces.ArtifactStore.write` and friends). Data is always
copied in ``CHUNK_SIZE`` pieces, so a multi-gigabyte model never sits in memory.

How a write is made atomic depends on the filesystem (see ``_PUT_IS_ATOMIC``):
object stores publish an object only when its upload completes, so the final key
is written directly and a failed upload is discarded; every other filesystem
shows bytes as they are written, so the data goes to a temporary sibling key
``<key>.tmp-<uuid>`` that is renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import attrs
import fsspec
from fsspec.registry import known_implementations

from mlops_core.errors import BackendUnavailableError, ConfigError, MlopsError, NotFoundError
from mlops_core.interfaces import ArtifactStore, BackendContext
from mlops_core.leftovers import Leftover, find_leftovers, remove, writing

from .config import FsspecStorageConfig

__all__ = ["CHUNK_SIZE", "FsspecArtifactStore", "create_store", "resolve_filesystem"]

#: Bytes moved per read/write call when streaming.
CHUNK_SIZE = 1 << 20

# Object stores: a single PUT (or a completed multipart upload) makes the whole
# object appear at once, and a failed multipart upload can be aborted, so writing
# the final key directly is already atomic. A "rename" there would be a full
# server-side copy plus a delete: twice the cost for no gain.
# Not listed on purpose: "memory" (fsspec's MemoryFileSystem publishes a file the
# moment it is opened for writing), local disks, sftp, hdfs... They go through a
# temporary key and a rename, which is atomic on POSIX filesystems.
_PUT_IS_ATOMIC = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})

_TMP_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{32}$")
_INSTALL_WORD = re.compile(r"\binstall\s+([A-Za-z0-9][A-Za-z0-9._\-]*)", re.IGNORECASE)
_QUOTED = re.compile(r"\"([A-Za-z0-9][A-Za-z0-9._\-]*)\"")

#: Extras of this distribution that pull in an fsspec implementation.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure"}


def _protocols(fs: Any) -> set[str]:
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)


def _packages_for(protocol: str) -> list[str]:
    """The distributions fsspec's own registry says a scheme needs."""
    spec = known_implementations.get(protocol, {})
    err = spec.get("err") or ""
    found = _INSTALL_WORD.findall(err) or _QUOTED.findall(err)
    if found:
        return found
    module = str(spec.get("class", "")).partition(".")[0]
    return [module] if module else []


def _check_scheme(url: str) -> None:
    """Fail with the package to install when a URL scheme is unknown or its implementation is missing."""
    for part in url.split("::"):  # chained URLs such as simplecache::s3://bucket
        protocol = fsspec.core.split_protocol(part)[0] or "file"
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise ConfigError(
                f"unknown URL scheme {protocol!r} in storage url {url!r}",
                hint=f"fsspec knows {', '.join(sorted(fsspec.available_protocols()))}; "
                     "a scheme from a third-party fsspec package works once that package is installed",
            ) from None
        except ImportError as exc:
            packages = _packages_for(protocol)
            install = "pip install " + " ".join(packages) if packages else "install the package fsspec names"
            extra = _EXTRAS.get(protocol)
            if extra:
                install += f" (or pip install 'mlops-fsspec-storage[{extra}]')"
            raise ConfigError(
                f"storage url {url!r} needs {' and '.join(packages) or 'an fsspec implementation'} "
                f"for the {protocol!r} scheme, and it is not installed ({exc})",
                hint=install,
            ) from None


def resolve_filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Return ``(filesystem, root path without protocol or trailing '/')`` for ``url``."""
    if "://" not in url and "::" not in url:
        url = os.path.expanduser(url)
    _check_scheme(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except TypeError as exc:  # an option the filesystem does not take
        raise ConfigError(f"invalid storage_options for {url!r}: {exc}",
                          hint="storage_options are passed to the fsspec filesystem as keyword arguments") from None
    return fs, path.rstrip("/")


def _discard_upload(f: Any) -> None:
    """Drop an unfinished direct upload without publishing anything."""
    with contextlib.suppress(Exception):
        f.discard()  # aborts a multipart / resumable upload in progress (s3fs, gcsfs)
    # close() would publish whatever was buffered so far, so mark the file closed instead.
    with contextlib.suppress(Exception):
        f.closed = True


def _fsync(f: Any) -> None:
    """Flush a local file to disk before it is renamed into place (durability, not atomicity)."""
    with contextlib.suppress(Exception):
        f.flush()
        os.fsync(f.fileno())


class FsspecArtifactStore(ArtifactStore):
    """Artifacts below ``url`` on any fsspec filesystem (a local folder, ``memory://``, ``s3://bucket/prefix``...)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self._fs, self._root = resolve_filesystem(url, storage_options)
        protocols = _protocols(self._fs)
        self._direct_put = bool(protocols & _PUT_IS_ATOMIC)
        self._local = "file" in protocols or "local" in protocols
        self._memory = "memory" in protocols
        self.uri = url if "::" in url else self._fs.unstrip_protocol(self._root or self._fs.root_marker)

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.uri!r})"

    @property
    def filesystem(self) -> Any:
        """The underlying fsspec filesystem (for tools and tests)."""
        return self._fs

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Turn filesystem errors into the project's error hierarchy."""
        try:
            yield
        except MlopsError:
            raise
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"no artifact {key!r} in {self.uri}",
                                hint="check the key, or list the store's keys") from None
        except PermissionError as exc:
            raise BackendUnavailableError(f"permission denied to {action} {key!r} in {self.uri}: {exc}",
                                          hint="check the credentials in storage_options") from exc
        except OSError as exc:
            raise BackendUnavailableError(f"cannot {action} {key!r} in {self.uri}: {type(exc).__name__}: {exc}",
                                          hint="check that the storage is reachable and has free space") from exc

    def _copy(self, key: str, source: IO[bytes], f: Any) -> None:
        # Only the writes are translated: errors raised by ``source`` (for example an
        # IntegrityError from a verifying reader) must reach the caller unchanged.
        while True:
            chunk = source.read(CHUNK_SIZE)
            if not chunk:
                return
            with self._errors("write", key):
                f.write(chunk)

    # the five primitives ------------------------------------------------------
    def _write(self, key: str, source: IO[bytes]) -> None:
        path = self._path(key)
        if self._direct_put:
            with self._errors("write", key):
                f = self._fs.open(path, "wb")
            try:
                self._copy(key, source, f)
                with self._errors("write", key):
                    f.close()  # the object appears here, whole (one PUT or CompleteMultipartUpload)
            except BaseException:
                _discard_upload(f)  # also when completing failed: abort the multipart upload
                raise
            return

        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with self._errors("write", key):
                self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
                f = self._fs.open(tmp, "wb")
            # A live local write holds the temporary's lock: `mlops gc` never removes it.
            with f, (writing(Path(tmp)) if self._local else contextlib.nullcontext()):
                self._copy(key, source, f)
                if self._local:
                    _fsync(f)
            with self._errors("write", key):
                if self._local:
                    os.replace(tmp, path)  # one rename(2): readers see the old object or the new one
                else:
                    self._fs.mv(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self._fs.rm_file(tmp)
            raise

    def _open(self, key: str) -> IO[bytes]:
        path = self._path(key)
        with self._errors("read", key):
            if self._memory:
                # MemoryFileSystem hands out the stored BytesIO itself, whose position
                # every reader would share; a private copy is cheap since it is in RAM anyway.
                return io.BytesIO(self._fs.cat_file(path))
            self._fs.invalidate_cache(path)
            f = self._fs.open(path, "rb", block_size=CHUNK_SIZE * 4)
        # Object stores happily "open" a prefix that only has keys below it, as an empty file.
        details = getattr(f, "details", None)
        if isinstance(details, dict) and details.get("type", "file") != "file":
            f.close()
            raise NotFoundError(f"no artifact {key!r} in {self.uri} (it is a folder of other keys)",
                                hint="check the key, or list the store's keys")
        return f

    def _exists(self, key: str) -> bool:
        path = self._path(key)
        with self._errors("check", key):
            self._fs.invalidate_cache(posixpath.dirname(path))  # another process may have written it
            return bool(self._fs.isfile(path))

    def _list(self, prefix: str) -> Iterator[str]:
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self._root
        with self._errors("list", prefix or "/"):
            self._fs.invalidate_cache(base)
            try:
                paths = self._fs.find(base or self._fs.root_marker)
            except FileNotFoundError:
                paths = []
        head = self._root + "/"
        for p in paths:
            if not p.startswith(head):
                continue
            key = p[len(head):]
            if key.startswith(prefix) and not _TMP_SUFFIX.search(key):  # skip writes in flight
                yield key

    def _delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors("delete", key):
            try:
                self._fs.rm_file(path)
            except FileNotFoundError:
                pass

    # leftovers ----------------------------------------------------------------
    def find_leftovers(self, older_than: float) -> list[Leftover]:
        """``<key>.tmp-<uuid>`` files of killed writers on a local disk (object stores leave none).

        Other non-atomic filesystems (sftp, hdfs...) are not scanned: their writers
        cannot be told alive from dead, so their temporaries are left for an operator.
        """
        if not self._local:
            return []
        return [attrs.evolve(lo, kind="blob temporary") for lo in find_leftovers(Path(self._root), older_than)]

    def remove_leftover(self, leftover: Leftover) -> None:
        if not self._local or not Path(leftover.where).is_relative_to(Path(self._root)):
            raise MlopsError(f"{leftover.where} is not a temporary of the store {self.uri}")
        remove(leftover)

    # health -------------------------------------------------------------------
    def check(self) -> str:
        """Write, read back and delete a probe key; return where the store is."""
        probe = f".mlops-check-{uuid.uuid4().hex}"
        payload = f"mlops check {probe}".encode()
        try:
            try:
                self.write_bytes(probe, payload)
                echoed = self.read_bytes(probe)
            finally:
                with contextlib.suppress(Exception):
                    self.delete(probe)
        except Exception as exc:
            raise BackendUnavailableError(
                f"artifact store {self.uri} is not usable: {type(exc).__name__}: {exc}",
                hint="check the url, the credentials in storage_options and that the service is reachable",
            ) from exc
        if echoed != payload:
            raise BackendUnavailableError(f"artifact store {self.uri} returned different bytes than were written",
                                          hint="check the storage service; it may be caching or rewriting objects")
        return f"fsspec store at {self.uri}: write, read and delete ok"


def create_store(config: FsspecStorageConfig, context: BackendContext) -> FsspecArtifactStore:
    """The factory the plugin registers: the stack's ``[storage]`` settings and context -> a store."""
    url = config.url or str(context.home / "artifacts")
    if "://" not in url and "::" not in url:  # a plain local path: relative to the stack file's folder
        url = str(context.resolve_path(url))
    return FsspecArtifactStore(url, config.storage_options)
