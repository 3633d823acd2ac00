"""Model bundles: a folder with the model's files and a JSON manifest.

The manifest (``manifest.json``, schema ``mlops_core/schemas/bundle-manifest.schema.json``)
records the format, the V2 signature, every file with its sha256 and size, the
Python version, the packages the pickled model imports (pinned to the installed
versions), the creation time and the mlops-core version. Any language can read it.

Safety rule: :func:`load_bundle` verifies every hash *before* the format loads
anything, so a tampered pickle is refused before a single opcode runs.
Files are hashed as streams in 1 MiB chunks, never read whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import attrs

from ._version import __version__
from .entities import Signature, utcnow
from .errors import AlreadyExistsError, IntegrityError, InvalidInputError, NotFoundError
from .interfaces import BackendContext, ModelFormat, validate_key

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
    # A specific format wins over the catch-all cloudpickle one.
    for fname in sorted(formats, key=lambda n: n == "cloudpickle"):
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
    if signature is None and example is not None:
        from .signature import infer_signature

        signature = infer_signature(model, example)
    example_body = None
    if signature is not None and example is not None:
        from .signature import example_request

        example_body = example_request(example, signature)
    fmt = _pick_format(model, format, pm, stack)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        written = list(fmt.save(model, tmp))
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
def validate_manifest(manifest: Any) -> dict[str, Any]:
    """Check the fields loading relies on (the JSON Schema documents all of them)."""

    def bad(msg: str) -> IntegrityError:
        return IntegrityError(f"invalid bundle manifest: {msg}",
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
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise bad(f"file {p!r} has no valid sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"file {p!r} has no valid size")
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
    """(manifest, digest) of a bundle folder, validated but with payload hashes not yet checked."""
    folder = Path(path)
    mpath = folder / MANIFEST
    if not folder.is_dir():
        raise NotFoundError(f"no bundle folder at {folder}", hint="save one with mlops_core.save(...)")
    if not mpath.is_file():
        raise IntegrityError(f"{folder} has no {MANIFEST}", hint="this is not a bundle; save the model again")
    if mpath.stat().st_size > _MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{mpath} is larger than {_MAX_MANIFEST_BYTES} bytes", hint="this is not a bundle manifest")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{mpath} is not valid JSON: {exc}", hint="the bundle is corrupt; save it again") from None
    return validate_manifest(manifest), "sha256:" + hashlib.sha256(raw).hexdigest()


def verify_bundle(path: str | os.PathLike[str], *, expected_digest: str | None = None) -> BundleInfo:
    """Verify the manifest and every file (size, then sha256). Raises IntegrityError on any mismatch."""
    folder = Path(path)
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
    for entry in manifest["files"]:
        fpath = folder / entry["path"]
        if not fpath.is_file():
            raise IntegrityError(f"bundle {folder} is missing {entry['path']!r}", hint="the bundle is incomplete; save or pull it again")
        if fpath.stat().st_size != entry["size"]:
            raise IntegrityError(f"{entry['path']!r} in {folder} has size {fpath.stat().st_size}, manifest says {entry['size']}",
                                 hint="the file was truncated or changed; save or pull the bundle again")
        actual, _ = sha256_file(fpath)
        if actual != entry["sha256"]:
            raise IntegrityError(f"{entry['path']!r} in {folder} does not match its sha256 (tampered or corrupt)",
                                 hint="refusing to load it; save or pull the bundle again from a trusted source")
    return BundleInfo(path=folder, manifest=manifest, digest=digest)


def load_bundle(path: str | os.PathLike[str], *, expected_digest: str | None = None,
                plugins: "PluginManager | None" = None, stack: "Stack | None" = None) -> LoadedBundle:
    """Verify every file of the bundle, then load the model with the format named in the manifest."""
    info = verify_bundle(path, expected_digest=expected_digest)
    fmt = _formats(plugins, stack).get(info.manifest["format"])
    if fmt is None:
        raise InvalidInputError(f"bundle {info.path} uses format {info.manifest['format']!r}, which no installed plugin provides",
                                hint="install the plugin that provides it (see `mlops plugins`)")
    model = fmt.load(info.path, info.manifest)
    return LoadedBundle(model=model, manifest=info.manifest, signature=info.signature, path=info.path, digest=info.digest)


def read_example(info: BundleInfo | LoadedBundle) -> dict[str, Any] | None:
    """The stored example request (a V2 body) of a verified bundle, or None."""
    name = info.manifest.get("example")
    if not name:
        return None
    return json.loads((Path(info.path) / name).read_text(encoding="utf-8"))
