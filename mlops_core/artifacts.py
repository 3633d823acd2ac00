"""Content-addressed bundle storage on top of any :class:`~mlops_core.interfaces.ArtifactStore`.

Layout inside a store::

    blobs/sha256/<hex>    one blob per distinct payload file, and one per manifest

A bundle is identified by the sha256 of its ``manifest.json`` bytes
(``ArtifactRef.digest == "sha256:<hex>"``); the manifest's ``files`` list names
every payload file with its ``sha256`` and ``size``. Equal files are stored once,
whichever bundle they belong to.

Every byte is hashed while it streams (1 MiB at a time, nothing is read whole):
a push refuses a file whose bytes do not match the manifest *before* the store
publishes the blob, and a pull verifies sizes and hashes into a temporary folder
that is renamed into place only once everything matched. Only stdlib and
mlops_core are imported here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Iterable

from .entities import ArtifactRef
from .errors import AlreadyExistsError, IntegrityError, InvalidInputError, NotFoundError
from .interfaces import ArtifactStore
from .leftovers import writing

__all__ = [
    "BLOB_PREFIX",
    "CHUNK_SIZE",
    "MANIFEST",
    "blob_key",
    "parse_digest",
    "push_bundle",
    "pull_bundle",
    "delete_unreferenced_blobs",
]

#: Where blobs live in a store, followed by the lowercase hex sha256 of their bytes.
BLOB_PREFIX = "blobs/sha256/"
#: Bytes hashed and copied per step.
CHUNK_SIZE = 1 << 20
MANIFEST = "manifest.json"
#: A manifest is metadata; anything bigger is not one (and is not read into memory).
MAX_MANIFEST_BYTES = 16 << 20

_HEX = re.compile(r"[0-9a-f]{64}")


def blob_key(hexdigest: str) -> str:
    """The store key of the blob whose sha256 is ``hexdigest``."""
    return BLOB_PREFIX + hexdigest


def parse_digest(digest: str) -> str:
    """``"sha256:<hex>"`` -> ``<hex>``; InvalidInputError for anything else."""
    algo, _, hexdigest = digest.partition(":") if isinstance(digest, str) else ("", "", "")
    if algo != "sha256" or not _HEX.fullmatch(hexdigest):
        raise InvalidInputError(f"invalid bundle digest {digest!r}", hint='expected "sha256:" and 64 lowercase hex digits')
    return hexdigest


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ manifests
def _payload_entries(manifest_bytes: bytes, where: str) -> list[tuple[str, str, int]]:
    """``(path, sha256, size)`` of every payload file of a manifest, after the one manifest check.

    The rules (safe relative paths, listed once, no ``manifest.json``, no path that is
    both a file and another file's folder, valid hashes and sizes) live in
    :func:`mlops_core.bundle.validate_manifest`, shared with loading.
    """
    from .bundle import validate_manifest

    try:
        manifest = json.loads(manifest_bytes)
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(f"invalid bundle manifest in {where}: not JSON ({exc})",
                             hint="re-save the bundle; its manifest.json is corrupt") from None
    validate_manifest(manifest, where)
    return [(f["path"], f["sha256"], f["size"]) for f in manifest["files"]]


# ------------------------------------------------------------------ streaming
class _VerifyingReader(io.RawIOBase):
    """Reads ``raw`` while counting and hashing; at end of stream, checks size and sha256.

    The check happens *before* the final empty read returns, so a store that is
    copying from this reader sees an IntegrityError instead of end-of-file and
    never publishes the bytes. Reading past ``size`` fails at once.
    """

    def __init__(self, raw: IO[bytes], hexdigest: str, size: int, what: str) -> None:
        super().__init__()
        self._raw = raw
        self._expected = hexdigest
        self._size = size
        self._what = what
        self._hash = hashlib.sha256()
        self._count = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        if size == 0:
            return b""
        # Asking for one byte more than is left tells an over-long source from a complete one.
        chunk = self._raw.read(min(size, self._size - self._count + 1))
        if not chunk:
            self._finish()
            return b""
        self._count += len(chunk)
        if self._count > self._size:
            raise IntegrityError(f"{self._what} is larger than the {self._size} bytes its manifest records",
                                 hint="the file changed after the manifest was written, or was tampered with")
        self._hash.update(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        if self._count != self._size:
            raise IntegrityError(f"{self._what} has {self._count} bytes, its manifest records {self._size}",
                                 hint="the data is truncated or was tampered with")
        actual = self._hash.hexdigest()
        if actual != self._expected:
            raise IntegrityError(f"{self._what} has sha256 {actual}, its manifest records {self._expected}",
                                 hint="the data was modified after the manifest was written, or was tampered with")
        self.verified = True


def _read_limited(f: IO[bytes], limit: int, what: str) -> bytes:
    parts, total = [], 0
    while True:
        chunk = f.read(min(CHUNK_SIZE, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise IntegrityError(f"{what} is larger than {limit} bytes", hint="this is not a bundle manifest")


def _open_blob(store: ArtifactStore, hexdigest: str, what: str) -> IO[bytes]:
    try:
        return store.open(blob_key(hexdigest))
    except NotFoundError:
        raise NotFoundError(f"{what} (blob sha256:{hexdigest}) is missing from {store.uri or 'the store'}",
                            hint="the artifact store lost data or points elsewhere; push the bundle again") from None


# ------------------------------------------------------------------ push
def push_bundle(store: ArtifactStore, bundle_dir: Path) -> ArtifactRef:
    """Store every file of the bundle at ``bundle_dir``, then its manifest; return the bundle's ref.

    Blobs already in the store are not written again. Each file is verified against
    the manifest while it streams; on a mismatch IntegrityError is raised and no
    blob is published for it (blobs of files pushed before it stay: they are
    correct, and reused by the next push).
    """
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    try:
        with open(mpath, "rb") as f:
            manifest_bytes = _read_limited(f, MAX_MANIFEST_BYTES, str(mpath))
    except FileNotFoundError:
        raise NotFoundError(f"{bundle_dir} has no {MANIFEST}", hint="is this a bundle folder? save one with mlops_core.save") from None
    entries = _payload_entries(manifest_bytes, str(mpath))

    # Check everything locally before the first write.
    root = bundle_dir.resolve()
    sources: list[tuple[Path, str, int, str]] = []
    for rel, hexdigest, size in entries:
        path = bundle_dir / rel
        if not path.resolve().is_relative_to(root):
            raise IntegrityError(f"{path} points outside the bundle folder {bundle_dir}",
                                 hint="bundles must not contain symbolic links leaving the folder")
        if not path.is_file():
            raise IntegrityError(f"{rel!r} is listed in {mpath} but is not a file in the bundle",
                                 hint="the bundle is incomplete; re-save it")
        if path.stat().st_size != size:
            raise IntegrityError(f"{path} has {path.stat().st_size} bytes, its manifest records {size}",
                                 hint="the file changed after the manifest was written; re-save the bundle")
        sources.append((path, hexdigest, size, f"bundle file {rel!r}"))

    for path, hexdigest, size, what in sources:
        key = blob_key(hexdigest)
        if store.exists(key):
            continue  # content-addressed: equal bytes are already there
        with open(path, "rb") as f:
            reader = _VerifyingReader(f, hexdigest, size, what)
            store.write(key, reader)
        if not reader.verified:
            # The store stopped reading before end of stream, so the bytes were never checked.
            store.delete(key)
            raise IntegrityError(f"{what} was not fully read by the artifact store {store.uri!r}",
                                 hint="the store's _write must read its source until end of stream")

    manifest_hex = _sha256_hex(manifest_bytes)
    manifest_key = blob_key(manifest_hex)
    if not store.exists(manifest_key):
        store.write(manifest_key, io.BytesIO(manifest_bytes))
    return ArtifactRef(uri=store.uri, digest="sha256:" + manifest_hex)


# ------------------------------------------------------------------ pull
def _cached(dest: Path, manifest_hex: str) -> bool:
    try:
        with open(dest / MANIFEST, "rb") as f:
            data = _read_limited(f, MAX_MANIFEST_BYTES, str(dest / MANIFEST))
    except (OSError, IntegrityError):
        return False
    return _sha256_hex(data) == manifest_hex


def pull_bundle(store: ArtifactStore, ref: ArtifactRef, dest: Path) -> Path:
    """Fetch the bundle ``ref`` into the folder ``dest`` (created atomically) and return it.

    If ``dest`` already holds this bundle's manifest it is returned as is. Every
    file is verified (size and sha256) on the way; on any mismatch IntegrityError
    is raised and ``dest`` is not created.
    """
    dest = Path(dest)
    manifest_hex = parse_digest(ref.digest)
    if _cached(dest, manifest_hex):
        return dest
    if dest.exists():
        raise AlreadyExistsError(f"{dest} exists and does not hold bundle {ref.digest}",
                                 hint="remove it or pull into another folder")

    what = f"manifest of bundle {ref.digest}"
    with _open_blob(store, manifest_hex, what) as f:
        manifest_bytes = _read_limited(f, MAX_MANIFEST_BYTES, what)
    actual = _sha256_hex(manifest_bytes)
    if actual != manifest_hex:
        raise IntegrityError(f"the stored {what} has sha256 {actual}",
                             hint="the artifact store was tampered with or corrupted; push the bundle again")
    entries = _payload_entries(manifest_bytes, what)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    lock = None
    try:
        tmp.mkdir()
        lock = writing(tmp)  # `mlops gc` leaves a temporary alone while its writer lives
        lock.__enter__()
        for rel, hexdigest, size in entries:
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            file_what = f"file {rel!r} of bundle {ref.digest}"
            with _open_blob(store, hexdigest, file_what) as blob, open(target, "wb") as out:
                reader = _VerifyingReader(blob, hexdigest, size, file_what)
                for chunk in iter(lambda: reader.read(CHUNK_SIZE), b""):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        with open(tmp / MANIFEST, "wb") as out:
            out.write(manifest_bytes)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.rename(tmp, dest)  # one rename(2): dest appears complete or not at all
        except OSError as exc:
            if not _cached(dest, manifest_hex):  # not a concurrent pull of the same bundle
                raise AlreadyExistsError(f"cannot move bundle {ref.digest} into {dest}: {exc}",
                                         hint="remove it or pull into another folder") from exc
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    return dest


# ------------------------------------------------------------------ gc
def delete_unreferenced_blobs(store: ArtifactStore, keep: Iterable[str], *, dry_run: bool = False) -> list[str]:
    """Delete every blob not used by the bundles whose digests are in ``keep``; return their keys.

    Not safe while a push runs against the same store (its files are uploaded
    before its manifest, so they look unreferenced). A kept bundle whose manifest
    is missing raises NotFoundError before anything is deleted.
    """
    referenced: set[str] = set()
    for digest in set(keep):
        manifest_hex = parse_digest(digest)
        what = f"manifest of bundle {digest}"
        with _open_blob(store, manifest_hex, what) as f:
            manifest_bytes = _read_limited(f, MAX_MANIFEST_BYTES, what)
        referenced.add(manifest_hex)
        referenced.update(h for _p, h, _s in _payload_entries(manifest_bytes, what))
    doomed = [key for key in store.list(BLOB_PREFIX) if key[len(BLOB_PREFIX):] not in referenced]
    if not dry_run:
        for key in doomed:
            store.delete(key)
    return doomed
