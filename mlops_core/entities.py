"""Data that crosses module and plugin lines: small, immutable attrs classes.

Backends return these, the core and the CLI consume them, and ``to_json`` turns
any of them into plain JSON for ``--json`` output. Validation of names happens
here, at the boundary, so every backend sees the same rules.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import hashlib
import re
from typing import Any, Generic, Iterator, Literal, Mapping, Protocol, Sequence, TypeVar, get_args, runtime_checkable

import attrs

from .errors import InvalidInputError

__all__ = [
    "TensorSpec",
    "Signature",
    "ArtifactRef",
    "Lineage",
    "RegisteredModel",
    "ModelVersion",
    "AliasChange",
    "Page",
    "ModelURI",
    "ImageRef",
    "DeploymentSpec",
    "Deployment",
    "PredictionEvent",
    "PredictionBatch",
    "Alert",
    "DriftReport",
    "FrozenDict",
    "DeploymentState",
    "DeploymentAction",
    "Severity",
    "MAX_PAGE_SIZE",
    "validate_model_name",
    "validate_alias",
    "validate_tag_key",
    "validate_backend_name",
    "validate_version",
    "validate_text",
    "validate_tag_value",
    "validate_description",
    "MAX_VERSION",
    "MAX_TAG_VALUE_LENGTH",
    "MAX_DESCRIPTION_LENGTH",
    "validate_tags",
    "validate_page_size",
    "validate_version_number",
    "encode_page_token",
    "PageFilters",
    "decode_page_token",
    "utcnow",
    "to_json",
]

# Matched with fullmatch: ``$`` would accept a trailing newline ("iris\n").
# Explicit ASCII classes: ``\w`` and ``str.isalnum`` accept any Unicode letter or digit.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
_TAG_KEY = re.compile(r"[A-Za-z0-9_.\-/:]{1,250}")
_BACKEND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

#: Version numbers are 1..MAX_VERSION: the range every registry can store (a signed
#: 32-bit column in PostgreSQL), checked at the boundary so no backend overflows.
MAX_VERSION = 2**31 - 1
#: Longest tag value, in characters.
MAX_TAG_VALUE_LENGTH = 8_000
#: Longest description (model or version), in characters.
MAX_DESCRIPTION_LENGTH = 65_536

#: Open Inference Protocol V2 tensor datatypes.
DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
)

#: The largest page any listing returns (one rule for the API, the CLI and every registry).
MAX_PAGE_SIZE = 10_000


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid model name {name!r}",
            hint="use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or alias == "latest":
        raise InvalidInputError(
            f"invalid alias {alias!r}",
            hint="an alias starts with a letter, then up to 62 letters, digits, '_' or '-'; 'latest' is reserved",
        )
    return alias


def validate_tag_key(key: str) -> str:
    if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
        raise InvalidInputError(
            f"invalid tag key {key!r}", hint="use 1-250 letters, digits or any of '_.-/:'"
        )
    return key


def validate_backend_name(name: Any, what: str = "backend") -> str:
    """Names of backends and formats: 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit."""
    if not isinstance(name, str) or not _BACKEND_NAME.fullmatch(name):
        raise InvalidInputError(f"invalid {what} name {name!r}",
                                hint="use 1-64 ASCII letters, digits, '-' or '_', starting with a letter or digit")
    return name


def validate_version(version: Any, what: str = "version") -> int:
    """A version number: an int from 1 to MAX_VERSION (bools and huge numbers are refused)."""
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise InvalidInputError(f"invalid {what} {_short(version)}",
                                hint=f"version numbers are integers from 1 to {MAX_VERSION}")
    return version


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_text(value: Any, what: str, max_length: int | None = None) -> str:
    """A free-text field (description, tag value...) must be a string, without NUL, within ``max_length``."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, not {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise InvalidInputError(f"{what} has {len(value)} characters, more than the limit of {max_length}",
                                hint="keep long documents in the bundle's metadata or link to them")
    if "\x00" in value:
        raise InvalidInputError(f"{what} contains a NUL character", hint="remove it; not every registry can store it")
    return value


def validate_tag_value(value: Any, what: str = "tag value") -> str:
    """A tag value: a string of at most MAX_TAG_VALUE_LENGTH characters, without NUL."""
    return validate_text(value, what, MAX_TAG_VALUE_LENGTH)


def validate_description(value: Any, what: str = "description") -> str:
    """A description: a string of at most MAX_DESCRIPTION_LENGTH characters, without NUL."""
    return validate_text(value, what, MAX_DESCRIPTION_LENGTH)


