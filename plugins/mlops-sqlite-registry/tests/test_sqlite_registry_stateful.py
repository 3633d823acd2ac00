"""The SQLite registry, run side by side with the in-memory reference by a Hypothesis state machine.

Every rule applies one operation to both registries and requires the same outcome:
equal results, or the same error class. Names are drawn from small pools, so
operations on missing models, versions and aliases happen often and are compared
too. The invariants compare everything both registries can list, through paging.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mlops_core.entities import ArtifactRef, Lineage, ModelVersion, RegisteredModel
from mlops_core.errors import MlopsError
from mlops_core.testing.reference_registry import InMemoryRegistry
from mlops_sqlite_registry.registry import SqliteRegistry

MODELS = st.sampled_from(["alpha", "beta", "gamma"])
ALIASES = st.sampled_from(["champion", "staging", "shadow"])
VERSIONS = st.integers(min_value=1, max_value=4)
TAG_KEYS = st.sampled_from(["team", "stage", "k/1"])
TAG_VALUES = st.sampled_from(["a", "b", ""])
TAGS = st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=2)
PAGE_SIZES = st.integers(min_value=1, max_value=4)


def _comparable(value: Any) -> Any:
    """Entities without their timestamps, which the two registries stamp independently."""
    if isinstance(value, ModelVersion):
        return attrs.evolve(value, created_at=None)
    if isinstance(value, RegisteredModel):
        return attrs.evolve(value, created_at=None, updated_at=None)
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    return value


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", _comparable(call())
    except MlopsError as exc:
        return "error", type(exc).__name__


def _collect(search: Callable[..., Any], page_size: int, **kw: Any) -> list[Any]:
    items, token = [], None
    while True:
        page = search(page_size=page_size, page_token=token, **kw)
        assert len(page.items) <= page_size
        items += page.items
        token = page.next_token
        if token is None:
            return items


class RegistryComparison(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="sqlite-registry-sm-"))
        self.sqlite = SqliteRegistry(self.folder / "registry.db")
        self.reference = InMemoryRegistry()
        self.counter = 0

    def teardown(self) -> None:
        self.sqlite.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def both(self, operation: Callable[[Any], Any]) -> Any:
        expected = _outcome(lambda: operation(self.reference))
        actual = _outcome(lambda: operation(self.sqlite))
        assert actual == expected
        return expected

    @initialize(model=MODELS)
    def first_version(self, model: str) -> None:
        self.create_version(model, {}, "", None)

    # ---------------------------------------------------------------- rules
    @rule(model=MODELS, tags=TAGS, description=st.sampled_from(["", "retrained"]),
          parent=st.none() | VERSIONS)
    def create_version(self, model: str, tags: dict[str, str], description: str, parent: int | None) -> None:
        self.counter += 1
        artifact = ArtifactRef(uri="file:///store", digest=f"sha256:{self.counter:064x}")
        lineage = Lineage(source_run=f"run-{self.counter}", parent_version=parent)
        self.both(lambda r: r.create_version(model, artifact, description=description, tags=tags, lineage=lineage))

    @rule(model=MODELS, alias=ALIASES, version=VERSIONS)
    def set_alias(self, model: str, alias: str, version: int) -> None:
        self.both(lambda r: r.set_alias(model, alias, version))

    @rule(model=MODELS, alias=ALIASES)
    def delete_alias(self, model: str, alias: str) -> None:
        self.both(lambda r: r.delete_alias(model, alias))

    @rule(model=MODELS, key=TAG_KEYS, value=st.none() | TAG_VALUES, version=st.none() | VERSIONS)
    def set_tag(self, model: str, key: str, value: str | None, version: int | None) -> None:
        self.both(lambda r: r.set_tag(model, key, value, version=version))

    @rule(model=MODELS, description=st.sampled_from(["", "first", "second"]), version=st.none() | VERSIONS)
    def set_description(self, model: str, description: str, version: int | None) -> None:
        self.both(lambda r: r.set_description(model, description, version=version))

    @rule(model=MODELS, version=VERSIONS)
    def delete_version(self, model: str, version: int) -> None:
        self.both(lambda r: r.delete_version(model, version))

    @rule(model=MODELS)
    def delete_model(self, model: str) -> None:
        self.both(lambda r: r.delete_model(model))

    @rule(model=st.none() | MODELS, tags=st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=1), page_size=PAGE_SIZES)
    def search_versions(self, model: str | None, tags: dict[str, str], page_size: int) -> None:
        self.both(lambda r: _collect(r.search_versions, page_size, model=model, tags=tags))

    @rule(name_contains=st.none() | st.sampled_from(["a", "et", "gamma", "zz"]),
          tags=st.dictionaries(TAG_KEYS, TAG_VALUES, max_size=1), page_size=PAGE_SIZES)
    def search_models(self, name_contains: str | None, tags: dict[str, str], page_size: int) -> None:
        self.both(lambda r: _collect(r.search_models, page_size, name_contains=name_contains, tags=tags))

    @rule(model=MODELS, version=VERSIONS)
    def get_version(self, model: str, version: int) -> None:
        self.both(lambda r: r.get_version(model, version))

    # Rules aimed at what exists, so aliases, tags and deletions meet often.
    def existing(self) -> list[tuple[str, int]]:
        return [(v.model, v.version) for v in _collect(self.reference.search_versions, 100)]

    @precondition(lambda self: self.existing())
    @rule(data=st.data(), alias=ALIASES)
    def point_alias_at_existing_version(self, data: st.DataObject, alias: str) -> None:
        model, version = data.draw(st.sampled_from(self.existing()), label="version")
        self.both(lambda r: r.set_alias(model, alias, version))

    @precondition(lambda self: self.existing())
    @rule(data=st.data(), key=TAG_KEYS, value=st.none() | TAG_VALUES)
    def tag_existing_version(self, data: st.DataObject, key: str, value: str | None) -> None:
        model, version = data.draw(st.sampled_from(self.existing()), label="version")
        self.both(lambda r: r.set_tag(model, key, value, version=version))

    @precondition(lambda self: self.existing())
    @rule(data=st.data())
    def delete_existing_version(self, data: st.DataObject) -> None:
        model, version = data.draw(st.sampled_from(self.existing()), label="version")
        self.both(lambda r: r.delete_version(model, version))

    # ----------------------------------------------------------- invariants
    @invariant()
    def same_models(self) -> None:
        self.both(lambda r: _collect(r.search_models, 2))

    @invariant()
    def same_versions(self) -> None:
        self.both(lambda r: _collect(r.search_versions, 3))

    @invariant()
    def same_aliases_and_latest(self) -> None:
        for model in ("alpha", "beta", "gamma"):
            self.both(lambda r: r.get_model(model))
            self.both(lambda r: r.latest_version(model))
            for alias in ("champion", "staging", "shadow"):
                self.both(lambda r: r.get_alias(model, alias))

    @invariant()
    def aliases_point_at_existing_versions(self) -> None:
        for model in self.sqlite.search_models().items:
            for alias, version in model.aliases.items():
                assert alias in self.sqlite.get_version(model.name, version).aliases


RegistryComparison.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSqliteRegistryMatchesReference = RegistryComparison.TestCase
