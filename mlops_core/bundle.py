"""Model bundles: a folder with the model's files and a JSON manifest.

The manifest (``manifest.json``, schema ``mlops_core/schemas/bundle-manifest.schema.json``)
records the format, the V2 signature, every file with its sha256 and size, the
Python version, the packages the pickled model imports (pinned to the installed
versions), the creation time and the mlops-core version. Any language can read it.

Safety rule: :func:`load_bundle` verifies every hash *before* the format loads
anything, so a tampered pickle is refused before a single opcode runs, and the
format loads *the bytes that were verified* (:class:`VerifiedFiles`), never the
files again: swapping a file between the check and the load changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Mapping

import attrs

from ._version import __version__
from .entities import Signature, utcnow
from .errors import AlreadyExistsError, IntegrityError, InvalidInputError, NotFoundError
from .interfaces import BackendContext, ModelFormat, validate_key
from .leftovers import writing

if TYPE_CHECKING:  # pragma: no cover
    from .plugins import PluginManager
    from .stack import Stack

__all__ = [
    "MANIFEST",
    "EXAMPLE",
    "MANIFEST_SCHEMA",
    "read_example",
    "BundleInfo",
    "LoadedBundle",
    "save_bundle",
    "load_bundle",
    "verify_bundle",
    "open_verified",
    "VerifiedFiles",
    "SPOOL_LIMIT",
    "read_manifest",
    "validate_manifest",
    "canonical_json",
    "sha256_file",
    "schema_path",
]

MANIFEST = "manifest.json"
#: Up to 1,000 rows of the example input as a V2 request body: warm-ups, smoke tests, drift references.
EXAMPLE = "example.json"
MANIFEST_SCHEMA = "mlops-bundle/1"
_CHUNK = 1 << 20
_MAX_MANIFEST_BYTES = 16 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def schema_path() -> Path:
    """Path of the published JSON Schema of the manifest."""
    return Path(__file__).with_name("schemas") / "bundle-manifest.schema.json"


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal manifests have equal bytes and digests."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex digest, size) of a file, streamed."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


@attrs.frozen
class BundleInfo:
    """A saved bundle: where it is, its manifest, and its digest (sha256 of the manifest bytes)."""

    path: Path
    manifest: Mapping[str, Any]
    digest: str

    @property
    def signature(self) -> Signature | None:
        sig = self.manifest.get("signature")
        return Signature.from_dict(sig) if sig else None


@attrs.frozen
class LoadedBundle:
    """A verified and loaded bundle."""

    model: Any
    manifest: Mapping[str, Any]
    signature: Signature | None
    path: Path
    digest: str


# ---------------------------------------------------------------- formats
def _plugins(plugins: "PluginManager | None", stack: "Stack | None") -> "PluginManager":
    if stack is not None:
        return stack.plugins
    from .plugins import get_plugin_manager

    return plugins or get_plugin_manager()


def _formats(plugins: "PluginManager | None" = None, stack: "Stack | None" = None) -> dict[str, ModelFormat]:
    """Every installed format, built with the stack's context (without a stack: the embedded ``./.mlops`` home)."""
    pm = _plugins(plugins, stack)
    out: dict[str, ModelFormat] = {}
    for name in pm.catalog.names("format"):
        ctx = stack.context(name) if stack is not None else BackendContext(home=Path(".mlops").absolute(),
                                                                           hooks=pm.hooks, name=name)
        out[name] = pm.build("format", name, {}, ctx)
    return out


def _pick_format(model: Any, name: str | None, plugins: "PluginManager | None" = None,
                 stack: "Stack | None" = None) -> ModelFormat:
    formats = _formats(plugins, stack)
    if name is not None:
        if name not in formats:
            raise InvalidInputError(f"no model format named {name!r}",
                                    hint=f"installed formats: {', '.join(sorted(formats)) or 'none'}")
        return formats[name]
    # Highest priority first (a framework's own format before the cloudpickle catch-all), ties by name.
    for fname in sorted(formats, key=lambda n: (-int(getattr(formats[n], "priority", 0)), n)):
        if formats[fname].can_save(model):
            return formats[fname]
    raise InvalidInputError(
        f"no installed model format can save a {type(model).__name__}",
        hint="give the object a predict() method, or install a format plugin for it (see `mlops plugins`)",
    )


