"""Reproducible layer tarballs, a content-addressed blob store and the OCI image layout.

Same entries in, same bytes out: entries are sorted, every parent folder is
written, owners are 0:0 with empty names, modes are normalised (0755 folders and
executables, 0644 files, readable by the non-root user the image runs as), every
mtime is ``SOURCE_DATE_EPOCH`` (or 0), the tar is PAX, and gzip gets mtime 0 and
no file name. The tar stream is hashed on the fly (the ``diff_id``) while its
gzip stream is hashed and written (the blob ``digest``): one pass, no temp tar.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping

import attrs

from mlops_core.bundle import canonical_json  # re-exported: the OCI documents use the bundle's byte rule
from mlops_core.errors import IntegrityError, InvalidInputError

__all__ = [
    "LAYER_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "CONFIG_MEDIA_TYPE",
    "INDEX_MEDIA_TYPE",
    "canonical_json",
    "source_date_epoch",
    "Entry",
    "FileTree",
    "Layer",
    "BlobStore",
    "write_layer",
    "materialize",
    "write_layout",
    "read_layout",
]

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
_CHUNK = 1 << 20


def source_date_epoch() -> int:
    """The timestamp written into layers and configs: ``$SOURCE_DATE_EPOCH`` or 0."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer",
                                hint="set it to seconds since 1970 (e.g. `git log -1 --format=%ct`) or unset it") from None
    if value < 0:
        raise InvalidInputError(f"SOURCE_DATE_EPOCH={raw!r} is negative", hint="use seconds since 1970")
    return value


# ------------------------------------------------------------------ file trees
@attrs.frozen
class Entry:
    """One entry of a layer: a regular file (with a way to open its bytes), a folder or a symlink."""

    path: str  # relative POSIX path inside the image, no leading '/'
    kind: str  # "file", "dir" or "symlink"
    mode: int = 0o644
    size: int = 0
    opener: Callable[[], IO[bytes]] | None = attrs.field(default=None, eq=False, repr=False)
    target: str = ""  # symlink target


def _clean(path: str) -> str:
    p = path.strip("/")
    norm = posixpath.normpath(p)
    if not p or norm != p or p.startswith("../") or p == ".." or "\\" in p or "\x00" in p:
        raise InvalidInputError(f"unsafe path {path!r} in an image layer",
                                hint="layer paths are relative POSIX paths without '.', '..' or backslashes")
    return p


