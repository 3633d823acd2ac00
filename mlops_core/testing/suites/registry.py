"""``RegistrySuite``: the conformance tests of a :class:`~mlops_core.interfaces.ModelRegistry`.

::

    import pytest
    from mlops_core.testing.suites import RegistrySuite

    class TestMyRegistry(RegistrySuite):
        @pytest.fixture
        def backend(self, tmp_path):
            registry = MyRegistry(tmp_path / "registry.db")
            yield registry
            registry.close()

        # optional: a factory of extra instances on the same store (one per thread
        # in the concurrency test); by default the threads share ``backend``.
        @pytest.fixture
        def make_backend(self, tmp_path, backend):
            return lambda: MyRegistry(tmp_path / "registry.db")

Model names carry a per-test prefix, so a shared database needs no cleanup.
The semantics checked are those of the ABC docstrings, pinned down by the
reference model :class:`~mlops_core.testing.reference_registry.InMemoryRegistry`.
"""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Any, Callable, ClassVar

import pytest

from ...entities import AliasChange, ArtifactRef, Lineage, ModelVersion, RegisteredModel
from ...errors import InvalidInputError, NotFoundError
from ...interfaces import ModelRegistry
from ._base import ConformanceSuite

__all__ = ["RegistrySuite", "artifact"]


def artifact(i: int = 0) -> ArtifactRef:
    """A distinct, well-formed artifact reference."""
    return ArtifactRef(uri="memory://kit/artifacts", digest="sha256:" + f"{i:064x}")


def _collect(fetch: Callable[[str | None], Any], limit: int = 10_000) -> list[Any]:
    items: list[Any] = []
    token = None
    for _ in range(limit):
        page = fetch(token)
        assert len(set(map(repr, page.items))) == len(page.items)
        items.extend(page.items)
        token = page.next_token
        if not token:
            return items
    raise AssertionError("paging never ended")


