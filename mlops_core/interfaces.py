"""Abstract base classes: the few primitive methods a backend must implement.

Each component has a *small required surface* (the abstract methods) and a rich
*derived surface* built on it here or in the core workflows (the fsspec idea).
Backends are built by the factory a plugin registers, as ``factory(config, context)``.
Nothing here imports anything heavy.
"""

from __future__ import annotations

import abc
import posixpath
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, Sequence

import attrs

from .entities import (
    AliasChange,
    PageFilters,
    decode_page_token,
    encode_page_token,
    validate_alias,
    validate_model_name,
    validate_page_size,
    validate_tag_key,
    validate_tags,
    validate_description,
    validate_tag_value,
    validate_text,
    validate_version_number,
    ArtifactRef,
    Deployment,
    DeploymentSpec,
    ImageRef,
    Lineage,
    ModelURI,
    ModelVersion,
    Page,
    RegisteredModel,
    Signature,
)
from .errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from .batch.types import PartitionResult, PartitionTask
    from .events import EventDispatcher
    from .leftovers import Leftover

__all__ = [
    "BackendContext",
    "Backend",
    "ArtifactStore",
    "ModelRegistry",
    "ImageBuilder",
    "Deployer",
    "Monitor",
    "ModelFormat",
    "BatchEngine",
    "StackView",
    "validate_key",
]


class StackView(Protocol):
    """What a backend may use of the stack that built it (``context.stack``); a Stack is one.

    A Protocol, so this module needs no import of :mod:`mlops_core.stack` (which imports it).
    """

    @property
    def home(self) -> Path: ...

    @property
    def storage(self) -> "ArtifactStore": ...

    @property
    def registry(self) -> "ModelRegistry": ...

    @property
    def events(self) -> "EventDispatcher": ...


