"""The ``mlflow`` registry backend: a ModelRegistry on an MLflow tracking server's model registry.

Mapping (everything goes through ``mlflow.MlflowClient``, so any MLflow server works):

* registered model <-> model; model version <-> version (MLflow numbers versions itself);
* aliases <-> MLflow aliases; tags and descriptions <-> MLflow tags and descriptions;
* the bundle's artifact reference and the lineage are version tags under the reserved
  ``mlops.registry.`` prefix (hidden from ``tags``); the version's ``source`` is the bundle's URI.

What MLflow cannot keep is declared, not hidden (see docs/plugins/mlflow.md):

* numbering restarts at 1 after ``delete_model`` (MLflow deletes the model's rows);
* concurrent writers: MLflow's server computes ``max + 1`` and retries on a unique
  conflict a few times, so under heavy contention a writer can get an error (retried
  here a few times) — the numbers handed out stay unique;
* listings are filtered and paged here, on top of MLflow's own search (MLflow's
  ``LIKE`` is case-insensitive on SQLite and its page tokens are offsets), so each
  page lists the matching models or versions from MLflow once.

Registry logic sits in small private helpers (``_create``, ``_fetch_version`` ...) so
the public methods are only validation plus one call: switching to the core's
template layer (public methods validate, then call primitives) is mechanical.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Any, Iterator, Mapping

import attrs

from mlops_core.entities import (
    AliasChange,
    ArtifactRef,
    Lineage,
    ModelVersion,
    Page,
    RegisteredModel,
    decode_page_token,
    encode_page_token,
    validate_alias,
    validate_model_name,
    validate_page_size,
    validate_tag_key,
    validate_tags,
    validate_text,
    validate_version_number,
)
from mlops_core.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    InvalidInputError,
    MlopsError,
    NotFoundError,
)
from mlops_core.interfaces import BackendContext, ModelRegistry

__all__ = ["MlflowRegistry", "MlflowRegistryConfig", "RESERVED_TAG_PREFIX", "version_source"]

#: Version and model tags under this prefix belong to the backend (artifact, lineage).
RESERVED_TAG_PREFIX = "mlops.registry."
_T_URI = "mlops.registry.artifact_uri"
_T_DIGEST = "mlops.registry.artifact_digest"
_T_RUN = "mlops.registry.source_run"
_T_DATASET = "mlops.registry.dataset_uri"
_T_PARENT = "mlops.registry.parent_version"
# MLflow refuses aliases that look like version references ("v1", "V12").
_MLFLOW_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
_SAFE_LIKE = re.compile(r"^[A-Za-z0-9.-]+$")
_BATCH = 1000  # rows per MLflow search call when listing


def _non_empty(_inst: Any, attr: Any, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{attr.name} must be a non-empty string",
                                hint='set it in [registry], e.g. tracking_uri = "http://127.0.0.1:5000"')


@attrs.define
class MlflowRegistryConfig:
    """Settings of the ``mlflow`` registry backend (the ``[registry]`` table of a stack)."""

    #: The MLflow tracking server (``http://host:port``), or any URI MLflow's client accepts.
    tracking_uri: str = attrs.field(validator=_non_empty)
    #: The registry URI when it differs from the tracking URI (MLflow's ``registry_uri``).
    registry_uri: str | None = None
    #: Attempts of a version creation that MLflow refuses because of a concurrent writer.
    retries: int = attrs.field(default=5, converter=int)


def _check_user_tag_key(key: str) -> str:
    validate_tag_key(key)
    if key.startswith(RESERVED_TAG_PREFIX):
        raise InvalidInputError(f"tag key {key!r} uses the reserved prefix {RESERVED_TAG_PREFIX!r}",
                                hint="the mlflow registry keeps the artifact and lineage there; pick another key")
    return key


def _check_user_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    tags = validate_tags(tags)
    for key in tags:
        _check_user_tag_key(key)
    return tags


def _check_alias(alias: str) -> str:
    validate_alias(alias)
    if _MLFLOW_VERSION_ALIAS.match(alias):
        raise InvalidInputError(f"alias {alias!r} looks like a version reference, which MLflow refuses",
                                hint="pick an alias that is not 'v' followed by digits")
    return alias


def _ts(millis: Any) -> _dt.datetime:
    return _dt.datetime.fromtimestamp((millis or 0) / 1000, tz=_dt.timezone.utc)


def _user_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    return {k: (v or "") for k, v in (tags or {}).items() if not k.startswith(RESERVED_TAG_PREFIX)}


def _artifact_tags(artifact: ArtifactRef, lineage: Lineage) -> dict[str, str]:
    tags = {_T_URI: artifact.uri, _T_DIGEST: artifact.digest}
    if lineage.source_run is not None:
        tags[_T_RUN] = lineage.source_run
    if lineage.dataset_uri is not None:
        tags[_T_DATASET] = lineage.dataset_uri
    if lineage.parent_version is not None:
        tags[_T_PARENT] = str(lineage.parent_version)
    return tags


# Schemes an MLflow server refuses as a model version source (local paths need a run; host
# addressed schemes must match its artifact root): for those the source names the bundle instead.
_REFUSED_SOURCE_SCHEMES = frozenset({"", "file", "ftp", "sftp", "hdfs", "viewfs", "http", "https",
                                     "mlflow-artifacts", "r2", "b2", "abfss", "models", "runs"})


def version_source(artifact: ArtifactRef) -> str:
    """The MLflow ``source`` of a version: the bundle's manifest URI in its store, or ``mlops-bundle:``.

    ``mlops-bundle:/sha256:<hex>?store=<uri>`` names the same bundle (the store and the
    manifest digest) in a form an MLflow server accepts without a run.
    """
    scheme = artifact.uri.split("://", 1)[0].lower() if "://" in artifact.uri else ""
    if scheme in _REFUSED_SOURCE_SCHEMES or not re.match(r"^[a-z][a-z0-9+.-]*$", scheme):
        from urllib.parse import quote

        return f"mlops-bundle:/{artifact.digest}?store={quote(artifact.uri, safe='')}"
    from mlops_core.artifacts import blob_key

    # the bundle's manifest blob in the store (content-addressed by the manifest digest)
    return f"{artifact.uri.rstrip('/')}/{blob_key(artifact.digest.split(':', 1)[-1])}"


class MlflowRegistry(ModelRegistry):
    """A :class:`~mlops_core.interfaces.ModelRegistry` on an MLflow tracking server."""

    def __init__(self, tracking_uri: str, *, registry_uri: str | None = None, retries: int = 5) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException
        except ImportError as exc:  # pragma: no cover - mlflow is an install requirement
            raise BackendUnavailableError(f"the mlflow registry needs mlflow: {exc}",
                                          hint="pip install mlops-mlflow (it installs mlflow)") from None
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.retries = max(1, retries)
        self._MlflowException = MlflowException
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)

    @classmethod
    def from_config(cls, config: MlflowRegistryConfig, context: BackendContext) -> "MlflowRegistry":
        """The backend factory: ``factory(config, context)``."""
        return cls(config.tracking_uri, registry_uri=config.registry_uri, retries=config.retries)

    def __repr__(self) -> str:
        return f"MlflowRegistry({self.registry_uri!r})"

    @property
    def client(self) -> Any:
        """The underlying ``mlflow.MlflowClient`` (for what this interface does not cover)."""
        return self._client

    def check(self) -> str:
        if self.registry_uri.startswith(("http://", "https://")):
            # MLflow's client retries an unreachable server with backoff for minutes
            # (MLFLOW_HTTP_REQUEST_MAX_RETRIES): `mlops doctor` asks once, quickly, first.
            import urllib.error
            import urllib.request

            try:
                urllib.request.urlopen(self.registry_uri.rstrip("/") + "/health", timeout=5).close()
            except urllib.error.HTTPError:
                pass  # something answered (a proxy, an auth wall): the client call below tells more
            except (urllib.error.URLError, OSError) as exc:
                raise BackendUnavailableError(
                    f"the MLflow tracking server at {self.registry_uri} does not answer: {exc}",
                    hint="check that the MLflow tracking server is running and tracking_uri is right") from None
        with self._errors("reach the MLflow registry"):
            self._client.search_registered_models(max_results=1)
        return f"MLflow model registry at {self.registry_uri}"

    # ------------------------------------------------------------- errors
    def _errors(self, doing: str, *, not_found: str | None = None, exists: str | None = None) -> "_ErrorMap":
        return _ErrorMap(self, doing, not_found, exists)

    # ------------------------------------------------------------- helpers
    def _to_version(self, mv: Any, model_aliases: Mapping[str, Any] | None = None) -> ModelVersion:
        """``model_aliases`` (the model's alias -> version map) for versions from a search:
        MLflow's ``search_model_versions`` leaves their ``aliases`` empty."""
        tags = mv.tags or {}
        if model_aliases is not None:
            aliases = tuple(sorted(a for a, v in model_aliases.items() if int(v) == int(mv.version)))
        else:
            aliases = tuple(sorted(getattr(mv, "aliases", None) or ()))
        uri = tags.get(_T_URI)
        digest = tags.get(_T_DIGEST)
        if uri is None or digest is None:
            raise InvalidInputError(
                f"MLflow model version {mv.name}/{mv.version} was not registered through mlops "
                "(no mlops.registry.* tags)",
                hint=f"import it as a bundle: mlops models import mlflow:/models:/{mv.name}/{mv.version}")
        parent = tags.get(_T_PARENT)
        return ModelVersion(
            model=mv.name, version=int(mv.version), artifact=ArtifactRef(uri=uri, digest=digest),
            description=mv.description or "", tags=_user_tags(tags),
            aliases=aliases,
            lineage=Lineage(source_run=tags.get(_T_RUN), dataset_uri=tags.get(_T_DATASET),
                            parent_version=int(parent) if parent else None),
            created_at=_ts(mv.creation_timestamp),
        )

    def _to_model(self, rm: Any) -> RegisteredModel:
        latest = [int(v.version) for v in (rm.latest_versions or [])]
        return RegisteredModel(
            name=rm.name, description=rm.description or "", tags=_user_tags(rm.tags),
            aliases={a: int(v) for a, v in (rm.aliases or {}).items()},
            latest_version=max(latest) if latest else None,
            created_at=_ts(rm.creation_timestamp),
            updated_at=max(_ts(rm.last_updated_timestamp), _ts(rm.creation_timestamp)),
        )

    def _fetch_model(self, model: str) -> Any:
        with self._errors(f"read model {model!r}", not_found=f"no registered model named {model!r}"):
            return self._client.get_registered_model(model)

    def _fetch_version(self, model: str, version: int) -> Any:
        with self._errors(f"read {model}/{version}", not_found=f"model {model!r} has no version {version}"):
            return self._client.get_model_version(model, str(version))

    def _ensure_model(self, model: str) -> None:
        try:
            with self._errors(f"create model {model!r}", exists="exists"):
                self._client.create_registered_model(model)
        except AlreadyExistsError:
            pass  # another writer (or an earlier version) made it

    def _create(self, model: str, artifact: ArtifactRef, description: str, tags: dict[str, str],
                lineage: Lineage) -> Any:
        all_tags = {**tags, **_artifact_tags(artifact, lineage)}
        last: MlopsError | None = None
        for attempt in range(self.retries):
            try:
                with self._errors(f"create a version of {model!r}", not_found=f"model {model!r} kept disappearing while creating a version"):
                    return self._client.create_model_version(
                        model, version_source(artifact), tags=all_tags, description=description or None,
                        await_creation_for=0)
            except NotFoundError as exc:
                # first version (or the model was deleted in between): create the model, try again.
                # Trying the version first keeps the common case at one round trip.
                last = exc
                self._ensure_model(model)
                continue
            except BackendUnavailableError as exc:
                # MLflow's server answers a lost numbering race (after its own retries) with an
                # internal error; the version was not created, so trying again is safe.
                if "UNIQUE" not in str(exc) and "IntegrityError" not in str(exc) and "locked" not in str(exc):
                    raise
                last = exc
            time.sleep(0.01 * (attempt + 1))
        assert last is not None
        raise last

    def _scan_models(self, name_contains: str | None) -> Iterator[Any]:
        flt = f"name LIKE '%{name_contains}%'" if name_contains and _SAFE_LIKE.match(name_contains) else None
        token = None
        while True:
            with self._errors("search models"):
                page = self._client.search_registered_models(filter_string=flt, max_results=_BATCH,
                                                             page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _scan_versions(self, model: str | None) -> Iterator[Any]:
        flt = f"name = '{model}'" if model is not None else None
        token = None
        while True:
            with self._errors("search versions"):
                page = self._client.search_model_versions(filter_string=flt, max_results=_BATCH,
                                                          page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    # ------------------------------------------------------------- versions
    def create_version(self, model: str, artifact: ArtifactRef, *, description: str = "",
                       tags: Mapping[str, str] | None = None, lineage: Lineage | None = None) -> ModelVersion:
        validate_model_name(model)
        if not isinstance(artifact, ArtifactRef):
            raise InvalidInputError(f"artifact must be an ArtifactRef, not {artifact!r}")
        validate_text(description, "description")
        tags = _check_user_tags(tags)
        lineage = lineage if lineage is not None else Lineage()
        if not isinstance(lineage, Lineage):
            raise InvalidInputError(f"lineage must be a Lineage, not {lineage!r}")
        return self._to_version(self._create(model, artifact, description, tags, lineage))

    def get_version(self, model: str, version: int) -> ModelVersion:
        validate_model_name(model)
        validate_version_number(version)
        return self._to_version(self._fetch_version(model, version))

    def search_versions(self, model: str | None = None, *, tags: Mapping[str, str] | None = None,
                        page_size: int = 100, page_token: str | None = None) -> Page[ModelVersion]:
        tags = validate_tags(tags)
        validate_page_size(page_size)
        filters = {"model": model, "tags": tags}  # a token is only good for the listing it came from
        after = decode_page_token(page_token, "versions", filters) if page_token is not None else None
        if after is not None and (len(after) != 2 or not isinstance(after[0], str) or not isinstance(after[1], int)):
            raise InvalidInputError(f"invalid page token {page_token!r}", hint="pass back a next_token unchanged")
        if model is not None:
            validate_model_name(model)
            if not tags:
                return self._versions_page(model, page_size, after, filters)
            self._fetch_model(model)
        rows = [
            mv for mv in self._scan_versions(model)
            if (model is None or mv.name == model)
            and all((mv.tags or {}).get(k, None) is not None and (mv.tags[k] or "") == v for k, v in tags.items())
        ]
        keyed = sorted(((mv.name, -int(mv.version)), mv) for mv in rows)
        if after is not None:
            keyed = [(k, mv) for k, mv in keyed if k > (after[0], -after[1])]
        page = keyed[:page_size]
        token = None
        if len(keyed) > page_size:
            name, neg = page[-1][0]
            token = encode_page_token("versions", [name, -neg], filters)
        aliases = {name: self._fetch_model(name).aliases or {} for name in {mv.name for _, mv in page}}
        return Page(items=[self._to_version(mv, aliases[mv.name]) for _, mv in page], next_token=token)

    def _versions_page(self, model: str, page_size: int, after: list[Any] | None,
                       filters: Any) -> Page[ModelVersion]:
        """One model's versions without tag filters: one MLflow search plus one model read per page.

        Keyset paging on ``version_number``; the model read gives NotFoundError for an unknown
        model and the aliases that MLflow's search leaves out.
        """
        if after is not None and after[0] != model:
            raise InvalidInputError("page token of another listing", hint="pass back a next_token unchanged")
        flt = f"name = '{model}'" + (f" AND version_number < {int(after[1])}" if after is not None else "")
        with self._errors("search versions"):
            rows = list(self._client.search_model_versions(filter_string=flt, max_results=page_size + 1,
                                                           order_by=["version_number DESC"]))
        # NotFoundError for an unknown model; and the aliases, which MLflow's search leaves out
        aliases = self._fetch_model(model).aliases or {}
        page = rows[:page_size]
        token = (encode_page_token("versions", [model, int(page[-1].version)], filters)
                 if len(rows) > page_size else None)
        return Page(items=[self._to_version(mv, aliases) for mv in page], next_token=token)

    def latest_version(self, model: str) -> ModelVersion:
        """One MLflow call: the registered model carries its newest version per stage, tags included."""
        validate_model_name(model)
        rm = self._fetch_model(model)
        latest = max(rm.latest_versions or [], key=lambda mv: int(mv.version), default=None)
        if latest is None:
            raise NotFoundError(f"model {model!r} has no versions", hint="register one with `mlops models save`")
        return self._to_version(latest, rm.aliases or {})

    def delete_version(self, model: str, version: int) -> None:
        validate_model_name(model)
        validate_version_number(version)
        self._fetch_version(model, version)
        with self._errors(f"delete {model}/{version}", not_found=f"model {model!r} has no version {version}"):
            self._client.delete_model_version(model, str(version))
        # Older MLflow servers keep aliases of a deleted version: drop them here.
        for alias, number in (self._fetch_model(model).aliases or {}).items():
            if int(number) == version:
                with self._errors(f"delete alias {alias!r}"):
                    self._client.delete_registered_model_alias(model, alias)

    # ------------------------------------------------------------- models
    def get_model(self, model: str) -> RegisteredModel:
        validate_model_name(model)
        return self._to_model(self._fetch_model(model))

    def search_models(self, *, name_contains: str | None = None, tags: Mapping[str, str] | None = None,
                      page_size: int = 100, page_token: str | None = None) -> Page[RegisteredModel]:
        if name_contains is not None:
            validate_text(name_contains, "name_contains")
        tags = validate_tags(tags)
        validate_page_size(page_size)
        filters = {"name_contains": name_contains or None, "tags": tags}
        after = decode_page_token(page_token, "models", filters) if page_token is not None else None
        if after is not None and (len(after) != 1 or not isinstance(after[0], str)):
            raise InvalidInputError(f"invalid page token {page_token!r}", hint="pass back a next_token unchanged")
        found = sorted(
            (rm for rm in self._scan_models(name_contains)
             if (not name_contains or name_contains in rm.name)
             and all((rm.tags or {}).get(k) is not None and (rm.tags[k] or "") == v for k, v in tags.items())
             and (after is None or rm.name > after[0])),
            key=lambda rm: rm.name,
        )
        page = found[:page_size]
        token = encode_page_token("models", [page[-1].name], filters) if len(found) > page_size else None
        return Page(items=[self._to_model(rm) for rm in page], next_token=token)

    def delete_model(self, model: str) -> None:
        validate_model_name(model)
        with self._errors(f"delete model {model!r}", not_found=f"no registered model named {model!r}"):
            self._client.delete_registered_model(model)

    # ------------------------------------------------------------- aliases
    def set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        validate_model_name(model)
        _check_alias(alias)
        validate_version_number(version)
        # the previous target is part of the answer (AliasChange): one read, then the write,
        # which MLflow refuses for a version that does not exist
        previous = (self._fetch_model(model).aliases or {}).get(alias)
        with self._errors(f"set alias {alias!r}", not_found=f"model {model!r} has no version {version}"):
            self._client.set_registered_model_alias(model, alias, str(version))
        return AliasChange(model=model, alias=alias, version=version,
                           previous=int(previous) if previous is not None else None)

    def delete_alias(self, model: str, alias: str) -> AliasChange:
        validate_model_name(model)
        _check_alias(alias)
        previous = (self._fetch_model(model).aliases or {}).get(alias)
        if previous is None:
            raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
        with self._errors(f"delete alias {alias!r}", not_found=f"model {model!r} has no alias {alias!r}"):
            self._client.delete_registered_model_alias(model, alias)
        return AliasChange(model=model, alias=alias, version=None, previous=int(previous))

    def get_alias(self, model: str, alias: str) -> ModelVersion:
        validate_model_name(model)
        _check_alias(alias)
        with self._errors(f"read alias {alias!r}", not_found=f"model {model!r} has no alias {alias!r}"):
            return self._to_version(self._client.get_model_version_by_alias(model, alias))

    # ------------------------------------------------------------- tags and descriptions
    def set_tag(self, model: str, key: str, value: str | None, *, version: int | None = None) -> None:
        validate_model_name(model)
        _check_user_tag_key(key)
        if value is not None:
            validate_text(value, f"value of tag {key!r}")
        if version is not None:
            validate_version_number(version)
            self._fetch_version(model, version)
            with self._errors(f"tag {model}/{version}", not_found=f"model {model!r} has no version {version}"):
                if value is None:
                    if key in (self._fetch_version(model, version).tags or {}):
                        self._client.delete_model_version_tag(model, str(version), key)
                else:
                    self._client.set_model_version_tag(model, str(version), key, value)
            return
        current = self._fetch_model(model)
        with self._errors(f"tag model {model!r}", not_found=f"no registered model named {model!r}"):
            if value is None:
                if key in (current.tags or {}):
                    self._client.delete_registered_model_tag(model, key)
            else:
                self._client.set_registered_model_tag(model, key, value)

    def set_description(self, model: str, description: str, *, version: int | None = None) -> None:
        validate_model_name(model)
        validate_text(description, "description")
        if version is not None:
            validate_version_number(version)
            self._fetch_version(model, version)
            with self._errors(f"describe {model}/{version}", not_found=f"model {model!r} has no version {version}"):
                self._client.update_model_version(model, str(version), description=description)
            return
        self._fetch_model(model)
        with self._errors(f"describe model {model!r}", not_found=f"no registered model named {model!r}"):
            self._client.update_registered_model(model, description=description)


class _ErrorMap:
    """Turn MlflowException and connection failures into the core's errors."""

    def __init__(self, registry: MlflowRegistry, doing: str, not_found: str | None, exists: str | None) -> None:
        self.registry, self.doing, self.not_found, self.exists = registry, doing, not_found, exists

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is None or isinstance(exc, MlopsError):
            return False
        if isinstance(exc, self.registry._MlflowException):
            code = getattr(exc, "error_code", "")
            message = getattr(exc, "message", str(exc))
            # MLflow answers an unknown alias with INVALID_PARAMETER_VALUE "... alias X not found."
            missing = code == "RESOURCE_DOES_NOT_EXIST" or (
                code == "INVALID_PARAMETER_VALUE" and "not found" in message.lower())
            if missing and self.not_found:
                raise NotFoundError(self.not_found, hint="check the name and version") from None
            if code == "RESOURCE_ALREADY_EXISTS" and self.exists:
                raise AlreadyExistsError(f"{self.doing}: {message}") from None
            if code == "INVALID_PARAMETER_VALUE":
                raise InvalidInputError(f"MLflow refused to {self.doing}: {message}",
                                        hint="see the MLflow server's limits in docs/plugins/mlflow.md") from None
            raise BackendUnavailableError(f"could not {self.doing} on {self.registry.registry_uri}: {message}",
                                          hint="check that the MLflow tracking server is running and reachable"
                                          ) from None
        if isinstance(exc, (OSError, ConnectionError)):
            raise BackendUnavailableError(f"could not {self.doing} on {self.registry.registry_uri}: {exc}",
                                          hint="check that the MLflow tracking server is running") from None
        return False
