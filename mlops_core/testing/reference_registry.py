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

It implements only the primitives of the registry template: the base class
validates the input and makes the page tokens (keyset positions bound to the
filters, so concurrent inserts never make a page repeat or skip an item that
existed before the first page).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

import attrs

from ..entities import AliasChange, ArtifactRef, FrozenDict, Lineage, ModelVersion, RegisteredModel, utcnow
from ..errors import NotFoundError
from ..interfaces import ModelRegistry

__all__ = ["InMemoryRegistry"]


@attrs.define
class _Version:
    artifact: ArtifactRef
    description: str
    tags: FrozenDict  # shared by every entity built from it, replaced (never changed) by _set_tag
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


class InMemoryRegistry(ModelRegistry):
    """A simple, obviously correct registry in memory: the reference for conformance tests.

    It implements only the primitives: :class:`~mlops_core.interfaces.ModelRegistry`
    validates every argument and makes the page tokens.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[str, _Model] = {}
        self._next_version: dict[str, int] = {}  # survives delete_model on purpose

    def check(self) -> str:
        return f"in-memory registry ({len(self._models)} models)"

    # helpers ----------------------------------------------------------------
    def _model(self, model: str) -> _Model:
        try:
            return self._models[model]
        except KeyError:
            raise NotFoundError(f"no registered model named {model!r}", hint="check the name") from None

    def _version(self, model: str, version: int) -> _Version:
        entry = self._model(model)
        try:
            return entry.versions[version]
        except KeyError:
            raise NotFoundError(f"model {model!r} has no version {version}", hint="check the version") from None

    def _entity(self, model: str, number: int) -> ModelVersion:
        entry = self._models[model]
        v = entry.versions[number]
        return ModelVersion(
            model=model, version=number, artifact=v.artifact, description=v.description, tags=v.tags,
            aliases=tuple(sorted(a for a, n in entry.aliases.items() if n == number)),
            lineage=v.lineage, created_at=v.created_at,
        )

    # versions ---------------------------------------------------------------
    def _create_version(self, model: str, artifact: ArtifactRef, description: str, tags: Mapping[str, str],
                        lineage: Lineage) -> ModelVersion:
        with self._lock:
            entry = self._models.setdefault(model, _Model())
            number = self._next_version.get(model, 1)
            self._next_version[model] = number + 1
            entry.versions[number] = _Version(artifact, description, FrozenDict(tags), lineage, utcnow())
            entry.updated_at = utcnow()
            return self._entity(model, number)

    def _get_version(self, model: str, version: int) -> ModelVersion:
        with self._lock:
            self._version(model, version)
            return self._entity(model, version)

    def _search_versions(self, model: str | None, tags: Mapping[str, str], limit: int,
                         after: tuple[str, int] | None) -> list[ModelVersion]:
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
            return [self._entity(n, v) for n, v in keys[:limit]]

    def _delete_version(self, model: str, version: int) -> None:
        with self._lock:
            self._version(model, version)
            entry = self._models[model]
            del entry.versions[version]
            entry.aliases = {a: n for a, n in entry.aliases.items() if n != version}
            entry.updated_at = utcnow()

    # models -----------------------------------------------------------------
    def _get_model(self, model: str) -> RegisteredModel:
        with self._lock:
            entry = self._model(model)
            return RegisteredModel(
                name=model, description=entry.description, tags=dict(entry.tags), aliases=dict(entry.aliases),
                latest_version=max(entry.versions) if entry.versions else None,
                created_at=entry.created_at, updated_at=entry.updated_at,
            )

    def _search_models(self, name_contains: str | None, tags: Mapping[str, str], limit: int,
                       after: str | None) -> list[RegisteredModel]:
        with self._lock:
            names = [
                name for name in sorted(self._models)
                if (not name_contains or name_contains in name)
                and all(self._models[name].tags.get(k) == v for k, v in tags.items())
                and (after is None or name > after)
            ]
            return [self._get_model(n) for n in names[:limit]]

    def _delete_model(self, model: str) -> None:
        with self._lock:
            self._model(model)
            del self._models[model]

    # aliases ----------------------------------------------------------------
    def _set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        with self._lock:
            self._version(model, version)
            entry = self._models[model]
            previous = entry.aliases.get(alias)
            entry.aliases[alias] = version
            entry.updated_at = utcnow()
            return AliasChange(model=model, alias=alias, version=version, previous=previous)

    def _delete_alias(self, model: str, alias: str) -> AliasChange:
        with self._lock:
            entry = self._model(model)
            if alias not in entry.aliases:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
            previous = entry.aliases.pop(alias)
            entry.updated_at = utcnow()
            return AliasChange(model=model, alias=alias, version=None, previous=previous)

    def _get_alias(self, model: str, alias: str) -> ModelVersion:
        with self._lock:
            entry = self._model(model)
            if alias not in entry.aliases:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
            return self._entity(model, entry.aliases[alias])

    # tags and descriptions ----------------------------------------------------
    def _set_tag(self, model: str, key: str, value: str | None, version: int | None) -> None:
        with self._lock:
            entry = self._model(model)
            if version is None:
                tags = entry.tags
                if value is None:
                    tags.pop(key, None)
                else:
                    tags[key] = value
            else:
                # A version's tags are an immutable snapshot that its entities share: replace it.
                v = self._version(model, version)
                changed = {k: t for k, t in v.tags.items() if k != key}
                if value is not None:
                    changed[key] = value
                v.tags = FrozenDict(changed)
            entry.updated_at = utcnow()

    def _set_description(self, model: str, description: str, version: int | None) -> None:
        with self._lock:
            entry = self._model(model)
            if version is None:
                entry.description = description
            else:
                self._version(model, version).description = description
            entry.updated_at = utcnow()