@attrs.frozen
class BackendContext:
    """What the core hands every backend factory besides its config.

    ``home`` is the stack's local folder (``./.mlops`` by default) where embedded
    backends keep state; ``hooks`` lets a backend fire events; ``name`` is the
    backend name chosen in the stack; ``base_dir`` is the folder relative paths in
    settings are taken from: the stack file's folder (so ``mlops`` run from a
    subfolder opens the same files), or the current folder without a stack file.
    """

    home: Path
    hooks: "EventDispatcher"
    name: str
    base_dir: Path = attrs.field(factory=Path.cwd)
    #: The stack building this backend, when there is one: lets a monitor write to the
    #: stack's storage or read its registry (other components are built on first use).
    stack: "StackView | None" = attrs.field(default=None, eq=False, repr=False)
    #: The stack file the settings came from, for backends that start processes which
    #: must load the same stack (pass it as MLOPS_CONFIG); None without a stack file.
    config_file: Path | None = None

    def resolve_path(self, value: "str | Path") -> Path:
        """A setting's path made absolute against ``base_dir`` (``~`` expanded)."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path


class Backend(abc.ABC):
    """Common to every backend: its config and context, a health check for ``mlops doctor`` and a close.

    The default constructor is the factory signature, ``Backend(config, context)``:
    a backend class needs no ``__init__`` and no separate factory function, and
    reads its settings from ``self.config`` and its stack from ``self.context``.
    """

    def __init__(self, config: Any = None, context: "BackendContext | None" = None) -> None:
        #: The validated settings (an instance of the config class the backend declared, else a dict).
        self.config = config
        #: Where the backend runs: the stack's home, base folder, events and the stack itself.
        self.context = context

    def check(self) -> str:
        """Return a one-line description if the backend is usable; raise MlopsError if not."""
        return "ok"

    def close(self) -> None:
        """Release connections and files. Called when the stack is closed."""

    def programs(self) -> Sequence[Sequence[str]]:
        """Command lines this backend will run, as its settings make them (``mlops stack show``, ``doctor``).

        A stack file can name programs (an interpreter, extra arguments); listing them
        lets people see what a stack makes them run before they run it. Default: none.
        """
        return ()


# --------------------------------------------------------------------- storage
_BAD_KEY = re.compile(r"(^/)|(\\)|(^|/)\.\.?(/|$)|[\x00-\x1f]|//")


def validate_key(key: str) -> str:
    """Refuse keys that could escape the store root (absolute, '..', '.', backslash, control chars)."""
    if not isinstance(key, str) or not key or _BAD_KEY.search(key) or posixpath.normpath(key) != key:
        raise InvalidInputError(
            f"unsafe artifact key {key!r}",
            hint="keys are relative POSIX paths without '.', '..', '//', backslashes or control characters",
        )
    return key


class ArtifactStore(Backend):
    """A blob store addressed by relative keys.

    Implement ``_write`` (atomic: readers never see a partial object), ``_open``,
    ``_exists``, ``_list`` and ``_delete``. The public methods validate keys first,
    so a backend never sees ``../`` tricks. Bundles are stored content-addressed on
    top of this by :mod:`mlops_core.artifacts`.
    """

    #: Root URI of the store, recorded in ArtifactRef.uri.
    uri: str = ""

    @abc.abstractmethod
    def _write(self, key: str, source: IO[bytes]) -> None:
        """Store the bytes of ``source`` (read as a stream) under ``key``, atomically."""

    @abc.abstractmethod
    def _open(self, key: str) -> IO[bytes]:
        """Open ``key`` for binary streaming reads; raise NotFoundError when absent."""

    @abc.abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _list(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with ``prefix`` (a folder-like prefix, '' for all)."""

    @abc.abstractmethod
    def _delete(self, key: str) -> None:
        """Remove ``key``; absent keys are not an error."""

    # derived, validated surface -------------------------------------------
    def write(self, key: str, source: IO[bytes]) -> None:
        self._write(validate_key(key), source)

    def open(self, key: str) -> IO[bytes]:
        return self._open(validate_key(key))

    def exists(self, key: str) -> bool:
        return self._exists(validate_key(key))

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            validate_key(prefix.rstrip("/"))
        return sorted(self._list(prefix))

    def delete(self, key: str) -> None:
        self._delete(validate_key(key))

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    # optional: leftovers of killed writers (``mlops gc``) ---------------------
    def find_leftovers(self, older_than: float) -> "list[Leftover]":
        """Temporaries of writes that never finished, older than ``older_than`` seconds and not in use.

        Stores whose writes leave nothing behind when killed (object stores publish
        whole objects) keep this default: none. See :mod:`mlops_core.leftovers`.
        """
        return []

    def remove_leftover(self, leftover: "Leftover") -> None:
        """Delete one temporary returned by :meth:`find_leftovers`."""
        raise NotImplementedError(f"{type(self).__name__} reports no leftovers to remove")

    def write_bytes(self, key: str, data: bytes) -> None:
        import io

        self.write(key, io.BytesIO(data))


# -------------------------------------------------------------------- registry
def _check_artifact(artifact: Any) -> ArtifactRef:
    if not isinstance(artifact, ArtifactRef) or not isinstance(artifact.uri, str) or not isinstance(artifact.digest, str):
        raise InvalidInputError(
            f"artifact must be a mlops_core.entities.ArtifactRef with string uri and digest, not {artifact!r}",
            hint="store the bundle first; the artifact store returns the ArtifactRef to register",
        )
    return artifact


def _check_lineage(lineage: Any) -> Lineage:
    if lineage is None:
        return Lineage()
    if not isinstance(lineage, Lineage):
        raise InvalidInputError(f"lineage must be a mlops_core.entities.Lineage, not {type(lineage).__name__}")
    return lineage


def _bad_token(token: Any) -> InvalidInputError:
    return InvalidInputError(f"invalid page token {token!r}", hint="pass back a next_token unchanged")


#: Public method -> the primitive a backend implements (the template layer's map).
REGISTRY_PRIMITIVES: Mapping[str, str] = {
    "create_version": "_create_version", "get_model": "_get_model", "search_models": "_search_models",
    "get_version": "_get_version", "search_versions": "_search_versions", "set_alias": "_set_alias",
    "delete_alias": "_delete_alias", "get_alias": "_get_alias", "set_tag": "_set_tag",
    "set_description": "_set_description", "delete_version": "_delete_version", "delete_model": "_delete_model",
}


