"""Hypothesis state machines that run a backend side by side with an in-memory reference.

Every rule applies the same operation to the backend under test and to the
reference (:class:`~mlops_core.testing.reference_registry.InMemoryRegistry` or
:class:`~mlops_core.testing.reference_storage.InMemoryArtifactStore`) and
compares the outcomes: the same values, or errors of the same kind. Each run
works in a fresh name prefix, so one backend instance serves every example and
persistent backends (a database, a bucket) need no cleanup between examples.

Use them through the suites (``RegistrySuite.test_matches_reference_model``) or
directly::

    from mlops_core.testing.stateful import run_registry_state_machine
    run_registry_state_machine(my_registry)
"""

from __future__ import annotations

import itertools
import random
import uuid
from typing import Any, Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule, run_state_machine_as_test

from ..entities import ArtifactRef, Lineage
from ..errors import AlreadyExistsError, InvalidInputError, MlopsError, NotFoundError
from ..interfaces import ArtifactStore, ModelRegistry
from . import strategies as mst

__all__ = [
    "DEFAULT_SETTINGS",
    "outcome",
    "registry_state_machine",
    "storage_state_machine",
    "run_registry_state_machine",
    "run_storage_state_machine",
]

#: Kept small so a suite runs in seconds against a real service; raise it in CI as you like.
DEFAULT_SETTINGS = dict(max_examples=25, stateful_step_count=20, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_ERROR_KINDS = (NotFoundError, InvalidInputError, AlreadyExistsError, MlopsError)


def outcome(call: Callable[[], Any], project: Callable[[Any], Any] = lambda v: v) -> tuple[str, Any]:
    """("ok", projected value) or ("error", kind name): what two backends must agree on."""
    try:
        return "ok", project(call())
    except _ERROR_KINDS as exc:
        kind = next(k for k in _ERROR_KINDS if isinstance(exc, k))
        return "error", kind.__name__


def _version_view(v: Any) -> tuple:
    return (v.model, v.version, v.artifact, v.description, dict(v.tags), tuple(sorted(v.aliases)), v.lineage)


def _model_view(m: Any) -> tuple:
    return (m.name, m.description, dict(m.tags), dict(m.aliases), m.latest_version)


def _all_pages(fetch: Callable[[str | None], Any]) -> list[Any]:
    items: list[Any] = []
    token = None
    for _ in range(10_000):
        page = fetch(token)
        items.extend(page.items)
        token = page.next_token
        if not token:
            return items
    raise AssertionError("paging never ended: next_token kept coming back")


def registry_state_machine(backend: ModelRegistry, reference_factory: Callable[[], ModelRegistry] | None = None,
                           ns: str | None = None, *, counter_survives_model_delete: bool = True
                           ) -> type[RuleBasedStateMachine]:
    """A state machine class comparing ``backend`` with a fresh reference registry per run.

    With ``counter_survives_model_delete=False`` a deleted model's name is never
    used again in the run, so a backend that restarts numbering for a re-created
    model is not held to the reference's stricter rule.
    """
    if reference_factory is None:
        from .reference_registry import InMemoryRegistry as reference_factory  # noqa: N813
    base = ns or f"sm{uuid.uuid4().hex[:8]}"
    runs = itertools.count()

    class RegistryComparison(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ref = reference_factory()
            self.prefix = f"{base}-{next(runs)}"
            self.models = [f"{self.prefix}-{c}" for c in "abc"]

        def both(self, op: Callable[[ModelRegistry], Any], project: Callable[[Any], Any] = lambda v: v) -> Any:
            expected = outcome(lambda: op(self.ref), project)
            actual = outcome(lambda: op(backend), project)
            assert actual == expected, f"backend gave {actual!r}, reference model gave {expected!r}"
            return actual

        model = st.sampled_from(range(3))
        number = st.integers(min_value=1, max_value=6)
        alias = st.sampled_from(["staging", "production"])
        # Versions created so far, so deletes and aliases mostly hit versions that exist.
        created = Bundle("created")

        @rule(target=created, m=model, artifact=mst.artifact_refs(), description=mst.tag_values(),
              tags=mst.tag_dicts(max_size=2), lineage=mst.lineages())
        def create_version(self, m: int, artifact: ArtifactRef, description: str, tags: dict,
                           lineage: Lineage) -> tuple[int, int]:
            result = self.both(lambda r: r.create_version(self.models[m], artifact, description=description,
                                                          tags=tags, lineage=lineage), _version_view)
            return m, result[1][1] if result[0] == "ok" else 1

        @rule(mv=consumes(created))
        def delete_created_version(self, mv: tuple[int, int]) -> None:
            self.both(lambda r: r.delete_version(self.models[mv[0]], mv[1]))

        @rule(mv=created, a=alias)
        def alias_created_version(self, mv: tuple[int, int], a: str) -> None:
            self.both(lambda r: r.set_alias(self.models[mv[0]], a, mv[1]))

        @rule(m=model, v=number)
        def delete_version(self, m: int, v: int) -> None:
            self.both(lambda r: r.delete_version(self.models[m], v))

        @rule(m=model)
        def delete_model(self, m: int) -> None:
            result = self.both(lambda r: r.delete_model(self.models[m]))
            if result[0] == "ok" and not counter_survives_model_delete:
                self.models[m] = f"{self.models[m]}x"

        @rule(m=model, a=alias, v=number)
        def set_alias(self, m: int, a: str, v: int) -> None:
            self.both(lambda r: r.set_alias(self.models[m], a, v))

        @rule(m=model, a=alias)
        def delete_alias(self, m: int, a: str) -> None:
            self.both(lambda r: r.delete_alias(self.models[m], a))

        @rule(m=model, a=alias)
        def get_alias(self, m: int, a: str) -> None:
            self.both(lambda r: r.get_alias(self.models[m], a), _version_view)

        @rule(m=model, key=st.sampled_from(["team", "stage"]), value=st.none() | mst.tag_values(),
              v=st.none() | number)
        def set_tag(self, m: int, key: str, value: str | None, v: int | None) -> None:
            self.both(lambda r: r.set_tag(self.models[m], key, value, version=v))

        @rule(m=model, description=mst.tag_values(), v=st.none() | number)
        def set_description(self, m: int, description: str, v: int | None) -> None:
            self.both(lambda r: r.set_description(self.models[m], description, version=v))

        @rule(m=model, v=number)
        def get_version(self, m: int, v: int) -> None:
            self.both(lambda r: r.get_version(self.models[m], v), _version_view)

        @rule(m=model, page_size=st.integers(min_value=1, max_value=4))
        def search_versions(self, m: int, page_size: int) -> None:
            self.both(lambda r: _all_pages(lambda t: r.search_versions(self.models[m], page_size=page_size,
                                                                         page_token=t)),
                      lambda items: [_version_view(v) for v in items])

        @invariant()
        def models_agree(self) -> None:
            for name in self.models:
                self.both(lambda r: r.get_model(name), _model_view)
            self.both(lambda r: _all_pages(lambda t: r.search_models(name_contains=self.prefix, page_size=2,
                                                                     page_token=t)),
                      lambda items: [_model_view(m) for m in items])

    return RegistryComparison


def storage_state_machine(backend: ArtifactStore, reference_factory: Callable[[], ArtifactStore] | None = None,
                          ns: str | None = None) -> type[RuleBasedStateMachine]:
    """A state machine class comparing ``backend`` with a fresh in-memory store per run."""
    if reference_factory is None:
        from .reference_storage import InMemoryArtifactStore as reference_factory  # noqa: N813
    base = ns or f"sm{uuid.uuid4().hex[:8]}"
    runs = itertools.count()
    # No key is a folder of another: a file "a" next to "a/b" is impossible on a local disk.
    names = ["x", "y", "a/b", "a/c", "d/e/f", "xy"]

    class StorageComparison(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.ref = reference_factory()
            self.prefix = f"{base}-{next(runs)}"

        def key(self, i: int) -> str:
            return f"{self.prefix}/{names[i]}"

        def both(self, op: Callable[[ArtifactStore], Any]) -> Any:
            expected = outcome(lambda: op(self.ref))
            actual = outcome(lambda: op(backend))
            if actual != expected:
                shown = [repr(x)[:200] for x in (actual, expected)]
                raise AssertionError(f"backend gave {shown[0]}, reference model gave {shown[1]}")
            return actual

        k = st.integers(min_value=0, max_value=len(names) - 1)

        # Large blobs are derived from a seed: generating 100 kB byte by byte would dominate the run.
        large = st.builds(lambda seed, size: random.Random(seed).randbytes(size),
                          st.integers(min_value=0, max_value=2 ** 16), st.integers(min_value=70_000, max_value=300_000))

        @rule(k=k, data=st.binary(max_size=2048) | large)
        def write(self, k: int, data: bytes) -> None:
            self.both(lambda s: s.write_bytes(self.key(k), data))

        @rule(k=k)
        def delete(self, k: int) -> None:
            self.both(lambda s: s.delete(self.key(k)))

        @rule(k=k)
        def read(self, k: int) -> None:
            self.both(lambda s: s.read_bytes(self.key(k)))

        @invariant()
        def contents_agree(self) -> None:
            self.both(lambda s: s.list(self.prefix + "/"))
            for i in range(len(names)):
                self.both(lambda s: (s.exists(self.key(i)), outcome(lambda: s.read_bytes(self.key(i)))))

    return StorageComparison


def _run(machine: type[RuleBasedStateMachine], overrides: dict[str, Any] | None) -> None:
    run_state_machine_as_test(machine, settings=settings(**{**DEFAULT_SETTINGS, **(overrides or {})}))


def run_registry_state_machine(backend: ModelRegistry, *, settings_overrides: dict[str, Any] | None = None,
                               reference_factory: Callable[[], ModelRegistry] | None = None,
                               counter_survives_model_delete: bool = True) -> None:
    """Run the registry comparison against ``backend``; raises AssertionError with the failing steps."""
    machine = registry_state_machine(backend, reference_factory,
                                     counter_survives_model_delete=counter_survives_model_delete)
    _run(machine, settings_overrides)


def run_storage_state_machine(backend: ArtifactStore, *, settings_overrides: dict[str, Any] | None = None,
                              reference_factory: Callable[[], ArtifactStore] | None = None) -> None:
    """Run the storage comparison against ``backend``; raises AssertionError with the failing steps."""
    _run(storage_state_machine(backend, reference_factory), settings_overrides)