def validate_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """Tags as registries accept them: valid keys, string values; None means no tags."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise InvalidInputError(f"tags must be a mapping of str to str, not {type(tags).__name__}")
    return {validate_tag_key(k): validate_tag_value(v, f"tag value of {k!r}") for k, v in tags.items()}


def validate_page_size(page_size: Any) -> int:
    """The one page-size rule of the API, the CLI and every registry: an integer from 1 to MAX_PAGE_SIZE."""
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInputError(f"invalid page_size {page_size!r}",
                                hint=f"page_size is an integer from 1 to {MAX_PAGE_SIZE}")
    return page_size


def validate_version_number(version: Any, what: str = "version") -> int:
    """The same rule as :func:`validate_version` (kept under this name for registries written against it)."""
    return validate_version(version, what)


_TOKEN_HINT = "pass back the next_token of the previous page unchanged, with the same filters, or omit it to start over"


def _filters_key(filters: Any) -> str:
    raw = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class PageFilters:
    """The filters of one listing call, hashed at most once (for a token decoded and one encoded)."""

    __slots__ = ("filters", "_key")

    def __init__(self, filters: Any) -> None:
        self.filters = filters
        self._key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = _filters_key(self.filters)
        return self._key


def _key_of(filters: Any) -> str:
    return filters.key if isinstance(filters, PageFilters) else _filters_key(filters)


def encode_page_token(kind: str, position: list[Any], filters: Any = None) -> str:
    """An opaque, URL- and shell-safe page token for keyset paging.

    It carries the listing's kind, the last key of the page and a hash of the
    filters the listing was made with, so :func:`decode_page_token` refuses it
    under other filters. ``filters`` may be a :class:`PageFilters`, so that one call
    that decodes a token and encodes the next hashes its filters once.
    """
    raw = json.dumps([kind, position, _key_of(filters)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_page_token(token: Any, kind: str, filters: Any = None) -> list[Any]:
    """The position a token from :func:`encode_page_token` carries.

    InvalidInputError if it is not a token of ``kind`` or was made under other ``filters``.
    """
    try:
        token_kind, position, key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (AttributeError, binascii.Error, ValueError, TypeError):
        raise InvalidInputError(f"invalid page token {token!r}", hint=_TOKEN_HINT) from None
    if token_kind != kind or not isinstance(position, list):
        raise InvalidInputError(f"invalid page token {token!r}", hint=_TOKEN_HINT)
    if key != _key_of(filters):
        raise InvalidInputError("page token belongs to a listing with other filters", hint=_TOKEN_HINT)
    return position


#: Model names already validated by an entity (a listing builds many entities of one model):
#: a set lookup instead of the regex. Bounded; cleared when full.
_VALID_NAMES: set[str] = set()


def _check_model_name(_inst: Any, _attr: Any, value: str) -> None:
    if value.__class__ is str and value in _VALID_NAMES:
        return
    validate_model_name(value)
    if len(_VALID_NAMES) >= 4096:
        _VALID_NAMES.clear()
    _VALID_NAMES.add(value)


def _check_version_number(_inst: Any, attr: Any, value: Any) -> None:
    if value.__class__ is int and 0 < value <= MAX_VERSION:  # the common case, without a call
        return
    validate_version(value, attr.name)


def _refuse(self: Any, *_args: Any, **_kw: Any) -> Any:
    raise TypeError(f"{type(self).__name__} is immutable; build a new one (dict(m) | {{...}}) instead")


class FrozenDict(dict):  # type: ignore[type-arg]
    """An immutable, hashable dict: the mappings inside frozen entities.

    A ``dict`` subclass, so ``json.dumps``, ``isinstance(m, dict)`` and ``m == {...}``
    keep working; every mutating method raises TypeError. Nested mappings are
    frozen too; other values (lists included) are kept as they are, so a value
    compares as before.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse  # type: ignore[assignment]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # Tags and labels hold only strings: one C-level pass over the value types, no loop here.
        if _PLAIN_TYPES.issuperset(map(type, dict.values(self))):
            return
        for key, value in dict.items(self):
            if not isinstance(value, _SCALARS) and isinstance(value, Mapping) and not isinstance(value, FrozenDict):
                dict.__setitem__(self, key, FrozenDict(value))

    def __hash__(self) -> int:  # type: ignore[override]
        try:
            return hash(frozenset(self.items()))
        except TypeError:  # an unhashable value (a list): equal mappings still have equal keys
            return hash(frozenset(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> "FrozenDict":
        return self

    def __deepcopy__(self, _memo: Any) -> "FrozenDict":
        return self


#: Values that are never mappings: skipped without the (slower) ABC check.
_SCALARS = (str, int, float, bool, type(None), list, tuple)
#: The exact types of _SCALARS (subclasses, e.g. a Mapping that is also a tuple, take the slow path).
_PLAIN_TYPES = frozenset(_SCALARS)


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if isinstance(value, FrozenDict):
        return value
    if value.__class__ is dict and _PLAIN_TYPES.issuperset(map(type, value.values())):  # type: ignore[union-attr]
        # The common case (a dict of strings, as registries build tags): two C calls, no __init__.
        frozen = dict.__new__(FrozenDict)
        dict.update(frozen, value)  # type: ignore[arg-type]
        return frozen
    return FrozenDict(value or ())


def _literal_validator(literal: Any) -> Any:
    allowed = get_args(literal)

    def check(_inst: Any, attr: Any, value: Any) -> None:
        if value not in allowed:
            raise InvalidInputError(f"{attr.name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")

    return check


# --------------------------------------------------------------------- formats
@attrs.frozen
class TensorSpec:
    """One named tensor of a model signature, as the V2 protocol describes it (-1 = any size)."""

    name: str
    datatype: str = attrs.field(validator=attrs.validators.in_(DATATYPES))
    shape: tuple[int, ...] = attrs.field(converter=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TensorSpec":
        try:
            return cls(name=str(data["name"]), datatype=str(data["datatype"]), shape=[int(d) for d in data["shape"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"invalid tensor spec {data!r}: {exc}",
                hint='a tensor spec is {"name": str, "datatype": one of ' + ", ".join(DATATYPES) + ', "shape": [int]}',
            ) from None


@attrs.frozen
class Signature:
    """What a model takes and returns; inferred from an example input at save time."""

    inputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple, factory=tuple)
    outputs: tuple[TensorSpec, ...] = attrs.field(converter=tuple, factory=tuple)
    #: How a server hands decoded inputs to ``predict``: one "ndarray" (single input),
    #: a pandas "dataframe" (one input per column), or a "dict" of name -> ndarray.
    input_kind: str = attrs.field(default="ndarray", validator=attrs.validators.in_(("ndarray", "dataframe", "dict")))

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "input_kind": self.input_kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Signature":
        data = data or {}
        return cls(
            inputs=[TensorSpec.from_dict(t) for t in data.get("inputs", [])],
            outputs=[TensorSpec.from_dict(t) for t in data.get("outputs", [])],
            input_kind=data.get("input_kind", "ndarray"),
        )


# -------------------------------------------------------------------- storage
@attrs.frozen
class ArtifactRef:
    """Where a stored bundle lives: the store's URI and the sha256 digest of its manifest."""

    uri: str
    digest: str  # "sha256:<hex>" of the manifest; identifies the bundle content

    def __str__(self) -> str:
        return f"{self.uri}#{self.digest}"


# ------------------------------------------------------------------- registry
@attrs.frozen
class Lineage:
    """Where a version came from. All fields optional; registries store them verbatim."""

    source_run: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    dataset_uri: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    parent_version: int | None = attrs.field(default=None, validator=attrs.validators.optional(_check_version_number))


@attrs.frozen
class RegisteredModel:
    name: str = attrs.field(validator=_check_model_name)
    description: str = ""
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_mapping)
    aliases: Mapping[str, int] = attrs.field(factory=dict, converter=_freeze_mapping)
    latest_version: int | None = None
    created_at: _dt.datetime = attrs.field(factory=utcnow)
    updated_at: _dt.datetime = attrs.field(factory=utcnow)


@attrs.frozen
class ModelVersion:
    """One version of a registered model (numbered 1..n without gaps per model).

    Its artifact never changes; tags, description and aliases may.
    """

    model: str = attrs.field(validator=_check_model_name)
    version: int = attrs.field(validator=_check_version_number)
    artifact: ArtifactRef
    description: str = ""
    tags: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_mapping)
    aliases: tuple[str, ...] = attrs.field(factory=tuple, converter=tuple)
    lineage: Lineage = attrs.field(factory=Lineage)
    created_at: _dt.datetime = attrs.field(factory=utcnow)

    @property
    def uri(self) -> str:
        return f"models:/{self.model}/{self.version}"


@attrs.frozen
class AliasChange:
    """An alias now points at ``version`` (None when deleted); ``previous`` is where it pointed."""

    model: str
    alias: str
    version: int | None
    previous: int | None


T = TypeVar("T")


@attrs.frozen
class Page(Generic[T]):
    """One page of a listing; pass ``next_token`` back to get the following page (None = last)."""

    items: tuple[T, ...] = attrs.field(converter=tuple)
    next_token: str | None = None


@attrs.frozen
class ModelURI:
    """``models:/name`` (latest), ``models:/name/3`` or ``models:/name@alias``."""

    name: str = attrs.field(validator=_check_model_name)
    version: int | None = attrs.field(default=None, validator=attrs.validators.optional(_check_version_number))
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> "ModelURI":
        rest = uri[len("models:/"):] if isinstance(uri, str) and uri.startswith("models:/") else None
        if not rest:
            raise InvalidInputError(
                f"not a model URI: {uri!r}",
                hint="use models:/NAME (latest), models:/NAME/VERSION or models:/NAME@ALIAS",
            )
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return cls(validate_model_name(name), alias=validate_alias(alias))
        if "/" in rest:
            name, ver = rest.rsplit("/", 1)
            # ASCII digits only (str.isdigit accepts '²'), and a length cap before int() so a
            # 10,000-digit string costs nothing; then the range every registry can store.
            if not re.fullmatch(r"[0-9]{1,64}", ver) or len(ver.lstrip("0")) > 10 or not 1 <= int(ver) <= MAX_VERSION:
                raise InvalidInputError(f"bad version {_short(ver)} in {_short(uri)}",
                                        hint=f"versions are integers from 1 to {MAX_VERSION}")
            return cls(validate_model_name(name), version=int(ver))
        return cls(validate_model_name(rest))

    def __str__(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        if self.version:
            return f"models:/{self.name}/{self.version}"
        return f"models:/{self.name}"


# -------------------------------------------------------------------- builder
@attrs.frozen
class ImageRef:
    """A built image: where it is (registry reference and/or OCI layout path) and its digest."""

    reference: str
    digest: str
    layout: str | None = None
    size: int | None = None
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_mapping)


# ------------------------------------------------------------------- deployer
@attrs.frozen
class DeploymentSpec:
    """What to run: one registered version, under a deployment name, with backend options."""

    name: str = attrs.field(validator=_check_model_name)
    model: str = attrs.field(validator=_check_model_name)
    version: int = attrs.field(validator=_check_version_number)
    bundle_path: str | None = None  # a local, verified copy of the bundle, when the backend needs one
    image: ImageRef | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


#: The observed state of a deployment.
DeploymentState = Literal["starting", "ready", "failed", "stopped", "unknown"]
#: What happened to a deployment (``mlops_deployment_changed``).
DeploymentAction = Literal["deployed", "updated", "rolled_back", "deleted"]


@attrs.frozen
class Deployment:
    """The observed state of a deployment. ``state`` is one of STATES (:data:`DeploymentState`).

    ``options`` are the backend options the running version was deployed with (what
    ``rollback`` deploys the previous version with again); ``details`` is free-form
    backend information (pid, container id, reason of a failure...).
    """

    STATES = get_args(DeploymentState)
    ACTIONS = get_args(DeploymentAction)

    name: str
    model: str
    version: int
    backend: str
    state: DeploymentState = attrs.field(validator=_literal_validator(DeploymentState))
    url: str | None = None
    previous_version: int | None = None
    created_at: _dt.datetime = attrs.field(factory=utcnow)
    updated_at: _dt.datetime = attrs.field(factory=utcnow)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)

    def __attrs_post_init__(self) -> None:
        # Deployers written before ``options`` existed kept them in details["options"].
        legacy = self.details.get("options")
        if not self.options and isinstance(legacy, Mapping) and legacy:
            object.__setattr__(self, "options", _freeze_mapping(legacy))


# -------------------------------------------------------------------- monitor
@attrs.frozen
class PredictionEvent:
    """One served prediction call (possibly a batch of rows), for monitors.

    ``inputs`` and ``outputs`` map tensor names to decoded arrays (numpy when available).
    """

    model: str
    version: int | None
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    latency_s: float
    batch_size: int = 1
    error: str | None = None
    timestamp: float = 0.0
    #: The caller's request id (``X-Request-ID``, the trace id of ``traceparent``, or the V2 body ``id``).
    request_id: str | None = None
    #: The W3C ``traceparent`` header of the call, when the caller sent one (tracing monitors parent on it).
    traceparent: str | None = None


@attrs.frozen
class PredictionBatch:
    """Prediction calls of one model version, handed to monitors together (``mlops_predictions_batch``).

    Column ``i`` of every field belongs to call ``i``: ``latency_s``, ``batch_size``
    and ``timestamp`` are sequences of ``count`` numbers (numpy arrays when a
    server builds them), ``errors`` and ``request_ids`` sequences of strings or
    None. ``inputs``/``outputs`` map a tensor name to the ``count`` tensors of the
    calls, in order (a call without that tensor has None). A monitor usually
    stacks them once per batch; :meth:`events` gives the calls one by one.
    """

    model: str
    version: int | None
    count: int
    latency_s: Sequence[float]
    batch_size: Sequence[int]
    timestamp: Sequence[float]
    errors: Sequence[str | None]
    request_ids: Sequence[str | None]
    inputs: Mapping[str, Sequence[Any]]
    outputs: Mapping[str, Sequence[Any]]
    traceparents: Sequence[str | None] = ()

    def events(self) -> Iterator[PredictionEvent]:
        for i in range(self.count):
            yield PredictionEvent(
                model=self.model, version=self.version,
                inputs={n: v[i] for n, v in self.inputs.items() if v[i] is not None},
                outputs={n: v[i] for n, v in self.outputs.items() if v[i] is not None},
                latency_s=float(self.latency_s[i]), batch_size=int(self.batch_size[i]), error=self.errors[i],
                timestamp=float(self.timestamp[i]), request_id=self.request_ids[i],
                traceparent=self.traceparents[i] if self.traceparents else None)

    @classmethod
    def from_events(cls, events: Sequence[PredictionEvent]) -> "PredictionBatch":
        """Columns of ``events`` (all of one model version)."""
        first = events[0]
        names_in = {n for e in events for n in e.inputs}
        names_out = {n for e in events for n in e.outputs}
        return cls(model=first.model, version=first.version, count=len(events),
                   latency_s=[e.latency_s for e in events], batch_size=[e.batch_size for e in events],
                   timestamp=[e.timestamp for e in events], errors=[e.error for e in events],
                   request_ids=[e.request_id for e in events], traceparents=[e.traceparent for e in events],
                   inputs={n: [e.inputs.get(n) for e in events] for n in names_in},
                   outputs={n: [e.outputs.get(n) for e in events] for n in names_out})


#: How urgent an alert is.
Severity = Literal["info", "warning", "critical"]


@attrs.frozen
class Alert(Mapping[str, Any]):
    """Something needs a human (``mlops_alert``): alerters (webhook, chat, pager) listen for these.

    Also a read-only mapping of its fields, so listeners written for the former
    ``dict`` alerts (``alert["severity"]``, ``alert.get("model")``, ``dict(alert)``)
    keep working.
    """

    severity: Severity = attrs.field(validator=_literal_validator(Severity))
    title: str = attrs.field(validator=attrs.validators.instance_of(str))
    model: str | None = None
    version: int | None = None
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)

    @classmethod
    def coerce(cls, value: "Alert | Mapping[str, Any]") -> "Alert":
        """An Alert from an Alert or a dict with the same keys (InvalidInputError otherwise)."""
        if isinstance(value, Alert):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"an alert must be an Alert or a mapping, not {type(value).__name__}")
        unknown = sorted(set(value) - {f.name for f in attrs.fields(cls)})
        if unknown or "severity" not in value or "title" not in value:
            raise InvalidInputError(f"invalid alert {dict(value)!r}",
                                    hint="keys: severity (info|warning|critical), title, model, version, details")
        return cls(**value)

    def __getitem__(self, key: str) -> Any:
        if key not in _ALERT_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Any:
        return iter(_ALERT_KEYS)

    def __len__(self) -> int:
        return len(_ALERT_KEYS)


_ALERT_KEYS = ("severity", "title", "model", "version", "details")


@runtime_checkable
class DriftReport(Protocol):
    """What ``mlops_drift_detected`` carries: the drift monitor's report, as every listener may rely on it.

    A drift monitor's own report class (with per-feature scores, methods, windows)
    only needs these members; listeners needing more use ``to_dict()``.
    """

    @property
    def model(self) -> str: ...

    @property
    def version(self) -> int | None: ...

    @property
    def drifted(self) -> Sequence[str]:
        """Names of the features whose score crossed its threshold."""

    def to_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready data."""


def to_json(obj: Any) -> Any:
    """Turn entities (and containers of them) into JSON-ready values."""
    if attrs.has(type(obj)):
        return {f.name: to_json(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
    if isinstance(obj, _dt.datetime):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj
