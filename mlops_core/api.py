"""The Python API: one call per step of the main job, mirroring the CLI.

Each function validates its input, calls the stack's backend and fires the
matching event. They use the process-wide stack (``get_stack()``, built from the
stack file or the embedded defaults) unless you pass ``stack=``.

    import mlops_core as mlops
    v = mlops.register("iris", model, example=X[:5], alias="staging")
    model = mlops.load("models:/iris@staging")
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from .bundle import BundleInfo, load_bundle, read_manifest, save_bundle, verify_bundle
from .entities import (AliasChange, Deployment, DeploymentAction, DeploymentSpec, ImageRef, Lineage, ModelURI,
                       ModelVersion, Page, RegisteredModel, utcnow, validate_alias, validate_description,
                       validate_model_name, validate_page_size, validate_tag_key, validate_tag_value, validate_tags,
                       validate_version)
from .errors import AlreadyExistsError, IntegrityError, InvalidInputError, NotFoundError
from .events import EventDispatcher
from .stack import Stack

__all__ = [
    "get_stack", "set_stack", "use_stack", "copy_version", "save", "register", "resolve", "resolve_bundle", "load",
    "get_model", "list_models", "list_versions", "set_alias", "delete_alias", "set_tag",
    "set_description", "delete_version", "delete_model", "build", "deploy", "deployed", "rollback",
    "undeploy", "deployments", "deployment", "deployment_logs", "gc", "sign", "batch_score",
]

log = logging.getLogger("mlops_core.api")

_STACK: Stack | None = None
_STACK_LOCK = threading.Lock()


def get_stack() -> Stack:
    """The process-wide stack, loaded from the stack file (or defaults) on first use."""
    global _STACK
    with _STACK_LOCK:
        if _STACK is None:
            _STACK = Stack()
            atexit.register(_close_at_exit, _STACK)
        return _STACK


def _close_at_exit(stack: Stack) -> None:
    """Monitors flush their buffers (logs, profiles) before the process ends."""
    try:
        stack.close()
    except Exception:  # nothing useful to do at exit; never hide the real exit status
        pass


def set_stack(stack: Stack | None) -> None:
    """Use ``stack`` for the API calls of this process (None: reload from config on next use)."""
    global _STACK
    with _STACK_LOCK:
        if _STACK is not None and _STACK is not stack:
            _STACK.close()
        _STACK = stack


@contextlib.contextmanager
def use_stack(stack: Stack) -> Iterator[Stack]:
    """Use ``stack`` for API calls inside the block, then restore the previous one (closing neither)."""
    global _STACK
    with _STACK_LOCK:
        previous, _STACK = _STACK, stack
    try:
        yield stack
    finally:
        with _STACK_LOCK:
            _STACK = previous


def _stack(stack: Stack | None) -> Stack:
    return stack or get_stack()


def _events(s: Stack) -> EventDispatcher:
    """The stack's event dispatcher, its monitors started first (once) so they hear the event."""
    s.start_monitors()
    return s.events


# ------------------------------------------------------------------ bundles
def save(model: Any, path: str | os.PathLike[str] | None = None, *, example: Any = None,
         signature: Any = None, format: str | None = None, metadata: Mapping[str, Any] | None = None,
         overwrite: bool = False, stack: Stack | None = None) -> BundleInfo:
    """Save ``model`` as a bundle (default location: ``<home>/bundles/<time>-<id>``)."""
    s = _stack(stack)
    if path is None:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        path = s.ensure_home() / "bundles" / f"{stamp}-{uuid.uuid4().hex[:8]}"
    s.start_monitors()  # the stack's monitors hear bundle_saved too
    return save_bundle(model, path, example=example, signature=signature, format=format,
                       metadata=metadata, overwrite=overwrite, stack=s)


def register(name: str, source: Any, *, alias: str | None = None, description: str = "",
             tags: Mapping[str, str] | None = None, lineage: Lineage | None = None,
             example: Any = None, stack: Stack | None = None) -> ModelVersion:
    """Register a new version of ``name`` from a bundle (path or BundleInfo) or a model object.

    The bundle is verified, pushed to the stack's storage (content-addressed), then
    the version is committed to the registry; ``alias`` is pointed at it last.
    """
    s = _stack(stack)
    validate_model_name(name)
    if alias is not None:
        validate_alias(alias)
    validate_tags(tags)
    validate_description(description)
    if isinstance(source, BundleInfo):
        bundle_path = source.path
    elif isinstance(source, (str, os.PathLike)):
        bundle_path = Path(source)
    else:
        bundle_path = save(source, example=example, stack=s).path
    read_manifest(bundle_path)  # a clear error for a folder that is no bundle; push_bundle verifies every byte
    signing_key = s.config.security.get("signing_key")
    if s.config.security.get("require_signature") and not signing_key:
        from .errors import ConfigError

        raise ConfigError("this stack requires signed bundles ([security] require_signature) but has no signing_key",
                          hint="create a key with `mlops keys new PATH` and set [security] signing_key = PATH")
    from .artifacts import push_bundle

    artifact = push_bundle(s.storage, bundle_path)
    if signing_key:
        from .signing import SIGNATURE_TAG, sign_digest

        # Recorded with the version, in the same write: a signed version is never visible unsigned.
        tags = {**dict(tags or {}), SIGNATURE_TAG: sign_digest(signing_key, artifact.digest)}
    version = s.registry.create_version(name, artifact, description=description, tags=tags, lineage=lineage)
    _events(s).version_registered(version)
    if alias is not None:
        set_alias(name, alias, version.version, stack=s)
        version = s.registry.get_version(name, version.version)
    return version


def resolve(uri: str | ModelURI, *, stack: Stack | None = None) -> ModelVersion:
    """``models:/name``, ``models:/name/3`` or ``models:/name@alias`` -> ModelVersion."""
    return _stack(stack).registry.resolve(uri)


def resolve_bundle(uri: str | ModelURI, *, stack: Stack | None = None) -> tuple[ModelVersion, Path]:
    """Resolve a model URI and return a verified local copy of its bundle (cached by digest).

    The copy is checked (every file's sha256) before it is returned; a corrupt or
    tampered cached copy is discarded and pulled again from the stack's storage.
    """
    s = _stack(stack)
    version = _resolve_trusted(s, uri)
    path = _cached_bundle(s, version, lambda p: verify_bundle(p, expected_digest=version.artifact.digest))
    return version, path[0]


def _resolve_trusted(s: Stack, uri: str | ModelURI) -> ModelVersion:
    """Resolve ``uri``; when the stack requires signatures, check the version's before any byte is used."""
    version = s.registry.resolve(uri)
    if s.config.security.get("require_signature"):
        from .signing import require_signature

        require_signature(s.config.security, version.tags, version.artifact.digest, version.uri)
    return version


def sign(uri: str | ModelURI, *, key: str | os.PathLike[str] | None = None, stack: Stack | None = None) -> ModelVersion:
    """Sign an already registered version with ``key`` (default: ``[security] signing_key``)."""
    from .signing import SIGNATURE_TAG, sign_digest

    s = _stack(stack)
    key = key or s.config.security.get("signing_key")
    if not key:
        from .errors import ConfigError

        raise ConfigError("no signing key given", hint="pass --key PATH or set [security] signing_key")
    version = s.registry.resolve(uri)
    s.registry.set_tag(version.model, SIGNATURE_TAG, sign_digest(key, version.artifact.digest), version=version.version)
    return s.registry.get_version(version.model, version.version)


def _cache_dir(s: Stack, version: ModelVersion) -> Path:
    cache = s.ensure_home() / "cache"
    if not cache.is_dir():
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)  # written by the loader only
    return cache / "bundles" / version.artifact.digest.replace(":", "-")


def _discard(path: Path) -> None:
    """Move a cached folder out of the way in one rename, then delete it (readers never see half of it)."""
    trash = path.parent / f".{path.name}.trash-{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _cached_bundle(s: Stack, version: ModelVersion, use: Callable[[Path], Any]) -> tuple[Path, Any]:
    """``use(path)`` on the local copy of ``version``'s bundle, repairing the cache once if it is corrupt.

    The cache is never trusted: ``use`` verifies (``load_bundle`` reads and checks
    every byte it loads). On IntegrityError, or a cache folder that holds something
    else, the copy is discarded and pulled again from storage; a second failure is
    the storage's, and is raised.
    """
    from .artifacts import pull_bundle

    dest = _cache_dir(s, version)
    for attempt in (1, 2):
        try:
            path = pull_bundle(s.storage, version.artifact, dest)
            return path, use(path)
        except (IntegrityError, AlreadyExistsError) as exc:
            if attempt == 2:
                raise
            log.warning("the cached copy of %s at %s is corrupt (%s); pulling it again",
                        version.uri, dest, getattr(exc, "message", exc))
            _discard(dest)
    raise AssertionError("unreachable")  # pragma: no cover


def load(target: str | os.PathLike[str], *, stack: Stack | None = None) -> Any:
    """Load a model from a model URI or a bundle folder; every hash is verified first.

    The model is built from the bytes that were verified, never from a second read
    of the files (see :func:`mlops_core.bundle.open_verified`).
    """
    s = _stack(stack)
    if isinstance(target, str) and target.startswith("models:/"):
        version = _resolve_trusted(s, target)
        _path, loaded = _cached_bundle(s, version, lambda p: load_bundle(
            p, expected_digest=version.artifact.digest, stack=s))
        return loaded.model
    if s.config.security.get("require_signature"):
        raise IntegrityError(f"{target} is a bundle folder, which carries no signature, and this stack requires one",
                             hint="register it and load it as models:/NAME/VERSION, where its signature is checked")
    return load_bundle(target, stack=s).model