def _requirements(modules: set[str]) -> list[dict[str, str]]:
    dists = metadata.packages_distributions()
    pins: dict[str, str] = {}
    for module in sorted(modules):
        for dist in dists.get(module, []):
            try:
                pins[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    return [{"name": name, "version": version} for name, version in sorted(pins.items(), key=lambda p: p[0].lower())]


def _model_class(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


# ------------------------------------------------------------------- save
def save_bundle(
    model: Any,
    path: str | os.PathLike[str],
    *,
    example: Any = None,
    signature: Signature | None = None,
    format: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    plugins: "PluginManager | None" = None,
    stack: "Stack | None" = None,
) -> BundleInfo:
    """Save ``model`` as a bundle folder at ``path`` and return its info.

    The folder appears complete or not at all: everything is written into a
    temporary sibling folder that is renamed into place at the end. Formats and
    the ``bundle_saved`` event come from ``stack`` (its context and its ``events``),
    else from ``plugins`` (default: the process-wide manager).
    """
    pm = _plugins(plugins, stack)
    events = stack.events if stack is not None else pm.hooks

    dest = Path(path)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise AlreadyExistsError(f"{dest} already exists and is not empty",
                                 hint="choose another path, or pass overwrite=True (--overwrite)")
    fmt = _pick_format(model, format, pm, stack)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    # Held until the rename: `mlops gc` never removes a temporary whose writer is alive.
    lock = writing(tmp)
    lock.__enter__()
    try:
        written = list(fmt.save(model, tmp))
        if signature is None:
            # What the saved files declare (an ONNX graph) wins over inference from an example.
            signature = fmt.signature(tmp)
        if signature is None and example is not None:
            from .signature import infer_signature

            signature = infer_signature(model, example)
        example_body = None
        if signature is not None and example is not None:
            from .signature import example_request

            example_body = example_request(example, signature)
        if example_body is not None and EXAMPLE not in written:
            (tmp / EXAMPLE).write_bytes(canonical_json(example_body))
            written.append(EXAMPLE)
        files = []
        for rel in sorted(set(written)):
            validate_key(rel)
            digest, size = sha256_file(tmp / rel)
            files.append({"path": rel, "sha256": digest, "size": size})
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "format": fmt.name,
            "model_class": _model_class(model),
            "signature": signature.to_dict() if signature else None,
            "example": EXAMPLE if EXAMPLE in written and example_body is not None else None,
            "files": files,
            "python": {"version": platform.python_version(), "implementation": sys.implementation.name},
            "requirements": _requirements(fmt.imported_modules(tmp)),
            "created_at": utcnow().isoformat(),
            "created_by": {"name": "mlops-core", "version": __version__},
            "metadata": dict(metadata or {}),
        }
        validate_manifest(manifest)
        raw = canonical_json(manifest)
        (tmp / MANIFEST).write_bytes(raw)
        _fsync_dir_files(tmp, [f["path"] for f in files] + [MANIFEST])
        if dest.exists():
            trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex}"
            dest.rename(trash)
            tmp.rename(dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock.__exit__(None, None, None)
    info = BundleInfo(path=dest, manifest=manifest, digest="sha256:" + hashlib.sha256(raw).hexdigest())
    events.bundle_saved(dest, manifest)
    return info


def _fsync_dir_files(folder: Path, names: list[str]) -> None:
    for name in names:
        fd = os.open(folder / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------- manifest
def validate_manifest(manifest: Any, where: str | None = None) -> dict[str, Any]:
    """Check the fields loading and storage rely on (the JSON Schema documents all of them).

    The one manifest check of the project: :mod:`mlops_core.artifacts` uses it for
    pushes and pulls too. Beyond the schema it enforces that no path is listed twice,
    none is ``manifest.json`` and none is both a file and the folder of another file.
    ``where`` (a path or a blob) is named in the error.
    """

    def bad(msg: str) -> IntegrityError:
        return IntegrityError(f"invalid bundle manifest{f' in {where}' if where else ''}: {msg}",
                              hint=f"the manifest must follow {schema_path().name}; re-save the bundle")

    if not isinstance(manifest, dict):
        raise bad("not a JSON object")
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise bad(f"unsupported schema {manifest.get('schema')!r} (this mlops-core reads {MANIFEST_SCHEMA})")
    if not isinstance(manifest.get("format"), str) or not manifest["format"]:
        raise bad("'format' must be a non-empty string")
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        raise bad("'files' must be a non-empty list")
    seen = set()
    for entry in files:
        if not isinstance(entry, dict):
            raise bad("every file entry must be an object")
        p, digest, size = entry.get("path"), entry.get("sha256"), entry.get("size")
        try:
            validate_key(p)
        except InvalidInputError:
            raise bad(f"unsafe file path {p!r}") from None
        if p == MANIFEST or p in seen:
            raise bad(f"file {p!r} listed twice or shadows the manifest")
        seen.add(p)
        if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            raise bad(f"file {p!r} has no valid sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"file {p!r} has no valid size")
    for p in seen:
        parent = p.rpartition("/")[0]
        while parent:
            if parent in seen:
                raise bad(f"{parent!r} is listed as a file and as the folder of {p!r}")
            parent = parent.rpartition("/")[0]
    example = manifest.get("example")
    if example is not None and (not isinstance(example, str) or example not in seen):
        raise bad(f"'example' must name a listed file, got {example!r}")
    if manifest.get("signature") is not None:
        try:
            Signature.from_dict(manifest["signature"])
        except (InvalidInputError, TypeError, ValueError, AttributeError) as exc:
            raise bad(f"bad signature: {exc}") from None
    return manifest


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """(manifest, digest) of a bundle folder, validated but with payload hashes not yet checked.

    The manifest is read once, through one descriptor; the digest is of those bytes.
    """
    folder = Path(path)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise NotFoundError(f"no bundle folder at {folder}", hint="save one with mlops_core.save(...)")
    if not os.path.lexists(mpath):
        raise IntegrityError(f"{folder} has no {MANIFEST}", hint="this is not a bundle; save the model again")
    fd, st = _open_regular(mpath, str(mpath))
    with os.fdopen(fd, "rb") as f:
        raw = f.read(min(st.st_size, _MAX_MANIFEST_BYTES) + 1)  # the descriptor's size, never a 16 MiB buffer
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{mpath} is larger than {_MAX_MANIFEST_BYTES} bytes", hint="this is not a bundle manifest")
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{mpath} is not valid JSON: {exc}", hint="the bundle is corrupt; save it again") from None
    return validate_manifest(manifest, str(mpath)), "sha256:" + hashlib.sha256(raw).hexdigest()


def _checked_manifest(folder: Path, expected_digest: str | None) -> tuple[dict[str, Any], str]:
    """The manifest and its digest, after checking the digest and that the folder holds no unlisted file."""
    manifest, digest = read_manifest(folder)
    if expected_digest is not None and digest != expected_digest:
        raise IntegrityError(f"bundle {folder} has manifest digest {digest}, expected {expected_digest}",
                             hint="the bundle was changed after it was registered; pull it again")
    listed = {f["path"] for f in manifest["files"]}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel != MANIFEST and rel not in listed:
                raise IntegrityError(f"bundle {folder} contains {rel!r}, which the manifest does not list",
                                     hint="remove the file or save the bundle again; nothing unverified is loaded")
    return manifest, digest


def verify_bundle(path: str | os.PathLike[str], *, expected_digest: str | None = None) -> BundleInfo:
    """Verify the manifest and every file (size, then sha256). Raises IntegrityError on any mismatch.

    A check only: whoever reads the files afterwards reads them again. To *load*
    verified bytes use :func:`open_verified` (what :func:`load_bundle` does).
    """
    folder = Path(path)
    manifest, digest = _checked_manifest(folder, expected_digest)
    for entry in manifest["files"]:
        what = f"{entry['path']!r} in {folder}"
        fd, st = _open_regular(folder / entry["path"], what)
        with os.fdopen(fd, "rb") as f:
            if st.st_size != entry["size"]:
                raise IntegrityError(f"{what} has size {st.st_size}, manifest says {entry['size']}",
                                     hint="the file was truncated or changed; save or pull the bundle again")
            h = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != entry["sha256"]:
            raise IntegrityError(f"{what} does not match its sha256 (tampered or corrupt)",
                                 hint="refusing to load it; save or pull the bundle again from a trusted source")
    return BundleInfo(path=folder, manifest=manifest, digest=digest)


def load_bundle(path: str | os.PathLike[str], *, expected_digest: str | None = None,
                plugins: "PluginManager | None" = None, stack: "Stack | None" = None) -> LoadedBundle:
    """Read and verify every file of the bundle, then load the model from those verified bytes.

    The format named in the manifest (built with ``stack``'s context when given) gets a
    :class:`VerifiedFiles` through :meth:`ModelFormat.load_verified`: nothing is read
    from the folder again.
    """
    manifest, _ = read_manifest(path)
    fmt = _formats(plugins, stack).get(manifest["format"])
    if fmt is None:
        raise InvalidInputError(f"bundle {path} uses format {manifest['format']!r}, which no installed plugin provides",
                                hint="install the plugin that provides it (see `mlops plugins`)")
    files = open_verified(path, expected_digest=expected_digest)
    try:
        model = fmt.load_verified(files)
    finally:
        files.close()
    signature = Signature.from_dict(files.manifest["signature"]) if files.manifest.get("signature") else None
    return LoadedBundle(model=model, manifest=files.manifest, signature=signature, path=Path(path),
                        digest=files.digest)


def read_example(info: BundleInfo | LoadedBundle) -> dict[str, Any] | None:
    """The stored example request (a V2 body) of a verified bundle, or None (its sha256 is checked again)."""
    name = info.manifest.get("example")
    if not name:
        return None
    entry = next((f for f in info.manifest["files"] if f["path"] == name), None)
    if entry is None:
        raise IntegrityError(f"the example {name!r} is not a listed file of {info.path}", hint="save the bundle again")
    data = _read_verified(Path(info.path) / name, entry["sha256"], entry["size"], f"{name!r} in {info.path}")
    if not isinstance(data, bytes):
        try:
            data.seek(0)
            data = data.read()
        finally:
            data.close()
    return json.loads(data.decode("utf-8"))


# --------------------------------------------------------- verified files
#: Files up to this size are held in memory once verified; bigger ones are spooled
#: into an unlinked temporary file that only this process's descriptor reaches.
SPOOL_LIMIT = 256 << 20


def _open_regular(path: Path, what: str) -> tuple[int, os.stat_result]:
    """One descriptor on ``path``: no symlink followed at the last step, a regular file (no FIFO that blocks)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise IntegrityError(f"{what} is missing", hint="the bundle is incomplete; save or pull it again") from None
    except OSError as exc:
        raise IntegrityError(f"cannot open {what}: {exc.strerror} (symbolic links are not followed)",
                             hint="bundle files must be regular files; save or pull the bundle again") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IntegrityError(f"{what} is not a regular file", hint="save or pull the bundle again")
    return fd, st


class _PreadReader(io.RawIOBase):
    """An independent, read-only view of a spooled file: its own position, positional reads."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._size, self._pos = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        if hasattr(os, "preadv"):  # straight into the caller's buffer: no 100 MiB intermediate copy
            got = os.preadv(self._fd, [memoryview(buffer).cast("B")[:n]], self._pos)
        else:  # pragma: no cover - platforms without preadv
            data = os.pread(self._fd, n, self._pos)
            buffer[: len(data)] = data
            got = len(data)
        self._pos += got
        return got

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class VerifiedFiles:
    """The files of a bundle as bytes that were hashed *as they were read*: what formats load from.

    Each listed file was opened once (``O_NOFOLLOW``, checked with ``fstat``) and
    hashed as it was read: into memory, or above :data:`SPOOL_LIMIT` into an unlinked
    private temporary file, or, when only this user can write the file, through the
    descriptor that stays open for the load (no copy). Whatever happens to the
    bundle folder afterwards (a file swapped, rewritten or replaced by a symlink),
    ``open`` and ``read_bytes`` return exactly the bytes that matched the manifest.
    Never reopen files under :attr:`source`: that is the hole this class closes.
    """

    def __init__(self, manifest: Mapping[str, Any], digest: str, source: Path,
                 contents: Mapping[str, "bytes | Any"], sizes: Mapping[str, int]) -> None:
        self.manifest = manifest
        self.digest = digest
        #: Where the bytes were read from; for messages only, never to read again.
        self.source = source
        self._contents = dict(contents)
        self._sizes = dict(sizes)
        self._materialized: Path | None = None

    def names(self) -> list[str]:
        """Relative paths of the verified files, sorted."""
        return sorted(self._contents)

    def size(self, name: str) -> int:
        return self._sizes[self._check(name)]

    def _check(self, name: str) -> str:
        if name not in self._contents:
            raise NotFoundError(f"{name!r} is not a file of the bundle at {self.source}",
                                hint=f"listed files: {', '.join(self.names())}")
        return name

    def open(self, name: str) -> IO[bytes]:
        """A new binary reader over the verified bytes of ``name`` (seekable, independent position)."""
        data = self._contents[self._check(name)]
        if isinstance(data, bytes):
            return io.BytesIO(data)  # shares the bytes object: no copy
        return io.BufferedReader(_PreadReader(data.fileno(), self._sizes[name]), buffer_size=_CHUNK)

    def in_memory(self, name: str) -> bool:
        """True when ``read_bytes(name)`` is free (the file is held in memory, not spooled to a private file)."""
        return isinstance(self._contents[self._check(name)], bytes)

    def read_bytes(self, name: str) -> bytes:
        data = self._contents[self._check(name)]
        if isinstance(data, bytes):
            return data
        with self.open(name) as f:
            return f.read()

    def materialize(self) -> Path:
        """A private folder (mode 0700, removed at exit) holding copies of the verified files.

        For libraries that only load from a path. The folder is created here, in
        the system's temporary folder, so nobody who can write the bundle folder
        can write it. Formats written against ``load(directory, manifest)`` get this.
        """
        if self._materialized is None:
            import atexit
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix=f"mlops-verified-{os.getpid()}-"))
            atexit.register(shutil.rmtree, folder, True)
            for name in self.names():
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.open(name) as src, open(target, "xb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
            (folder / MANIFEST).write_bytes(canonical_json(dict(self.manifest)))
            self._materialized = folder
        return self._materialized

    def close(self) -> None:
        """Release spooled files (in-memory bytes are freed with the object)."""
        for data in self._contents.values():
            if not isinstance(data, bytes):
                data.close()
        self._contents.clear()


class _HeldFd:
    """A descriptor kept open on a verified file that only its owner can change (see _read_verified)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int) -> None:
        os.lseek(self._fd, offset, os.SEEK_SET)

    def read(self) -> bytes:
        with os.fdopen(os.dup(self._fd), "rb") as f:
            return f.read()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _only_we_can_write(st: os.stat_result) -> bool:
    """The file is ours and nobody else may write it: its bytes cannot change behind our descriptor.

    Renames and unlinks in the folder do not touch an open inode; writing into it
    needs write permission on the inode itself, which only its owner (this user) has.
    A file someone else owns, or that group or others may write, is copied instead.
    """
    return hasattr(os, "geteuid") and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read_verified(path: Path, sha256: str, size: int, what: str) -> "bytes | Any":
    """The verified content of one file: bytes, or a held descriptor / private spool for big files.

    The hash is computed over exactly what the format will read: bytes read into
    memory, a private unlinked copy, or the file's own descriptor when only this
    user can write the file (then no copy is made at all).
    """
    fd, st = _open_regular(path, what)
    if st.st_size != size:
        os.close(fd)
        raise IntegrityError(f"{what} has size {st.st_size}, the manifest says {size}",
                             hint="the file was truncated or changed; save or pull the bundle again")
    h = hashlib.sha256()
    data: Any
    if size > _CHUNK and _only_we_can_write(st):
        data = _HeldFd(fd)
        total = 0
        try:
            while chunk := os.pread(fd, _CHUNK, total):
                total += len(chunk)
                if total > size:
                    break
                h.update(chunk)
        except BaseException:
            data.close()
            raise
    else:
        with os.fdopen(fd, "rb", buffering=0) as f:
            if size <= SPOOL_LIMIT:
                parts: list[bytes] = []
                total = 0
                # Ask for exactly the expected size (one read, no resize of a big buffer),
                # then one byte more: a longer file is as wrong as a shorter one.
                while total < size and (chunk := f.read(size - total)):
                    parts.append(chunk)
                    total += len(chunk)
                total += len(f.read(1))
                data = parts[0] if len(parts) == 1 else b"".join(parts)
                h.update(data)
            else:
                import tempfile

                data = tempfile.TemporaryFile()  # O_TMPFILE/unlinked: reachable only through this descriptor
                total = 0
                while chunk := f.read(_CHUNK):
                    total += len(chunk)
                    if total > size:
                        break
                    h.update(chunk)
                    data.write(chunk)
                data.flush()
    if total != size or h.hexdigest() != sha256:
        if not isinstance(data, bytes):
            data.close()
        raise IntegrityError(f"{what} does not match its sha256 (tampered or corrupt)",
                             hint="refusing to load it; save or pull the bundle again from a trusted source")
    return data


def open_verified(path: str | os.PathLike[str], *, expected_digest: str | None = None) -> VerifiedFiles:
    """Read the manifest and every listed file once, verifying as they are read; return the verified bytes.

    Raises IntegrityError on any mismatch, a missing or unlisted file, a symlink or a
    non-regular file. Nothing is loaded here: formats load from the result.
    """
    folder = Path(path)
    manifest, digest = _checked_manifest(folder, expected_digest)
    contents: dict[str, Any] = {}
    try:
        for entry in manifest["files"]:
            contents[entry["path"]] = _read_verified(folder / entry["path"], entry["sha256"], entry["size"],
                                                     f"{entry['path']!r} in {folder}")
    except BaseException:
        for data in contents.values():
            if not isinstance(data, bytes):
                data.close()
        raise
    return VerifiedFiles(manifest, digest, folder, contents, {f["path"]: f["size"] for f in manifest["files"]})
