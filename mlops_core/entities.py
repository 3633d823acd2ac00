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
import re
from typing import Any, Generic, Mapping, TypeVar

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
    "encode_page_token",
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
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise InvalidInputError(f"invalid page_size {page_size!r}", hint="page_size is an integer from 1")
    return page_size


def encode_page_token(kind: str, position: list[Any]) -> str:
    """An opaque, URL- and shell-safe page token for keyset paging: the listing's kind and last key."""
    return base64.urlsafe_b64encode(json.dumps([kind, position]).encode()).decode()


def decode_page_token(token: Any, kind: str) -> list[Any]:
    """The position a token from :func:`encode_page_token` carries; InvalidInputError if it is not one of ``kind``."""
    try:
        token_kind, position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (AttributeError, binascii.Error, ValueError, TypeError):
        raise InvalidInputError(f"invalid page token {token!r}", hint="pass back a next_token unchanged") from None
    if token_kind != kind or not isinstance(position, list):
        raise InvalidInputError(f"invalid page token {token!r}", hint="pass back a next_token unchanged")
    return position


def _check_model_name(_inst: Any, _attr: Any, value: str) -> None:
    validate_model_name(value)


def _check_version_number(_inst: Any, attr: Any, value: Any) -> None:
    validate_version(value, attr.name)


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


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


@attrs.frozen
class Deployment:
    """The observed state of a deployment. ``state`` is one of STATES."""

    STATES = ("starting", "ready", "failed", "stopped", "unknown")

    name: str
    model: str
    version: int
    backend: str
    state: str
    url: str | None = None
    previous_version: int | None = None
    created_at: _dt.datetime = attrs.field(factory=utcnow)
    updated_at: _dt.datetime = attrs.field(factory=utcnow)
    details: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)


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