# -------------------------------------------------------------------- batch
def batch_score(uri: str | ModelURI, input: str, output: str, *, engine: str | None = None,
                engine_config: Mapping[str, Any] | None = None, columns: Mapping[str, str] | None = None,
                keys: Any = (), overwrite: bool = False, max_retries: int = 2, progress: Any = None,
                storage_options: Mapping[str, Any] | None = None, bundle_url: str | None = None,
                stack: Stack | None = None, **options: Any) -> Any:
    """Score every row of a dataset with a registered model; returns a :class:`~mlops_core.batch.types.BatchResult`.

    :param uri: ``models:/name@alias`` (or ``/name/3``, or a bundle folder); its hashes
        (and signature, when the stack requires one) are verified before anything runs.
    :param input: an fsspec URL or path of one Parquet/CSV file or a folder of them
        (recursive; hive ``k=v/`` folders kept in the output paths).
    :param output: the folder receiving one output file per input file, written atomically.
    :param engine: ``local``, ``dask``, ``ray``, ``spark``... (default: the stack's ``[batch]``).
    :param engine_config: the engine's settings (``address``, ``workers``...).
    :param columns: input column -> model input name (default: by name, or the non-key columns in order).
    :param keys: input columns copied next to the predictions (``"id"`` or ``["id", "day"]``).
    :param overwrite: score every partition again (default: skip those whose output exists).
    :param max_retries: how many times a failed partition is run again.
    :param progress: True for a bar on stderr when it is a terminal, or a callable taking
        each :class:`~mlops_core.batch.types.PartitionResult`.
    :param storage_options: fsspec options for the input and output URLs (credentials, endpoint).
    :param bundle_url: a folder URL every worker can read (``s3://bucket/bundles``): the
        verified bundle is copied there once; default: the local verified copy (one machine).
    :param options: more :class:`~mlops_core.batch.types.BatchOptions` fields (``input_format``,
        ``output_format``, ``header``, ``batch_rows``, ``sample_rows``).

    Failed partitions (after retries) are in ``result.failed``; ``result.ok`` is False then.
    """
    from .batch.job import run_job
    from .batch.types import BatchOptions

    valid = {f.name for f in attrs.fields(BatchOptions)} - {"columns", "keys"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise InvalidInputError(f"unknown batch option(s) {', '.join(unknown)}",
                                hint=f"valid options: {', '.join(sorted(valid))}")
    try:
        opts = BatchOptions(columns=columns or {}, keys=keys, **options)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid batch options: {exc}") from None
    return run_job(_stack(stack), str(uri), str(input), str(output), engine=engine, engine_config=engine_config,
                   options=opts, overwrite=overwrite, max_retries=max_retries, progress=progress,
                   storage_options=storage_options, bundle_url=bundle_url)


# ----------------------------------------------------------------- registry
def get_model(name: str, *, stack: Stack | None = None) -> RegisteredModel:
    return _stack(stack).registry.get_model(validate_model_name(name))


def list_models(*, name_contains: str | None = None, tags: Mapping[str, str] | None = None,
                page_size: int = 100, page_token: str | None = None, stack: Stack | None = None) -> Page[RegisteredModel]:
    validate_page_size(page_size)
    return _stack(stack).registry.search_models(name_contains=name_contains, tags=tags,
                                                page_size=page_size, page_token=page_token)


def list_versions(name: str | None = None, *, tags: Mapping[str, str] | None = None, page_size: int = 100,
                  page_token: str | None = None, stack: Stack | None = None) -> Page[ModelVersion]:
    validate_page_size(page_size)
    if name is not None:
        validate_model_name(name)
    return _stack(stack).registry.search_versions(name, tags=tags, page_size=page_size, page_token=page_token)


def set_alias(name: str, alias: str, version: int, *, stack: Stack | None = None) -> AliasChange:
    s = _stack(stack)
    change = s.registry.set_alias(validate_model_name(name), validate_alias(alias), validate_version(version))
    _events(s).alias_changed(change)
    return change


def delete_alias(name: str, alias: str, *, stack: Stack | None = None) -> AliasChange:
    s = _stack(stack)
    change = s.registry.delete_alias(validate_model_name(name), validate_alias(alias))
    _events(s).alias_changed(change)
    return change


def set_tag(name: str, key: str, value: str | None, *, version: int | None = None,
            stack: Stack | None = None) -> None:
    """Set a tag on a model (or one version); ``value=None`` removes it."""
    if value is not None:
        validate_tag_value(value, f"value of tag {key!r}")
    if version is not None:
        validate_version(version)
    _stack(stack).registry.set_tag(validate_model_name(name), validate_tag_key(key), value, version=version)


def set_description(name: str, description: str, *, version: int | None = None, stack: Stack | None = None) -> None:
    if version is not None:
        validate_version(version)
    _stack(stack).registry.set_description(validate_model_name(name), validate_description(description),
                                           version=version)


def delete_version(name: str, version: int, *, stack: Stack | None = None) -> None:
    s = _stack(stack)
    s.registry.delete_version(validate_model_name(name), validate_version(version))
    _events(s).version_deleted(name, int(version))


def delete_model(name: str, *, stack: Stack | None = None) -> None:
    s = _stack(stack)
    versions = [v.version for v in _all_versions(s, name)]
    s.registry.delete_model(validate_model_name(name))
    for number in versions:
        _events(s).version_deleted(name, number)


def _all_versions(s: Stack, name: str) -> list[ModelVersion]:
    out: list[ModelVersion] = []
    token = None
    while True:
        page = s.registry.search_versions(name, page_size=1000, page_token=token)
        out.extend(page.items)
        token = page.next_token
        if not token:
            return out


def copy_version(uri: str | ModelURI, *, source: Stack, target: Stack, name: str | None = None,
                 copy_aliases: bool = True) -> ModelVersion:
    """Copy one version from the ``source`` stack to the ``target`` stack (``mlops models copy``).

    The bundle is verified on the way out (every hash) and on the way in (the target's
    digest must equal the source's); description, tags and lineage travel with it, a tag
    ``mlops.copied_from`` records where it came from, and the source aliases that point at
    the version are pointed at the copy. Copying again is a no-op: a target version with
    the same artifact digest is reused, so a failed copy can simply be retried.
    """
    from .artifacts import push_bundle
    from .errors import IntegrityError

    version, path = resolve_bundle(uri, stack=source)
    name = validate_model_name(name or version.model)
    existing = [v for v in _safe_versions(target, name) if v.artifact.digest == version.artifact.digest]
    if existing:
        copied = existing[0]
    else:
        artifact = push_bundle(target.storage, path)
        if artifact.digest != version.artifact.digest:
            raise IntegrityError(f"the copy of {version.uri} has digest {artifact.digest}, the source "
                                 f"{version.artifact.digest}", hint="the source bundle changed while copying; retry")
        origin = f"{source.config.profile or source.config.source}:{version.uri}"
        copied = target.registry.create_version(name, artifact, description=version.description,
                                                tags={**version.tags, "mlops.copied_from": origin},
                                                lineage=version.lineage)
        _events(target).version_registered(copied)
    if copy_aliases:
        for alias in version.aliases:
            if alias not in copied.aliases:
                set_alias(name, alias, copied.version, stack=target)
    return target.registry.get_version(name, copied.version)


def _safe_versions(s: Stack, name: str) -> list[ModelVersion]:
    try:
        return _all_versions(s, name)
    except NotFoundError:
        return []


# ------------------------------------------------------ builds and deploys
def build(uri: str | ModelURI, *, push: bool = False, stack: Stack | None = None) -> ImageRef:
    """Build the stack's runnable artifact (an OCI image by default) for a version."""
    s = _stack(stack)
    version, path = resolve_bundle(uri, stack=s)
    image = s.builder.build(version, path, push=push)
    _events(s).image_built(version, image)
    return image


def deploy(uri: str | ModelURI, *, name: str | None = None, wait: float = 60.0,
           options: Mapping[str, Any] | None = None, stack: Stack | None = None) -> Deployment:
    """Deploy a version; deploying to an existing name is a rolling update with no failed request."""
    return _deploy(_stack(stack), uri, name, wait, options, action=None)


@contextlib.contextmanager
def deployed(uri: str | ModelURI, *, name: str | None = None, wait: float = 60.0,
             options: Mapping[str, Any] | None = None, stack: Stack | None = None) -> Iterator[Deployment]:
    """Deploy for the length of a ``with`` block, then undeploy, even when the block raises.

    ``with mlops.deployed("models:/iris@production") as dep: ...`` is the safe shape for scripts,
    notebooks and tests: nothing is left running when something inside fails. Updates and
    rollbacks inside the block act on the same deployment name, which is removed at the end.
    """
    s = _stack(stack)
    dep = deploy(uri, name=name, wait=wait, options=options, stack=s)
    try:
        yield dep
    finally:
        try:
            undeploy(dep.name, stack=s)
        except NotFoundError:  # already removed inside the block
            pass


def _deploy(s: Stack, uri: str | ModelURI, name: str | None, wait: float,
            options: Mapping[str, Any] | None, action: DeploymentAction | None) -> Deployment:
    version, path = resolve_bundle(uri, stack=s)
    name = validate_model_name(name or version.model)
    existed = _exists(s, name)
    image = s.builder.build(version, path, push=True) if s.deployer.requires_image else None
    spec = DeploymentSpec(name=name, model=version.model, version=version.version, bundle_path=str(path),
                          image=image, options=dict(options or {}))
    deployment = s.deployer.deploy(spec, wait=wait)
    _events(s).deployment_changed(deployment, action or ("updated" if existed else "deployed"))
    return deployment


def _exists(s: Stack, name: str) -> bool:
    try:
        s.deployer.get(name)
        return True
    except NotFoundError:
        return False


def rollback(name: str, *, wait: float = 60.0, stack: Stack | None = None) -> Deployment:
    """Redeploy the version that ran before the last update (again: toggles back)."""
    s = _stack(stack)
    current = s.deployer.get(validate_model_name(name))
    if current.previous_version is None:
        raise NotFoundError(f"deployment {name!r} has no previous version to roll back to",
                            hint="rollback needs at least one update; deploy another version first")
    return _deploy(s, f"models:/{current.model}/{current.previous_version}", name, wait,
                   current.options, action="rolled_back")


def undeploy(name: str, *, stack: Stack | None = None) -> None:
    s = _stack(stack)
    current = s.deployer.get(validate_model_name(name))
    s.deployer.delete(name)
    _events(s).deployment_changed(current, "deleted")


def deployments(*, stack: Stack | None = None) -> list[Deployment]:
    return list(_stack(stack).deployer.list())


def deployment(name: str, *, stack: Stack | None = None) -> Deployment:
    return _stack(stack).deployer.get(validate_model_name(name))


def deployment_logs(name: str, *, tail: int = 100, stack: Stack | None = None) -> str:
    return _stack(stack).deployer.logs(validate_model_name(name), tail=tail)


# ---------------------------------------------------------------- leftovers
def gc(*, older_than: float | str | None = None, dry_run: bool = False, stack: Stack | None = None) -> list[Any]:
    """Find (and unless ``dry_run`` remove) temporaries that killed writers left behind.

    Looks in the stack's home (bundle folders being saved, pulled or replaced), in
    the stack's storage (``ArtifactStore.find_leftovers``) and in the system's
    temporary folder (private copies of verified bundles of processes that died).
    Only temporaries older than ``older_than`` (default ``[gc] older_than`` of the
    stack, else one hour) whose writer no longer holds their lock are touched.
    Returns the :class:`~mlops_core.leftovers.Leftover` list.
    """
    from .leftovers import DEFAULT_OLDER_THAN, find_leftovers, parse_age, remove

    s = _stack(stack)
    age = parse_age(older_than if older_than is not None else s.config.gc.get("older_than", DEFAULT_OLDER_THAN))
    found = {lo.where: (lo, None) for lo in find_leftovers(s.home, age)}
    for lo in s.storage.find_leftovers(age):
        found.setdefault(lo.where, (lo, s.storage))
    for lo in _dead_verified_copies(age):
        found.setdefault(lo.where, (lo, "verified"))
    if not dry_run:
        for lo, owner in found.values():
            if owner is None:
                remove(lo)
            elif owner == "verified":
                shutil.rmtree(lo.where, ignore_errors=True)
            else:
                owner.remove_leftover(lo)
    return [lo for lo, _ in sorted(found.values(), key=lambda item: item[0].where)]


def _dead_verified_copies(older_than: float) -> list[Any]:
    """``mlops-verified-<pid>-*`` folders (``VerifiedFiles.materialize``) of processes that are gone."""
    import re
    import tempfile
    import time

    from .leftovers import Leftover, _tree_stats

    out = []
    for folder in Path(tempfile.gettempdir()).glob("mlops-verified-*"):
        m = re.fullmatch(r"mlops-verified-([0-9]+)-.*", folder.name)
        if not m or not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its process is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        size, newest = _tree_stats(folder)
        if time.time() - newest >= older_than:
            out.append(Leftover(str(folder), "verified copy", size, round(time.time() - newest, 1)))
    return out