class FileTree:
    """The files of one layer, added in any order; written sorted with every parent folder."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add_bytes(self, path: str, data: bytes, *, executable: bool = False) -> None:
        self._entries[_clean(path)] = Entry(_clean(path), "file", 0o755 if executable else 0o644, len(data),
                                            lambda d=data: io.BytesIO(d))

    def add_file(self, path: str, source: Path, *, executable: bool | None = None) -> None:
        st = source.stat()
        if executable is None:
            executable = bool(st.st_mode & 0o111)
        self._entries[_clean(path)] = Entry(_clean(path), "file", 0o755 if executable else 0o644, st.st_size,
                                            lambda s=source: open(s, "rb"))

    def add_opener(self, path: str, opener: Callable[[], IO[bytes]], size: int, *, executable: bool = False) -> None:
        self._entries[_clean(path)] = Entry(_clean(path), "file", 0o755 if executable else 0o644, size, opener)

    def add_dir(self, path: str) -> None:
        self._entries[_clean(path)] = Entry(_clean(path), "dir", 0o755)

    def add_symlink(self, path: str, target: str) -> None:
        self._entries[_clean(path)] = Entry(_clean(path), "symlink", 0o777, 0, None, target)

    def add_tree(self, prefix: str, folder: Path, *, skip: Callable[[Path], bool] = lambda p: False) -> None:
        """Add every file under ``folder`` below ``prefix`` (symlinks are kept as links)."""
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not skip(Path(root, d)))
            for name in sorted(files):
                src = Path(root, name)
                if skip(src):
                    continue
                rel = src.relative_to(folder).as_posix()
                if src.is_symlink():
                    self.add_symlink(f"{prefix}/{rel}", os.readlink(src))
                else:
                    self.add_file(f"{prefix}/{rel}", src)

    def entries(self) -> list[Entry]:
        """Sorted entries, with every missing parent folder added."""
        out = dict(self._entries)
        for path in list(self._entries):
            parent = posixpath.dirname(path)
            while parent and parent not in out:
                out[parent] = Entry(parent, "dir", 0o755)
                parent = posixpath.dirname(parent)
        return [out[p] for p in sorted(out)]

    def fingerprint(self) -> str:
        """sha256 over paths, modes, sizes and file contents: the cache key of the layer."""
        h = hashlib.sha256()
        for e in self.entries():
            h.update(f"{e.path}\0{e.kind}\0{e.mode:o}\0{e.size}\0{e.target}\0".encode())
            if e.kind == "file":
                assert e.opener is not None
                with e.opener() as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
        return h.hexdigest()

    def total_size(self) -> int:
        return sum(e.size for e in self._entries.values())


# ------------------------------------------------------------------- blobs
class _HashingSink:
    """A write-only stream that hashes what passes through to ``sink`` (or nowhere)."""

    def __init__(self, sink: Any | None = None) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()


def _check_digest(digest: str) -> str:
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
        raise InvalidInputError(f"unsupported or malformed digest {digest!r}", hint="digests look like sha256:<64 hex>")
    return hexdigest


class BlobStore:
    """Content-addressed files under ``root/sha256/<hex>``, written atomically (shared by every build)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / _check_digest(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            tmp.write_bytes(data)
            os.replace(tmp, self.path(digest))
        return digest

    def read_bytes(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"cached blob {digest} is corrupt", hint=f"delete {self.path(digest)} and build again")
        return data

    def temp_path(self) -> Path:
        return self.root / f".tmp-{uuid.uuid4().hex}"

    def commit(self, tmp: Path, digest: str) -> Path:
        dest = self.path(digest)
        os.replace(tmp, dest)
        return dest

    def import_stream(self, stream: Iterable[bytes], digest: str) -> Path:
        """Store downloaded bytes, refusing them if they do not hash to ``digest``."""
        tmp = self.temp_path()
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:
                for chunk in stream:
                    h.update(chunk)
                    f.write(chunk)
            if "sha256:" + h.hexdigest() != digest:
                raise IntegrityError(f"downloaded blob does not match its digest {digest}",
                                     hint="the registry or a proxy returned other bytes; try again")
            return self.commit(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ layers
@attrs.frozen
class Layer:
    """A written layer blob: ``digest``/``size`` of the gzip blob, ``diff_id`` of the tar inside."""

    digest: str
    diff_id: str
    size: int
    media_type: str = LAYER_MEDIA_TYPE
    comment: str = ""

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _tarinfo(e: Entry, mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(e.path)
    ti.mtime = mtime
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mode = e.mode
    if e.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif e.kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.target
    else:
        ti.type = tarfile.REGTYPE
        ti.size = e.size
    return ti


class _SizeCheckingReader:
    def __init__(self, f: IO[bytes], expected: int, path: str) -> None:
        self.f, self.expected, self.path, self.seen = f, expected, path, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.seen += len(data)
        if self.seen > self.expected or (not data and self.seen != self.expected):
            raise IntegrityError(f"{self.path} changed size while the layer was written",
                                 hint="do not modify the inputs during a build; build again")
        return data


def write_layer(tree: FileTree, store: BlobStore, *, mtime: int | None = None, compresslevel: int = 6,
                comment: str = "", on_bytes: Callable[[int], None] | None = None) -> Layer:
    """Write ``tree`` as a gzip tar blob into ``store`` and return its descriptor data."""
    mtime = source_date_epoch() if mtime is None else mtime
    tmp = store.temp_path()
    try:
        with open(tmp, "wb") as raw:
            blob = _HashingSink(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0, compresslevel=compresslevel) as gz:  # type: ignore[arg-type]
                tar_sink = _HashingSink(gz)
                with tarfile.open(fileobj=tar_sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                    for e in tree.entries():
                        ti = _tarinfo(e, mtime)
                        if e.kind == "file":
                            assert e.opener is not None
                            with e.opener() as f:
                                tar.addfile(ti, _SizeCheckingReader(f, e.size, e.path))  # type: ignore[arg-type]
                                if f.read(1):
                                    raise IntegrityError(f"{e.path} grew while the layer was written",
                                                         hint="do not modify the inputs during a build; build again")
                            if on_bytes:
                                on_bytes(e.size)
                        else:
                            tar.addfile(ti)
        digest = "sha256:" + blob.hash.hexdigest()
        store.commit(tmp, digest)
        return Layer(digest=digest, diff_id="sha256:" + tar_sink.hash.hexdigest(), size=blob.size, comment=comment)
    finally:
        tmp.unlink(missing_ok=True)


def materialize(tree: FileTree, dest: Path) -> None:
    """Write the entries of ``tree`` as real files under ``dest`` (a Dockerfile build context)."""
    for e in tree.entries():
        target = dest / e.path
        if e.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o755)
        elif e.kind == "symlink":
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            os.symlink(e.target, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            assert e.opener is not None
            with e.opener() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            os.chmod(target, e.mode)


# ------------------------------------------------------------------ layout
def write_layout(dest: Path, store: BlobStore, manifest: bytes, blobs: Iterable[str], *,
                 ref_name: str | None = None, annotations: Mapping[str, str] | None = None,
                 media_type: str = MANIFEST_MEDIA_TYPE) -> Path:
    """Write a complete OCI image layout at ``dest`` (replaced atomically) holding one image.

    Blobs are hard links into the shared blob store where the filesystem allows,
    copies otherwise.
    """
    manifest_digest = store.put_bytes(manifest)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    (tmp / "blobs" / "sha256").mkdir(parents=True)
    try:
        for digest in {manifest_digest, *blobs}:
            src = store.path(digest)
            if not src.is_file():
                raise IntegrityError(f"blob {digest} is missing from the build cache {store.root}",
                                     hint="build again; the cache is re-filled on demand")
            link = tmp / "blobs" / "sha256" / digest.split(":", 1)[1]
            try:
                os.link(src, link)
            except OSError:
                shutil.copyfile(src, link)
        (tmp / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
        desc: dict[str, Any] = {"mediaType": media_type, "digest": manifest_digest, "size": len(manifest)}
        ann = dict(annotations or {})
        if ref_name:
            ann["org.opencontainers.image.ref.name"] = ref_name
        if ann:
            desc["annotations"] = ann
        (tmp / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
                                                         "manifests": [desc]}))
        if dest.exists():
            trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex}"
            os.replace(dest, trash)
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_layout(path: Path, ref_name: str | None = None) -> Iterator[tuple[dict[str, Any], Path]]:
    """Yield (descriptor, blobs folder) of the manifests in a layout's index, filtered by ref name."""
    index_path = Path(path) / "index.json"
    if not index_path.is_file():
        raise InvalidInputError(f"{path} is not an OCI image layout (no index.json)",
                                hint="point at a folder written by `mlops build` or `skopeo copy ... oci:DIR`")
    index = json.loads(index_path.read_bytes())
    for desc in index.get("manifests", []):
        name = (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        if ref_name is None or name == ref_name:
            yield desc, Path(path) / "blobs"