class ModelRegistry(Backend):
    """Named models with monotonically numbered, immutable versions, aliases and tags.

    A template (like :class:`ArtifactStore`): the public methods validate every
    argument once (names, aliases, tag keys and values, version numbers, page
    sizes), decode and check page tokens, and then call the ``_primitive``
    method of the same name, which a backend implements and which only ever sees
    valid input. Page tokens are made here, bound to the filters of the listing
    they came from; a backend's ``_search_*`` only returns the items after a
    keyset position.

    Contract every implementation must keep (the conformance kit checks it):

    * versions of one model are numbered 1, 2, 3... with no gap and no duplicate,
      even under concurrent writers in several processes;
    * a deleted version's number is never reused, not even after ``delete_model``
      and re-creation, so ``models:/x/1`` never means two different artifacts;
    * an alias points at exactly one existing version and goes with it on delete;
    * a version's artifact never changes (tags and description may);
    * listings are ordered (models by name, byte order; versions by model, then
      version descending), ``name_contains`` is case-sensitive, ``page_size`` is
      1..``MAX_PAGE_SIZE``, and page tokens are opaque strings valid only with the
      same filters (InvalidInputError otherwise);
    * an unknown model raises NotFoundError, also from ``search_versions(model)``.

    Registries written before the template layer override the public methods
    themselves; they keep working unchanged (their primitives are never called),
    and migrate by renaming each method to its ``_primitive`` and dropping their
    own input checks (see ``docs/plugin-guide.md``).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for public, primitive in REGISTRY_PRIMITIVES.items():
            overrides_public = getattr(cls, public) is not getattr(ModelRegistry, public)
            if overrides_public and getattr(getattr(cls, primitive), "__isabstractmethod__", False):
                setattr(cls, primitive, _legacy_primitive(public, primitive))

    # primitives: what a backend implements -------------------------------
    @abc.abstractmethod
    def _create_version(self, model: str, artifact: ArtifactRef, description: str, tags: Mapping[str, str],
                        lineage: Lineage) -> ModelVersion:
        """Commit the next version of ``model`` (creating the model if needed)."""

    @abc.abstractmethod
    def _get_model(self, model: str) -> RegisteredModel:
        """The model, or NotFoundError."""

    @abc.abstractmethod
    def _search_models(self, name_contains: str | None, tags: Mapping[str, str], limit: int,
                       after: str | None) -> Sequence[RegisteredModel]:
        """Up to ``limit`` models ordered by name, with names after ``after`` (None: from the start).

        ``name_contains`` is a case-sensitive substring (None or '' match all); ``tags`` must all match.
        """

    @abc.abstractmethod
    def _get_version(self, model: str, version: int) -> ModelVersion:
        """The version, or NotFoundError (for an unknown model or version)."""

    @abc.abstractmethod
    def _search_versions(self, model: str | None, tags: Mapping[str, str], limit: int,
                         after: tuple[str, int] | None) -> Sequence[ModelVersion]:
        """Up to ``limit`` versions ordered by (model, version descending), after the key ``after``.

        ``after`` is the (model, version) of the last item of the previous page:
        return keys with a greater model, or the same model and a smaller version.
        An unknown ``model`` raises NotFoundError.
        """

    @abc.abstractmethod
    def _set_alias(self, model: str, alias: str, version: int) -> AliasChange: ...

    @abc.abstractmethod
    def _delete_alias(self, model: str, alias: str) -> AliasChange: ...

    @abc.abstractmethod
    def _get_alias(self, model: str, alias: str) -> ModelVersion: ...

    @abc.abstractmethod
    def _set_tag(self, model: str, key: str, value: str | None, version: int | None) -> None:
        """Set (or with ``value=None`` remove) a tag on the model, or on one version."""

    @abc.abstractmethod
    def _set_description(self, model: str, description: str, version: int | None) -> None: ...

    @abc.abstractmethod
    def _delete_version(self, model: str, version: int) -> None:
        """Delete one version (its aliases go with it); the number is never reused."""

    @abc.abstractmethod
    def _delete_model(self, model: str) -> None: ...

    # the validated, public surface ------------------------------------------
    def create_version(
        self,
        model: str,
        artifact: ArtifactRef,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        lineage: Lineage | None = None,
    ) -> ModelVersion:
        """Create the next version of ``model`` (creating the model if needed)."""
        return self._create_version(validate_model_name(model), _check_artifact(artifact),
                                    validate_description(description), validate_tags(tags),
                                    _check_lineage(lineage))

    def get_model(self, model: str) -> RegisteredModel:
        """Return the model or raise NotFoundError."""
        return self._get_model(validate_model_name(model))

    def search_models(
        self,
        *,
        name_contains: str | None = None,
        tags: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[RegisteredModel]:
        """Models ordered by name; ``tags`` must all match exactly."""
        if name_contains is not None:
            validate_text(name_contains, "name_contains")
        tags = validate_tags(tags)
        validate_page_size(page_size)
        filters = PageFilters({"name_contains": name_contains or None, "tags": tags})
        after = None
        if page_token is not None:
            position = decode_page_token(page_token, "models", filters)
            if len(position) != 1 or not isinstance(position[0], str):
                raise _bad_token(page_token)
            after = position[0]
        items = list(self._search_models(name_contains or None, tags, page_size + 1, after))
        token = encode_page_token("models", [items[page_size - 1].name], filters) if len(items) > page_size else None
        return Page(items=items[:page_size], next_token=token)

    def get_version(self, model: str, version: int) -> ModelVersion:
        return self._get_version(validate_model_name(model), validate_version_number(version))

    def search_versions(
        self,
        model: str | None = None,
        *,
        tags: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[ModelVersion]:
        """Versions ordered by (model, version descending)."""
        if model is not None:
            validate_model_name(model)
        tags = validate_tags(tags)
        validate_page_size(page_size)
        filters = PageFilters({"model": model, "tags": tags})
        after = None
        if page_token is not None:
            position = decode_page_token(page_token, "versions", filters)
            if len(position) != 2 or not isinstance(position[0], str) or isinstance(position[1], bool) \
                    or not isinstance(position[1], int):
                raise _bad_token(page_token)
            after = (position[0], position[1])
        items = list(self._search_versions(model, tags, page_size + 1, after))
        last = items[page_size - 1] if len(items) > page_size else None
        token = encode_page_token("versions", [last.model, last.version], filters) if last is not None else None
        return Page(items=items[:page_size], next_token=token)

    def set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        return self._set_alias(validate_model_name(model), validate_alias(alias), validate_version_number(version))

    def delete_alias(self, model: str, alias: str) -> AliasChange:
        return self._delete_alias(validate_model_name(model), validate_alias(alias))

    def get_alias(self, model: str, alias: str) -> ModelVersion:
        """The version ``alias`` points at, or NotFoundError."""
        return self._get_alias(validate_model_name(model), validate_alias(alias))

    def set_tag(self, model: str, key: str, value: str | None, *, version: int | None = None) -> None:
        """Set (or with ``value=None`` remove) a tag on the model, or on one version."""
        validate_model_name(model)
        validate_tag_key(key)
        if value is not None:
            validate_tag_value(value, f"value of tag {key!r}")
        if version is not None:
            validate_version_number(version)
        self._set_tag(model, key, value, version)

    def set_description(self, model: str, description: str, *, version: int | None = None) -> None:
        validate_model_name(model)
        validate_description(description)
        if version is not None:
            validate_version_number(version)
        self._set_description(model, description, version)

    def delete_version(self, model: str, version: int) -> None:
        """Delete one version (its aliases go with it); the number is never reused."""
        self._delete_version(validate_model_name(model), validate_version_number(version))

    def delete_model(self, model: str) -> None:
        self._delete_model(validate_model_name(model))

    # derived -------------------------------------------------------------
    def latest_version(self, model: str) -> ModelVersion:
        page = self.search_versions(model, page_size=1)
        if not page.items:
            raise NotFoundError(f"model {model!r} has no versions", hint="register one with `mlops models save`")
        return page.items[0]

    def resolve(self, uri: "str | ModelURI") -> ModelVersion:
        """Resolve ``models:/name``, ``models:/name/3`` or ``models:/name@alias`` to a version."""
        ref = uri if isinstance(uri, ModelURI) else ModelURI.parse(uri)
        if ref.alias:
            return self.get_alias(ref.name, ref.alias)
        if ref.version:
            return self.get_version(ref.name, ref.version)
        return self.latest_version(ref.name)


def _legacy_primitive(public: str, primitive: str) -> Any:
    """Stands in for a primitive of a registry that overrides the public method instead."""

    def legacy(self: ModelRegistry, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} overrides {public}() (a registry written before the template layer), "
            f"so {primitive}() is not implemented; call {public}()"
        )

    legacy.__name__ = primitive
    return legacy


# --------------------------------------------------------------------- builder
class ImageBuilder(Backend):
    """Turns a registered version (with a local copy of its bundle) into a runnable artifact.

    A builder must verify the bundle (``mlops_core.bundle.verify_bundle``) before it
    packages anything, even though the core hands it a freshly verified copy: builds
    are cached and may run long after the copy was made. Equal inputs should give
    equal image digests (claim ``reproducible`` in the conformance kit).
    """

    @abc.abstractmethod
    def build(self, version: ModelVersion, bundle_dir: Path, *, push: bool = False) -> ImageRef: ...


# -------------------------------------------------------------------- deployer
class Deployer(Backend):
    """Runs versions behind the Open Inference Protocol V2.

    ``deploy`` with a name that already exists is an *update*: the backend must
    start the new version, wait until it is ready, switch traffic, and only then
    stop the old one, recording the old version as ``previous_version``. Rollback
    and version resolution live in the core, on top of these primitives.
    """

    #: True when the backend runs images: the core then builds one with the
    #: stack's builder and passes it as ``spec.image``.
    requires_image: bool = False

    @abc.abstractmethod
    def deploy(self, spec: DeploymentSpec, *, wait: float = 60.0) -> Deployment: ...

    @abc.abstractmethod
    def get(self, name: str) -> Deployment:
        """Observed state (a dead process or container shows as 'failed'); NotFoundError if unknown."""

    @abc.abstractmethod
    def list(self) -> Sequence[Deployment]: ...

    @abc.abstractmethod
    def logs(self, name: str, *, tail: int = 100) -> str: ...

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Stop and forget the deployment, draining in-flight requests."""


# --------------------------------------------------------------------- monitor
class Monitor(Backend):
    """A monitor is a plugin object: implement any event hooks as methods marked ``@hookimpl``.

    ``Stack.start_monitors()`` connects each configured monitor to that stack's
    event dispatcher (``stack.events``), so it hears the stack's events (and
    those fired by its backends and servers), never another stack's. Hook
    wrappers are refused. Event delivery isolates monitors: an exception is
    logged and counted, never propagated to serving.
    """


# ----------------------------------------------------------------------- batch
class BatchEngine(Backend):
    """Runs the partitions of a batch scoring job on an engine's workers (processes, Dask, Ray, Spark).

    The core owns the job: it plans one :class:`~mlops_core.batch.types.PartitionTask`
    per input file, skips those whose output exists, retries failed ones, fires the
    events and aggregates the result. An engine only *executes* tasks: it calls
    :func:`mlops_core.batch.worker.run_task` on its workers (that function never
    raises; it loads the verified model once per worker process, reads, scores and
    writes the partition atomically) and hands each
    :class:`~mlops_core.batch.types.PartitionResult` to ``on_result`` in the driver
    process as it arrives.

    Worker loss is the engine's own business (Dask ``retries``, Ray ``max_retries``,
    Spark task retries): a task that runs twice writes the same output key twice,
    atomically, so every row is still written exactly once. A task whose result
    carries ``error`` is retried by the core, which calls :meth:`run` again.
    """

    @abc.abstractmethod
    def run(self, tasks: "Sequence[PartitionTask]", *,
            on_result: "Callable[[PartitionResult], None]") -> None:
        """Execute ``run_task`` for every task; call ``on_result`` in this process once per task."""

    def workers(self) -> int:
        """How many partitions the engine scores at once (a hint for planning and progress)."""
        return 1


# ---------------------------------------------------------------------- format
class ModelFormat(abc.ABC):
    """Saves and loads model objects inside a bundle folder.

    Formats are not chosen in the stack. ``save`` uses the format named by the
    caller (``format=`` / ``--format``, which wins and skips ``can_save``), or
    else asks every installed format's ``can_save`` in order of decreasing
    ``priority`` (ties by name) and takes the first that says yes. ``load`` uses
    the format named in the bundle manifest.

    Loading: the core reads every file of the bundle once, verifying its sha256 as
    it reads, and calls :meth:`load_verified` with those bytes
    (:class:`~mlops_core.bundle.VerifiedFiles`). Override ``load_verified`` and read
    through ``files.open(name)`` / ``files.read_bytes(name)``: the model is then
    built from exactly the verified bytes, whatever happens to the folder meanwhile.
    A format that only implements ``load(directory, manifest)`` keeps working and
    stays safe: it is handed a private copy of the verified files
    (``files.materialize()``), which costs one extra copy. Implement at least one of
    the two.
    """

    #: Name recorded in the manifest's ``format`` field.
    name: str = ""

    #: Order of the automatic choice: higher is asked first. A format for one
    #: framework's own types uses 0 or more (a narrower type, e.g. XGBoost's
    #: scikit-learn wrappers, above a broader one, e.g. every scikit-learn
    #: estimator); a catch-all like cloudpickle uses a negative number.
    priority: int = 0

    @abc.abstractmethod
    def can_save(self, model: Any) -> bool:
        """True if ``save`` can write ``model`` (the automatic choice); must not import heavy modules
        that the model's own framework has not already imported (check ``sys.modules`` first)."""

    @abc.abstractmethod
    def save(self, model: Any, directory: Path) -> Sequence[str]:
        """Write the model's files into ``directory``; return their relative paths."""

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> Any:
        """Load the model from the files in ``directory``, which the caller trusts.

        The core never calls this on a bundle folder: it calls :meth:`load_verified`.
        The default reads the folder's files and hands them to ``load_verified``.
        """
        if type(self).load_verified is ModelFormat.load_verified:
            raise NotImplementedError(f"format {self.name!r} implements neither load() nor load_verified()")
        from .bundle import VerifiedFiles

        folder = Path(directory)
        contents = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                    if p.is_file() and p.name != "manifest.json"}
        if not contents:
            raise NotFoundError(f"{folder} holds no model files", hint="save the model first")
        files = VerifiedFiles(dict(manifest), "", folder, contents, {k: len(v) for k, v in contents.items()})
        return self.load_verified(files)

    def load_verified(self, files: "mlops_core.bundle.VerifiedFiles") -> Any:
        """Load the model from bytes the core has already verified against the manifest.

        Read what you need before returning: the bytes are released afterwards. The
        default hands ``load`` a private copy of the verified files.
        """
        if type(self).load is ModelFormat.load:
            raise NotImplementedError(f"format {self.name!r} implements neither load() nor load_verified()")
        return self.load(files.materialize(), files.manifest)

    def imported_modules(self, directory: Path) -> set[str]:
        """Top-level modules the saved model needs at run time (empty if unknown).

        They are pinned to the installed distributions in the manifest's
        ``requirements``, which image builders install: this is how a format
        declares its runtime (e.g. ``{"onnxruntime", "numpy"}``).
        """
        return set()

    def signature(self, directory: Path) -> "Signature | None":
        """The V2 signature the saved files themselves declare (an ONNX graph's inputs and outputs), or None.

        Called by ``save_bundle`` after ``save`` when the caller gave no signature;
        a signature from the model's own files wins over one inferred from an example.
        """
        return None
