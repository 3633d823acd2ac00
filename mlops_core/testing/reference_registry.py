"""The reference model of :class:`~mlops_core.interfaces.ModelRegistry` for conformance tests.

``InMemoryRegistry`` keeps everything in plain dicts behind one lock and favours
being obviously correct over being fast. Conformance tests run a real backend
side by side with it (for example in a Hypothesis ``RuleBasedStateMachine``) and
compare what both return and which errors both raise. It is also handy as a
throwaway registry in unit tests of code that needs one.

The semantics it pins down, beyond the ABC docstrings:

* versions of a model are numbered 1, 2, 3... from a per-model counter that is never
  decremented, not even by ``delete_model``: a number is never handed out twice
  for one model name;
* unknown model, version or alias -> NotFoundError; malformed names, aliases, tag
  keys, versions, page sizes or page tokens -> InvalidInputError;
* ``search_models``: ordered by name; ``name_contains`` is a case-sensitive
  substring; ``tags`` must all match exactly;
* ``search_versions``: ordered by model name, then version descending; naming a
  model that does not exist raises NotFoundError;
* ``set_tag(..., value=None)`` removes the tag (removing an absent tag is fine);
* deleting a version removes its aliases; deleting a model removes everything of it.

Page tokens are opaque strings that only this implementation understands; they
are keyset positions, so concurrent inserts never make a page repeat or skip an
item that existed before the first page.
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import attrs

from ..entities import (
    AliasChange,
    ArtifactRef,
    Lineage,
    ModelVersion,
    Page,
    RegisteredModel,
    utcnow,
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
    validate_version,
)
from ..errors import InvalidInputError, NotFoundError
from ..interfaces import ModelRegistry

__all__ = ["InMemoryRegistry"]


@attrs.define
class _Version:
    artifact: ArtifactRef
    description: str
    tags: dict[str, str]
    lineage: Lineage
    created_at: Any


@attrs.define
class _Model:
    description: str = ""
    tags: dict[str, str] = attrs.Factory(dict)
    aliases: dict[str, int] = attrs.Factory(dict)
    versions: dict[int, _Version] = attrs.Factory(dict)
    created_at: Any = attrs.Factory(utcnow)
    updated_at: Any = attrs.Factory(utcnow)


def _version_number(version: Any) -> int:
    return validate_version(version)



class InMemoryRegistry(ModelRegistry):
    """A simple, obviously correct registry in memory: the reference for conformance tests."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[str, _Model] = {}
        self._next_version: dict[str, int] = {}  # survives delete_model on purpose

    def check(self) -> str:
        return f"in-memory registry ({len(self._models)} models)"

    # helpers ----------------------------------------------------------------
    def _model(self, model: str) -> _Model:
        validate_model_name(model)
        try:
            return self._models[model]
        except KeyError:
            raise NotFoundError(f"no registered model named {model!r}", hint="check the name") from None

    def _version(self, model: str, version: int) -> _Version:
        _version_number(version)
        entry = self._model(model)
        try:
            return entry.versions[version]
        except KeyError:
            raise NotFoundError(f"model {model!r} has no version {version}", hint="check the version") from None

    def _entity(self, model: str, number: int) -> ModelVersion:
        entry = self._models[model]
        v = entry.versions[number]
        return ModelVersion(
            model=model, version=number, artifact=v.artifact, description=v.description, tags=dict(v.tags),
            aliases=tuple(sorted(a for a, n in entry.aliases.items() if n == number)),
            lineage=v.lineage, created_at=v.created_at,
        )

    # versions ---------------------------------------------------------------
    def create_version(self, model: str, artifact: ArtifactRef, *, description: str = "",
                       tags: Mapping[str, str] | None = None, lineage: Lineage | None = None) -> ModelVersion:
        validate_model_name(model)
        if not isinstance(artifact, ArtifactRef):
            raise InvalidInputError(f"artifact must be an ArtifactRef, not {artifact!r}")
        validate_description(description)
        tags = validate_tags(tags)
        lineage = lineage if lineage is not None else Lineage()
        if not isinstance(lineage, Lineage):
            raise InvalidInputError(f"lineage must be a Lineage, not {lineage!r}")
        if lineage.parent_version is not None:
            _version_number(lineage.parent_version)
        with self._lock:
            entry = self._models.setdefault(model, _Model())
            number = self._next_version.get(model, 1)
            self._next_version[model] = number + 1
            entry.versions[number] = _Version(artifact, description, tags, lineage, utcnow())
            entry.updated_at = utcnow()
            return self._entity(model, number)

    def get_version(self, model: str, version: int) -> ModelVersion:
        with self._lock:
            self._version(model, version)
            return self._entity(model, version)

    def search_versions(self, model: str | None = None, *, tags: Mapping[str, str] | None = None,
                        page_size: int = 100, page_token: str | None = None) -> Page[ModelVersion]:
        tags = validate_tags(tags)
        validate_page_size(page_size)
        after = decode_page_token(page_token, "versions") if page_token is not None else None
        with self._lock:
            if model is not None:
                self._model(model)
            names = [model] if model is not None else sorted(self._models)
            keys = [
                (name, number)
                for name in names
                for number in sorted(self._models[name].versions, reverse=True)
                if all(self._models[name].versions[number].tags.get(k) == v for k, v in tags.items())
            ]
            if after is not None:
                keys = [(n, v) for n, v in keys if n > after[0] or (n == after[0] and v < after[1])]
            page = keys[:page_size]
            token = encode_page_token("versions", list(page[-1])) if len(keys) > page_size else None
            return Page(items=[self._entity(n, v) for n, v in page], next_token=token)

    def delete_version(self, model: str, version: int) -> None:
        with self._lock:
            self._version(model, version)
            entry = self._models[model]
            del entry.versions[version]
            entry.aliases = {a: n for a, n in entry.aliases.items() if n != version}
            entry.updated_at = utcnow()

    # models -----------------------------------------------------------------
    def get_model(self, model: str) -> RegisteredModel:
        with self._lock:
            entry = self._model(model)
            return RegisteredModel(
                name=model, description=entry.description, tags=dict(entry.tags), aliases=dict(entry.aliases),
                latest_version=max(entry.versions) if entry.versions else None,
                created_at=entry.created_at, updated_at=entry.updated_at,
            )

    def search_models(self, *, name_contains: str | None = None, tags: Mapping[str, str] | None = None,
                      page_size: int = 100, page_token: str | None = None) -> Page[RegisteredModel]:
        if name_contains is not None:
            validate_text(name_contains, "name_contains")
        tags = validate_tags(tags)
        validate_page_size(page_size)
        after = decode_page_token(page_token, "models") if page_token is not None else None
        with self._lock:
            names = [
                name for name in sorted(self._models)
                if (not name_contains or name_contains in name)
                and all(self._models[name].tags.get(k) == v for k, v in tags.items())
                and (after is None or name > after[0])
            ]
            page = names[:page_size]
            token = encode_page_token("models", [page[-1]]) if len(names) > page_size else None
            return Page(items=[self.get_model(n) for n in page], next_token=token)

    def delete_model(self, model: str) -> None:
        with self._lock:
            self._model(model)
            del self._models[model]

    # aliases ----------------------------------------------------------------
    def set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        validate_alias(alias)
        with self._lock:
            self._version(model, version)
            entry = self._models[model]
            previous = entry.aliases.get(alias)
            entry.aliases[alias] = version
            entry.updated_at = utcnow()
            return AliasChange(model=model, alias=alias, version=version, previous=previous)

    def delete_alias(self, model: str, alias: str) -> AliasChange:
        validate_alias(alias)
        with self._lock:
            entry = self._model(model)
            if alias not in entry.aliases:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
            previous = entry.aliases.pop(alias)
            entry.updated_at = utcnow()
            return AliasChange(model=model, alias=alias, version=None, previous=previous)

    def get_alias(self, model: str, alias: str) -> ModelVersion:
        validate_alias(alias)
        with self._lock:
            entry = self._model(model)
            if alias not in entry.aliases:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
            return self._entity(model, entry.aliases[alias])

    # tags and descriptions ----------------------------------------------------
    def set_tag(self, model: str, key: str, value: str | None, *, version: int | None = None) -> None:
        validate_tag_key(key)
        if value is not None:
            validate_tag_value(value, f"value of tag {key!r}")
        if version is not None:
            _version_number(version)
        with self._lock:
            entry = self._model(model)
            tags = entry.tags if version is None else self._version(model, version).tags
            if value is None:
                tags.pop(key, None)
            else:
                tags[key] = value
            entry.updated_at = utcnow()

    def set_description(self, model: str, description: str, *, version: int | None = None) -> None:
        validate_description(description)
        if version is not None:
            _version_number(version)
        with self._lock:
            entry = self._model(model)
            if version is None:
                entry.description = description
            else:
                self._version(model, version).description = description
            entry.updated_at = utcnow()
