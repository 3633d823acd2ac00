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
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from .bundle import BundleInfo, load_bundle, read_manifest, save_bundle
from .entities import (AliasChange, Deployment, DeploymentAction, DeploymentSpec, ImageRef, Lineage, ModelURI, ModelVersion, Page,
                       RegisteredModel, utcnow, validate_alias, validate_model_name, validate_page_size,
                       validate_tag_key)
from .errors import NotFoundError
from .events import EventDispatcher
from .stack import Stack

__all__ = [
    "get_stack", "set_stack", "use_stack", "save", "register", "resolve", "resolve_bundle", "load",
    "get_model", "list_models", "list_versions", "set_alias", "delete_alias", "set_tag",
    "set_description", "delete_version", "delete_model", "build", "deploy", "rollback",
    "undeploy", "deployments", "deployment", "deployment_logs",
]

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
        path = s.home / "bundles" / f"{stamp}-{uuid.uuid4().hex[:8]}"
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
    for key in (tags or {}):
        validate_tag_key(key)
    if isinstance(source, BundleInfo):
        bundle_path = source.path
    elif isinstance(source, (str, os.PathLike)):
        bundle_path = Path(source)
    else:
        bundle_path = save(source, example=example, stack=s).path
    read_manifest(bundle_path)  # a clear error for a folder that is no bundle; push_bundle verifies every byte
    from .artifacts import push_bundle

    artifact = push_bundle(s.storage, bundle_path)
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
    """Resolve a model URI and return a verified local copy of its bundle (cached by digest)."""
    s = _stack(stack)
    version = s.registry.resolve(uri)
    from .artifacts import pull_bundle

    dest = s.home / "cache" / "bundles" / version.artifact.digest.replace(":", "-")
    path = pull_bundle(s.storage, version.artifact, dest)
    return version, path


def load(target: str | os.PathLike[str], *, stack: Stack | None = None) -> Any:
    """Load a model from a model URI or a bundle folder; every hash is verified first."""
    s = _stack(stack)
    if isinstance(target, str) and target.startswith("models:/"):
        version, path = resolve_bundle(target, stack=s)
        return load_bundle(path, expected_digest=version.artifact.digest, stack=s).model
    return load_bundle(target, stack=s).model


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
    change = s.registry.set_alias(validate_model_name(name), validate_alias(alias), int(version))
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
    _stack(stack).registry.set_tag(validate_model_name(name), validate_tag_key(key), value, version=version)


def set_description(name: str, description: str, *, version: int | None = None, stack: Stack | None = None) -> None:
    _stack(stack).registry.set_description(validate_model_name(name), description, version=version)


def delete_version(name: str, version: int, *, stack: Stack | None = None) -> None:
    s = _stack(stack)
    s.registry.delete_version(validate_model_name(name), int(version))
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