class RegistrySuite(ConformanceSuite):
    """Conformance tests for a ModelRegistry; define the ``backend`` fixture."""

    CAPABILITIES: ClassVar[dict[str, str]] = {
        "concurrent_writers": "hands out gapless, unique version numbers to concurrent writers",
        "validates_input": "refuses malformed model names, aliases, tag keys and versions with InvalidInputError",
        "counter_survives_model_delete": "never reuses a version number, even after delete_model and re-creation",
        "state_machine": "can run the Hypothesis comparison with the in-memory reference (a few hundred operations)",
    }
    concurrent_writers = True
    validates_input = True
    counter_survives_model_delete = True
    state_machine = True
    #: Threads and versions per thread in the concurrency test.
    concurrency: ClassVar[tuple[int, int]] = (8, 15)
    state_machine_settings: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def make_backend(self, backend: ModelRegistry) -> Callable[[], ModelRegistry]:
        """Override to give each writer thread its own instance (connection) on the same store."""
        return lambda: backend

    # numbering ------------------------------------------------------------------
    def test_is_a_model_registry(self, backend: Any) -> None:
        assert isinstance(backend, ModelRegistry)
        assert isinstance(backend.check(), str)

    def test_first_version_is_one(self, backend: ModelRegistry, ns: str) -> None:
        v = backend.create_version(f"{ns}-m", artifact(1))
        assert isinstance(v, ModelVersion)
        assert (v.model, v.version, v.artifact) == (f"{ns}-m", 1, artifact(1))
        assert v.uri == f"models:/{ns}-m/1"

    def test_versions_are_consecutive(self, backend: ModelRegistry, ns: str) -> None:
        numbers = [backend.create_version(f"{ns}-m", artifact(i)).version for i in range(6)]
        assert numbers == [1, 2, 3, 4, 5, 6], f"versions must be 1..n without gap or duplicate, got {numbers}"
        assert backend.get_model(f"{ns}-m").latest_version == 6

    def test_each_model_counts_on_its_own(self, backend: ModelRegistry, ns: str) -> None:
        a = [backend.create_version(f"{ns}-a", artifact(i)).version for i in range(3)]
        b = [backend.create_version(f"{ns}-b", artifact(i)).version for i in range(2)]
        assert (a, b) == ([1, 2, 3], [1, 2])

    def test_deleted_numbers_are_never_reused(self, backend: ModelRegistry, ns: str) -> None:
        for i in range(3):
            backend.create_version(f"{ns}-m", artifact(i))
        backend.delete_version(f"{ns}-m", 3)
        assert backend.create_version(f"{ns}-m", artifact(9)).version == 4, "version 3 was deleted: the next is 4"
        backend.delete_version(f"{ns}-m", 2)
        with pytest.raises(NotFoundError):
            backend.get_version(f"{ns}-m", 2)
        assert [v.version for v in backend.search_versions(f"{ns}-m").items] == [4, 1]

    def test_numbers_survive_model_delete(self, backend: ModelRegistry, ns: str) -> None:
        self.require("counter_survives_model_delete")
        backend.create_version(f"{ns}-m", artifact(1))
        backend.create_version(f"{ns}-m", artifact(2))
        backend.delete_model(f"{ns}-m")
        assert backend.create_version(f"{ns}-m", artifact(3)).version == 3

    def test_concurrent_writers_get_gapless_numbers(self, make_backend: Callable[[], ModelRegistry], ns: str) -> None:
        self.require("concurrent_writers")
        threads_n, per_thread = self.concurrency
        results: list[int] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(threads_n)

        def writer(i: int) -> None:
            registry = make_backend()
            try:
                start.wait()
                for j in range(per_thread):
                    v = registry.create_version(f"{ns}-hot", artifact(i * 1000 + j))
                    with lock:
                        results.append(v.version)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"concurrent writers failed: {errors[:3]}"
        total = threads_n * per_thread
        duplicates = sorted({n for n in results if results.count(n) > 1})
        assert not duplicates, f"version numbers handed out twice: {duplicates[:10]}"
        assert sorted(results) == list(range(1, total + 1)), "version numbers have gaps"
        registry = make_backend()
        stored = [v.version for v in _collect(lambda t: registry.search_versions(f"{ns}-hot", page_size=50, page_token=t))]
        assert stored == list(range(total, 0, -1))

    # content ----------------------------------------------------------------------
    def test_version_round_trip(self, backend: ModelRegistry, ns: str) -> None:
        lineage = Lineage(source_run="run-42", dataset_uri="s3://data/iris.csv", parent_version=None)
        created = backend.create_version(f"{ns}-m", artifact(7), description="first try",
                                         tags={"team": "fraud", "stage": "dev"}, lineage=lineage)
        got = backend.get_version(f"{ns}-m", 1)
        for v in (created, got):
            assert v.artifact == artifact(7)
            assert v.description == "first try"
            assert dict(v.tags) == {"team": "fraud", "stage": "dev"}
            assert v.lineage == lineage
            assert isinstance(v.created_at, _dt.datetime) and v.created_at.tzinfo is not None, \
                "created_at must be a timezone-aware datetime"
        second = backend.create_version(f"{ns}-m", artifact(8), lineage=Lineage(parent_version=1))
        assert backend.get_version(f"{ns}-m", second.version).lineage.parent_version == 1

    def test_unicode_text_round_trips(self, backend: ModelRegistry, ns: str) -> None:
        text = "Modèle « fraude » – 検出 ✓"
        backend.create_version(f"{ns}-m", artifact(1), description=text, tags={"note": text})
        v = backend.get_version(f"{ns}-m", 1)
        assert (v.description, v.tags["note"]) == (text, text)

    def test_get_model(self, backend: ModelRegistry, ns: str) -> None:
        backend.create_version(f"{ns}-m", artifact(1))
        backend.create_version(f"{ns}-m", artifact(2))
        m = backend.get_model(f"{ns}-m")
        assert isinstance(m, RegisteredModel)
        assert (m.name, m.latest_version, dict(m.aliases)) == (f"{ns}-m", 2, {})
        assert m.created_at.tzinfo is not None and m.updated_at >= m.created_at

    def test_unknown_things_raise_not_found(self, backend: ModelRegistry, ns: str) -> None:
        backend.create_version(f"{ns}-m", artifact(1))
        backend.set_alias(f"{ns}-m", "prod", 1)
        calls = {
            "get_model(unknown)": lambda: backend.get_model(f"{ns}-nope"),
            "get_version(unknown model)": lambda: backend.get_version(f"{ns}-nope", 1),
            "get_version(unknown version)": lambda: backend.get_version(f"{ns}-m", 99),
            "get_alias(unknown alias)": lambda: backend.get_alias(f"{ns}-m", "staging"),
            "get_alias(unknown model)": lambda: backend.get_alias(f"{ns}-nope", "prod"),
            "set_alias(unknown version)": lambda: backend.set_alias(f"{ns}-m", "staging", 5),
            "delete_alias(unknown alias)": lambda: backend.delete_alias(f"{ns}-m", "staging"),
            "delete_version(unknown version)": lambda: backend.delete_version(f"{ns}-m", 99),
            "delete_model(unknown)": lambda: backend.delete_model(f"{ns}-nope"),
            "set_tag(unknown model)": lambda: backend.set_tag(f"{ns}-nope", "k", "v"),
            "set_tag(unknown version)": lambda: backend.set_tag(f"{ns}-m", "k", "v", version=99),
            "set_description(unknown model)": lambda: backend.set_description(f"{ns}-nope", "d"),
            "latest_version(unknown)": lambda: backend.latest_version(f"{ns}-nope"),
        }
        for what, call in calls.items():
            with pytest.raises(NotFoundError):
                call()
                pytest.fail(f"{what} did not raise NotFoundError")
        assert backend.get_alias(f"{ns}-m", "prod").version == 1, "failed calls must not change anything"

    def test_invalid_input_is_refused(self, backend: ModelRegistry, ns: str) -> None:
        self.require("validates_input")
        backend.create_version(f"{ns}-m", artifact(1))
        calls = {
            "model name with '/'": lambda: backend.create_version("bad/name", artifact(1)),
            "empty model name": lambda: backend.create_version("", artifact(1)),
            "alias 'latest'": lambda: backend.set_alias(f"{ns}-m", "latest", 1),
            "alias starting with a digit": lambda: backend.set_alias(f"{ns}-m", "1st", 1),
            "tag key with a space": lambda: backend.set_tag(f"{ns}-m", "bad key", "v"),
            "version 0": lambda: backend.get_version(f"{ns}-m", 0),
        }
        for what, call in calls.items():
            with pytest.raises(InvalidInputError):
                call()
                pytest.fail(f"{what} was accepted")

    # aliases ------------------------------------------------------------------
    def test_alias_set_move_delete(self, backend: ModelRegistry, ns: str) -> None:
        m = f"{ns}-m"
        for i in range(2):
            backend.create_version(m, artifact(i))
        assert backend.set_alias(m, "production", 1) == AliasChange(m, "production", 1, None)
        assert backend.get_alias(m, "production").version == 1
        assert backend.get_version(m, 1).aliases == ("production",)
        assert backend.set_alias(m, "production", 2) == AliasChange(m, "production", 2, 1)
        assert backend.get_alias(m, "production").version == 2
        assert backend.get_version(m, 1).aliases == ()
        assert dict(backend.get_model(m).aliases) == {"production": 2}
        assert backend.resolve(f"models:/{m}@production").version == 2
        assert backend.delete_alias(m, "production") == AliasChange(m, "production", None, 2)
        with pytest.raises(NotFoundError):
            backend.get_alias(m, "production")

    def test_one_version_many_aliases(self, backend: ModelRegistry, ns: str) -> None:
        m = f"{ns}-m"
        backend.create_version(m, artifact(1))
        backend.set_alias(m, "staging", 1)
        backend.set_alias(m, "canary", 1)
        assert backend.get_version(m, 1).aliases == ("canary", "staging"), "aliases are listed sorted"

    def test_deleting_a_version_drops_its_aliases(self, backend: ModelRegistry, ns: str) -> None:
        m = f"{ns}-m"
        backend.create_version(m, artifact(1))
        backend.create_version(m, artifact(2))
        backend.set_alias(m, "prod", 2)
        backend.set_alias(m, "old", 1)
        backend.delete_version(m, 2)
        with pytest.raises(NotFoundError):
            backend.get_alias(m, "prod")
        assert dict(backend.get_model(m).aliases) == {"old": 1}
        assert backend.latest_version(m).version == 1

    # tags and descriptions ----------------------------------------------------
    def test_tags(self, backend: ModelRegistry, ns: str) -> None:
        m = f"{ns}-m"
        backend.create_version(m, artifact(1), tags={"a": "1"})
        backend.set_tag(m, "owner", "ana")
        backend.set_tag(m, "owner", "bo")  # overwrite
        backend.set_tag(m, "stage", "dev", version=1)
        assert dict(backend.get_model(m).tags) == {"owner": "bo"}
        assert dict(backend.get_version(m, 1).tags) == {"a": "1", "stage": "dev"}
        backend.set_tag(m, "a", None, version=1)
        backend.set_tag(m, "owner", None)
        backend.set_tag(m, "never-set", None)  # removing an absent tag is fine
        assert dict(backend.get_model(m).tags) == {}
        assert dict(backend.get_version(m, 1).tags) == {"stage": "dev"}

    def test_descriptions(self, backend: ModelRegistry, ns: str) -> None:
        m = f"{ns}-m"
        backend.create_version(m, artifact(1), description="v1")
        backend.set_description(m, "the model")
        backend.set_description(m, "version one", version=1)
        assert backend.get_model(m).description == "the model"
        assert backend.get_version(m, 1).description == "version one"

    # search and paging -----------------------------------------------------------
    def test_search_models(self, backend: ModelRegistry, ns: str) -> None:
        names = [f"{ns}-{c}" for c in "edcba"]
        for n in names:
            backend.create_version(n, artifact(1))
        backend.set_tag(f"{ns}-b", "team", "x")
        backend.set_tag(f"{ns}-d", "team", "x")
        backend.set_tag(f"{ns}-e", "team", "y")
        found = _collect(lambda t: backend.search_models(name_contains=ns, page_size=2, page_token=t))
        assert [m.name for m in found] == sorted(names), "models are ordered by name; paging neither repeats nor skips"
        tagged = backend.search_models(name_contains=ns, tags={"team": "x"}).items
        assert [m.name for m in tagged] == [f"{ns}-b", f"{ns}-d"]
        assert [m.name for m in backend.search_models(name_contains=f"{ns}-c").items] == [f"{ns}-c"]
        assert backend.search_models(name_contains=f"{ns}-zz").items == ()

    def test_search_versions_order_and_paging(self, backend: ModelRegistry, ns: str) -> None:
        for n, count in ((f"{ns}-b", 3), (f"{ns}-a", 4)):
            for i in range(count):
                backend.create_version(n, artifact(i), tags={"kit": ns, "even": str(i % 2 == 0)})
        one = _collect(lambda t: backend.search_versions(f"{ns}-a", page_size=3, page_token=t))
        assert [v.version for v in one] == [4, 3, 2, 1], "versions of a model come newest first"
        every = _collect(lambda t: backend.search_versions(None, tags={"kit": ns}, page_size=2, page_token=t))
        assert [(v.model, v.version) for v in every] == \
            [(f"{ns}-a", 4), (f"{ns}-a", 3), (f"{ns}-a", 2), (f"{ns}-a", 1), (f"{ns}-b", 3), (f"{ns}-b", 2), (f"{ns}-b", 1)]
        even = backend.search_versions(f"{ns}-a", tags={"even": "True"}).items
        assert [v.version for v in even] == [3, 1]
        assert backend.latest_version(f"{ns}-b").version == 3
        assert backend.resolve(f"models:/{ns}-b").version == 3
        assert backend.resolve(f"models:/{ns}-b/2").version == 2

    def test_search_versions_of_unknown_model(self, backend: ModelRegistry, ns: str) -> None:
        try:
            page = backend.search_versions(f"{ns}-nope")
        except NotFoundError:
            return
        assert page.items == () and page.next_token is None

    def test_paging_with_bad_token_is_refused(self, backend: ModelRegistry, ns: str) -> None:
        self.require("validates_input")
        backend.create_version(f"{ns}-m", artifact(1))
        with pytest.raises(InvalidInputError):
            backend.search_versions(f"{ns}-m", page_token="not-a-token")
        with pytest.raises(InvalidInputError):
            backend.search_models(page_token="not-a-token")

    def test_page_token_is_bound_to_its_filters(self, backend: ModelRegistry, ns: str) -> None:
        """A token reused under other filters is refused, never silently resumed in another listing."""
        self.require("validates_input")
        for n in (f"{ns}-a", f"{ns}-b"):
            for i in range(3):
                backend.create_version(n, artifact(i), tags={"kit": ns})
        versions = backend.search_versions(f"{ns}-a", page_size=1)
        assert versions.next_token, "three versions with page_size=1 make more than one page"
        for other in ({"model": f"{ns}-b"}, {"model": f"{ns}-a", "tags": {"kit": "other"}},
                      {"model": None, "tags": {"kit": ns}}):
            with pytest.raises(InvalidInputError):
                backend.search_versions(other.get("model"), tags=other.get("tags"), page_size=1,
                                        page_token=versions.next_token)
        models = backend.search_models(name_contains=ns, page_size=1)
        assert models.next_token
        with pytest.raises(InvalidInputError):
            backend.search_models(name_contains=f"{ns}-b", page_size=1, page_token=models.next_token)
        with pytest.raises(InvalidInputError):
            backend.search_models(name_contains=ns, tags={"kit": ns}, page_size=1, page_token=models.next_token)
        with pytest.raises(InvalidInputError):  # a versions token is no models token
            backend.search_models(name_contains=ns, page_size=1, page_token=versions.next_token)
        # The same filters (and another page size) resume where the page ended.
        rest = backend.search_versions(f"{ns}-a", page_size=5, page_token=versions.next_token)
        assert [v.version for v in rest.items] == [2, 1]

    def test_page_size_rule(self, backend: ModelRegistry, ns: str) -> None:
        """One rule everywhere: 1..MAX_PAGE_SIZE (mlops_core.entities)."""
        self.require("validates_input")
        from ...entities import MAX_PAGE_SIZE

        backend.create_version(f"{ns}-m", artifact(1))
        for bad in (0, -1, MAX_PAGE_SIZE + 1, True, 1.5):
            with pytest.raises(InvalidInputError):
                backend.search_versions(f"{ns}-m", page_size=bad)
            with pytest.raises(InvalidInputError):
                backend.search_models(page_size=bad)
        assert len(backend.search_versions(f"{ns}-m", page_size=MAX_PAGE_SIZE).items) == 1

    # deletion -------------------------------------------------------------------
    def test_delete_model(self, backend: ModelRegistry, ns: str) -> None:
        m = f"{ns}-m"
        backend.create_version(m, artifact(1))
        backend.set_alias(m, "prod", 1)
        backend.create_version(f"{ns}-other", artifact(1))
        backend.delete_model(m)
        with pytest.raises(NotFoundError):
            backend.get_model(m)
        with pytest.raises(NotFoundError):
            backend.get_version(m, 1)
        assert [x.name for x in backend.search_models(name_contains=ns).items] == [f"{ns}-other"]
        assert backend.get_version(f"{ns}-other", 1).version == 1

    # the model ------------------------------------------------------------------
    def test_matches_reference_model(self, backend: ModelRegistry) -> None:
        """Hypothesis: random operations agree with InMemoryRegistry, values and errors alike."""
        self.require("state_machine")
        pytest.importorskip("hypothesis", reason="the state machine needs hypothesis (pip install hypothesis)")
        from ..stateful import run_registry_state_machine

        run_registry_state_machine(backend, settings_overrides=self.state_machine_settings,
                                   counter_survives_model_delete=self.counter_survives_model_delete)
