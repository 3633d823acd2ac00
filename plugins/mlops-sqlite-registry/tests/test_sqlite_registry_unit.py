"""Unit tests of the SQLite registry: every method, its errors, paging, connections.

Tests of the registry *contract* run against both the SQLite registry and the
in-memory reference (``impl`` fixture), so the two cannot drift apart; tests of
SQLite-specific behaviour (hints, persistence, locking, threads) use ``registry``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlops_core.entities import AliasChange, ArtifactRef, Lineage, ModelURI
from mlops_core.errors import BackendUnavailableError, ConfigError, InvalidInputError, NotFoundError
from mlops_core.interfaces import BackendContext
from mlops_core.plugins import PluginManager
from mlops_core.testing.reference_registry import InMemoryRegistry
from mlops_sqlite_registry import registry as registry_module
from mlops_sqlite_registry.registry import SqliteRegistry, SqliteRegistryConfig

ART = ArtifactRef(uri="file:///store", digest="sha256:" + "0" * 64)


def art(n: int) -> ArtifactRef:
    return ArtifactRef(uri="file:///store", digest=f"sha256:{n:064x}")


@pytest.fixture
def registry(tmp_path: Path):
    reg = SqliteRegistry(tmp_path / "registry.db")
    yield reg
    reg.close()


@pytest.fixture(params=["sqlite", "reference"])
def impl(request, tmp_path: Path):
    reg = SqliteRegistry(tmp_path / "registry.db") if request.param == "sqlite" else InMemoryRegistry()
    yield reg
    reg.close()


def collect(search, **kw):
    """Every item of a paged search, following next_token."""
    items, token, pages = [], None, 0
    while True:
        page = search(page_token=token, **kw)
        items += page.items
        pages += 1
        token = page.next_token
        if token is None:
            return items, pages


# ------------------------------------------------------------ create / get
def test_versions_are_numbered_from_one_and_model_is_created(impl):
    versions = [impl.create_version("iris", art(i)) for i in range(3)]
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.artifact for v in versions] == [art(0), art(1), art(2)]
    model = impl.get_model("iris")
    assert model.name == "iris" and model.latest_version == 3 and model.aliases == {} and model.tags == {}


def test_models_are_numbered_independently(impl):
    impl.create_version("a", ART)
    impl.create_version("a", ART)
    assert impl.create_version("b", ART).version == 1


def test_create_version_round_trips_every_field(impl):
    lineage = Lineage(source_run="run-7", dataset_uri="s3://bucket/train.parquet", parent_version=None)
    created = impl.create_version("iris", ART, description="first", tags={"stage": "dev", "team/owner": "ml"},
                                  lineage=lineage)
    assert created.description == "first" and created.tags == {"stage": "dev", "team/owner": "ml"}
    assert created.lineage == lineage and created.aliases == () and created.uri == "models:/iris/1"
    child = impl.create_version("iris", ART, lineage=Lineage(parent_version=1))
    fetched = impl.get_version("iris", 1)
    assert (fetched.model, fetched.version, fetched.artifact, fetched.description, fetched.tags, fetched.lineage) == (
        created.model, created.version, created.artifact, created.description, created.tags, created.lineage)
    assert fetched.created_at == created.created_at
    assert impl.get_version("iris", 2).lineage == Lineage(parent_version=1) == child.lineage


@pytest.mark.parametrize("name", ["", "-lead", "has space", "x" * 129, "a/b", None, 3])
def test_invalid_model_names_are_refused(impl, name):
    with pytest.raises(InvalidInputError):
        impl.create_version(name, ART)


@pytest.mark.parametrize("kwargs", [
    {"tags": {"bad key!": "x"}},
    {"tags": {"ok": 3}},
    {"tags": ["not", "a", "mapping"]},
    {"description": 42},
    {"lineage": "run-1"},
])
def test_invalid_version_fields_are_refused(impl, kwargs):
    with pytest.raises(InvalidInputError):
        impl.create_version("iris", ART, **kwargs)
    with pytest.raises(NotFoundError):  # nothing was half-created
        impl.get_model("iris")


def test_artifact_must_be_an_artifact_ref(impl):
    with pytest.raises(InvalidInputError):
        impl.create_version("iris", "file:///store#sha256:00")  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0])
def test_invalid_version_numbers_are_refused(impl, version):
    impl.create_version("iris", ART)
    with pytest.raises(InvalidInputError):
        impl.get_version("iris", version)


def test_unknown_model_and_version(impl):
    impl.create_version("iris", ART)
    with pytest.raises(NotFoundError):
        impl.get_model("wine")
    with pytest.raises(NotFoundError):
        impl.get_version("wine", 1)
    with pytest.raises(NotFoundError):
        impl.get_version("iris", 2)


def test_not_found_messages_say_what_to_do(registry):
    registry.create_version("iris-classifier", ART)
    registry.create_version("iris-classifier", ART)
    with pytest.raises(NotFoundError) as err:
        registry.get_model("iris-clasifier")
    assert err.value.hint == "did you mean 'iris-classifier'?"
    with pytest.raises(NotFoundError) as err:
        registry.get_model("zzz")
    assert "mlops models list" in err.value.hint
    with pytest.raises(NotFoundError) as err:
        registry.get_version("iris-classifier", 7)
    assert "has no version 7" in err.value.message and "latest version is 2" in err.value.hint
    registry.delete_version("iris-classifier", 1)
    with pytest.raises(NotFoundError) as err:
        registry.get_version("iris-classifier", 1)
    assert "was deleted" in err.value.message and "never reused" in err.value.hint
    with pytest.raises(NotFoundError) as err:
        registry.get_alias("iris-classifier", "champion")
    assert "no aliases yet" in err.value.hint and "mlops models alias iris-classifier champion" in err.value.hint
    registry.set_alias("iris-classifier", "staging", 2)
    with pytest.raises(NotFoundError) as err:
        registry.get_alias("iris-classifier", "champion")
    assert "aliases of 'iris-classifier': staging" in err.value.hint


# --------------------------------------------------------------- aliases
def test_alias_set_move_and_delete(impl):
    for _ in range(3):
        impl.create_version("iris", ART)
    assert impl.set_alias("iris", "champion", 1) == AliasChange("iris", "champion", 1, None)
    assert impl.set_alias("iris", "champion", 3) == AliasChange("iris", "champion", 3, 1)
    assert impl.set_alias("iris", "champion", 3) == AliasChange("iris", "champion", 3, 3)
    impl.set_alias("iris", "staging", 3)
    impl.set_alias("iris", "shadow", 2)
    assert impl.get_alias("iris", "champion").version == 3
    assert impl.get_version("iris", 3).aliases == ("champion", "staging")
    assert impl.get_version("iris", 1).aliases == ()
    assert impl.get_model("iris").aliases == {"champion": 3, "staging": 3, "shadow": 2}
    assert impl.resolve("models:/iris@shadow").version == 2
    assert impl.delete_alias("iris", "champion") == AliasChange("iris", "champion", None, 3)
    with pytest.raises(NotFoundError):
        impl.get_alias("iris", "champion")
    with pytest.raises(NotFoundError):
        impl.delete_alias("iris", "champion")


def test_alias_errors(impl):
    impl.create_version("iris", ART)
    with pytest.raises(NotFoundError):
        impl.set_alias("iris", "champion", 2)
    with pytest.raises(NotFoundError):
        impl.set_alias("wine", "champion", 1)
    with pytest.raises(NotFoundError):
        impl.get_alias("wine", "champion")
    with pytest.raises(NotFoundError):
        impl.delete_alias("wine", "champion")
    for bad in ("latest", "1st", "has space", ""):
        with pytest.raises(InvalidInputError):
            impl.set_alias("iris", bad, 1)
    with pytest.raises(InvalidInputError):
        impl.set_alias("iris", "champion", 0)


# ---------------------------------------------------- tags, descriptions
def test_model_tags(impl):
    impl.create_version("iris", ART)
    impl.set_tag("iris", "owner", "ana")
    impl.set_tag("iris", "domain", "flowers")
    impl.set_tag("iris", "owner", "bo")
    assert impl.get_model("iris").tags == {"owner": "bo", "domain": "flowers"}
    impl.set_tag("iris", "owner", None)
    impl.set_tag("iris", "never-set", None)  # removing an absent tag is fine
    assert impl.get_model("iris").tags == {"domain": "flowers"}


def test_version_tags(impl):
    impl.create_version("iris", ART, tags={"a": "1"})
    impl.create_version("iris", ART)
    impl.set_tag("iris", "b", "2", version=1)
    impl.set_tag("iris", "a", "9", version=1)
    impl.set_tag("iris", "c", "3", version=2)
    assert impl.get_version("iris", 1).tags == {"a": "9", "b": "2"}
    impl.set_tag("iris", "a", None, version=1)
    assert impl.get_version("iris", 1).tags == {"b": "2"}
    assert impl.get_version("iris", 2).tags == {"c": "3"}
    assert impl.get_model("iris").tags == {}


def test_tag_errors(impl):
    impl.create_version("iris", ART)
    with pytest.raises(NotFoundError):
        impl.set_tag("wine", "k", "v")
    with pytest.raises(NotFoundError):
        impl.set_tag("iris", "k", "v", version=5)
    with pytest.raises(InvalidInputError):
        impl.set_tag("iris", "bad key", "v")
    with pytest.raises(InvalidInputError):
        impl.set_tag("iris", "k", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        impl.set_tag("iris", "k", "v", version=-2)


def test_descriptions(impl):
    impl.create_version("iris", ART, description="v1")
    impl.set_description("iris", "Iris classifier")
    impl.set_description("iris", "retrained", version=1)
    assert impl.get_model("iris").description == "Iris classifier"
    assert impl.get_version("iris", 1).description == "retrained"
    with pytest.raises(NotFoundError):
        impl.set_description("wine", "x")
    with pytest.raises(NotFoundError):
        impl.set_description("iris", "x", version=2)
    with pytest.raises(InvalidInputError):
        impl.set_description("iris", None)  # type: ignore[arg-type]


def test_updated_at_moves_on_change(registry):
    registry.create_version("iris", ART)
    before = registry.get_model("iris")
    registry.set_tag("iris", "k", "v")
    after = registry.get_model("iris")
    assert after.updated_at >= before.updated_at and after.created_at == before.created_at


# --------------------------------------------------------------- deletion
def test_delete_version_takes_its_aliases_and_never_reuses_the_number(impl):
    for _ in range(3):
        impl.create_version("iris", ART)
    impl.set_alias("iris", "champion", 3)
    impl.set_alias("iris", "staging", 2)
    impl.delete_version("iris", 3)
    with pytest.raises(NotFoundError):
        impl.get_version("iris", 3)
    with pytest.raises(NotFoundError):
        impl.get_alias("iris", "champion")
    assert impl.get_model("iris").aliases == {"staging": 2}
    assert impl.get_model("iris").latest_version == 2
    assert impl.create_version("iris", ART).version == 4
    with pytest.raises(NotFoundError):
        impl.delete_version("iris", 3)
    with pytest.raises(NotFoundError):
        impl.delete_version("wine", 1)


def test_deleting_every_version_keeps_an_empty_model(impl):
    impl.create_version("iris", ART)
    impl.delete_version("iris", 1)
    model = impl.get_model("iris")
    assert model.latest_version is None
    assert impl.search_versions("iris").items == ()
    with pytest.raises(NotFoundError):
        impl.latest_version("iris")


def test_delete_model_removes_everything_but_keeps_the_numbers_used(impl):
    impl.create_version("iris", ART, tags={"a": "1"})
    impl.create_version("iris", ART)
    impl.set_alias("iris", "champion", 2)
    impl.set_tag("iris", "owner", "ana")
    impl.create_version("wine", ART)
    impl.delete_model("iris")
    with pytest.raises(NotFoundError):
        impl.get_model("iris")
    with pytest.raises(NotFoundError):
        impl.get_version("iris", 1)
    with pytest.raises(NotFoundError):
        impl.delete_model("iris")
    assert [m.name for m in impl.search_models().items] == ["wine"]
    assert [(v.model, v.version) for v in impl.search_versions().items] == [("wine", 1)]
    # A re-created model continues the numbering: models:/iris/1 never means two things.
    recreated = impl.create_version("iris", ART)
    assert recreated.version == 3 and recreated.tags == {}
    model = impl.get_model("iris")
    assert model.tags == {} and model.aliases == {} and model.latest_version == 3


# ------------------------------------------------------------------ search
def test_search_models_filters_and_order(impl):
    for name in ["zeta", "alpha", "Beta", "alphabet", "gamma"]:
        impl.create_version(name, ART)
    impl.set_tag("alpha", "team", "red")
    impl.set_tag("gamma", "team", "red")
    impl.set_tag("gamma", "tier", "1")
    impl.set_tag("zeta", "team", "blue")
    names = lambda page: [m.name for m in page.items]  # noqa: E731
    assert names(impl.search_models()) == ["Beta", "alpha", "alphabet", "gamma", "zeta"]
    assert names(impl.search_models(name_contains="alpha")) == ["alpha", "alphabet"]
    assert names(impl.search_models(name_contains="bet")) == ["alphabet"]  # case-sensitive
    assert names(impl.search_models(name_contains="Bet")) == ["Beta"]
    assert names(impl.search_models(name_contains="")) == names(impl.search_models())
    assert names(impl.search_models(tags={"team": "red"})) == ["alpha", "gamma"]
    assert names(impl.search_models(tags={"team": "red", "tier": "1"})) == ["gamma"]
    assert names(impl.search_models(tags={"team": "red"}, name_contains="ph")) == ["alpha"]
    assert names(impl.search_models(tags={"team": "green"})) == []
    model = impl.search_models(name_contains="gamma").items[0]
    assert model.tags == {"team": "red", "tier": "1"} and model.latest_version == 1


def test_search_models_paging_visits_each_model_once(impl):
    expected = sorted(f"model-{i:02d}" for i in range(23))
    for name in reversed(expected):
        impl.create_version(name, ART)
    items, pages = collect(impl.search_models, page_size=5)
    assert [m.name for m in items] == expected and pages == 5
    items, pages = collect(impl.search_models, page_size=23)
    assert len(items) == 23 and pages == 1
    items, pages = collect(impl.search_models, page_size=10, name_contains="model-1")
    assert [m.name for m in items] == [f"model-1{i}" for i in range(10)] and pages == 1


def test_search_versions_order_filters_and_paging(impl):
    for name in ["b", "a", "c"]:
        for i in range(4):
            impl.create_version(name, ART, tags={"parity": "even" if i % 2 else "odd"})
    keys = lambda items: [(v.model, v.version) for v in items]  # noqa: E731
    everything = [(m, v) for m in "abc" for v in (4, 3, 2, 1)]
    assert keys(impl.search_versions().items) == everything
    assert keys(impl.search_versions("b").items) == [("b", 4), ("b", 3), ("b", 2), ("b", 1)]
    assert keys(impl.search_versions("b", tags={"parity": "even"}).items) == [("b", 4), ("b", 2)]
    assert keys(impl.search_versions(tags={"parity": "odd"}).items) == [
        ("a", 3), ("a", 1), ("b", 3), ("b", 1), ("c", 3), ("c", 1)]
    items, pages = collect(impl.search_versions, page_size=5)
    assert keys(items) == everything and pages == 3
    items, pages = collect(impl.search_versions, page_size=1, model="c")
    assert keys(items) == [("c", 4), ("c", 3), ("c", 2), ("c", 1)] and pages == 4
    assert impl.latest_version("b").version == 4
    assert impl.resolve(ModelURI.parse("models:/a/2")).version == 2
    assert impl.resolve("models:/c").version == 4


def test_search_versions_of_unknown_model_is_not_found(impl):
    impl.create_version("iris", ART)
    with pytest.raises(NotFoundError):
        impl.search_versions("wine")


def test_paging_is_stable_under_concurrent_inserts(impl):
    for name in ["a", "c"]:
        impl.create_version(name, ART)
    first = impl.search_models(page_size=1)
    impl.create_version("b", ART)  # inserted after the page boundary: shows up, nothing repeats
    rest, _ = collect(impl.search_models, page_size=1)
    second = impl.search_models(page_size=5, page_token=first.next_token)
    assert [m.name for m in first.items] == ["a"] and [m.name for m in second.items] == ["b", "c"]
    assert len(rest) == 3


@pytest.mark.parametrize("token", ["", "garbage", "!!!!", "eyJ9", "WzEsMiwzXQ", 7])
def test_bad_page_tokens_are_refused(impl, token):
    impl.create_version("iris", ART)
    with pytest.raises(InvalidInputError):
        impl.search_models(page_token=token)
    with pytest.raises(InvalidInputError):
        impl.search_versions(page_token=token)


def test_page_token_of_one_listing_is_refused_by_another(impl):
    for name in ["a", "b", "c"]:
        impl.create_version(name, ART)
        impl.create_version(name, ART)
    models_token = impl.search_models(page_size=1).next_token
    versions_token = impl.search_versions(page_size=1).next_token
    with pytest.raises(InvalidInputError):
        impl.search_versions(page_token=models_token)
    with pytest.raises(InvalidInputError):
        impl.search_models(page_token=versions_token)


def test_page_token_with_other_filters_is_refused(registry):
    for name in ["a", "b", "c"]:
        registry.create_version(name, ART)
    token = registry.search_models(page_size=1).next_token
    with pytest.raises(InvalidInputError) as err:
        registry.search_models(page_size=1, page_token=token, name_contains="b")
    assert "other filters" in err.value.message
    assert registry.search_models(page_size=1, page_token=token).items[0].name == "b"


@pytest.mark.parametrize("page_size", [0, -1, True, 2.5, "10"])
def test_bad_page_sizes_are_refused(impl, page_size):
    with pytest.raises(InvalidInputError):
        impl.search_models(page_size=page_size)
    with pytest.raises(InvalidInputError):
        impl.search_versions(page_size=page_size)


def test_search_filter_validation(impl):
    with pytest.raises(InvalidInputError):
        impl.search_models(tags={"bad key": "x"})
    with pytest.raises(InvalidInputError):
        impl.search_models(name_contains=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        impl.search_versions("bad name!")


# ------------------------------------------- SQLite: files, config, plugin
def test_data_persists_across_instances(tmp_path):
    path = tmp_path / "registry.db"
    first = SqliteRegistry(path)
    first.create_version("iris", ART, tags={"a": "1"})
    first.set_alias("iris", "champion", 1)
    first.close()
    second = SqliteRegistry(str(path))
    assert second.get_alias("iris", "champion").tags == {"a": "1"}
    assert second.create_version("iris", ART).version == 2
    second.close()


def test_check_is_one_line_with_path_and_schema(registry):
    registry.create_version("iris", ART)
    line = registry.check()
    assert "\n" not in line and str(registry.path) in line and "schema v1" in line and "1 models" in line


def test_close_then_use_reopens(registry):
    registry.create_version("iris", ART)
    registry.close()
    registry.close()  # idempotent
    assert registry.create_version("iris", ART).version == 2


def test_each_thread_gets_its_own_connection(registry):
    registry.create_version("warmup", ART)
    results: dict[int, list[int]] = {}
    connections = set()
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            connections.add(id(registry._conn()))
            results[index] = [registry.create_version("shared", ART).version for _ in range(40)]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    numbers = sorted(n for chunk in results.values() for n in chunk)
    assert numbers == list(range(1, 321))
    assert len(connections) == 8
    registry.close()
    assert registry._connections == []


def test_memory_database_is_refused(tmp_path):
    with pytest.raises(InvalidInputError):
        SqliteRegistry(":memory:")


def test_a_file_that_is_not_a_database_is_reported(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, just some text " * 100)
    registry = SqliteRegistry(path)
    with pytest.raises(BackendUnavailableError) as err:
        registry.check()
    assert str(path) in err.value.message and err.value.hint


def test_a_long_held_write_lock_gives_a_clear_error(tmp_path):
    path = tmp_path / "registry.db"
    registry = SqliteRegistry(path, timeout=0.2)
    registry.create_version("iris", ART)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendUnavailableError) as err:
            registry.create_version("iris", ART)
        assert "locked" in err.value.message and "timeout" in err.value.hint
        assert registry.get_version("iris", 1).version == 1  # WAL: readers are not blocked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert registry.create_version("iris", ART).version == 2
    registry.close()


def test_retry_absorbs_transient_locks_and_is_bounded(registry, monkeypatch):
    monkeypatch.setattr(registry_module.time, "sleep", lambda _s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert registry._retry(flaky) == "done" and len(calls) == 3

    calls.clear()

    def always_locked():
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(BackendUnavailableError):
        registry._retry(always_locked)
    assert len(calls) == registry_module.MAX_ATTEMPTS

    calls.clear()

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("no such table: nope")

    with pytest.raises(BackendUnavailableError):
        registry._retry(broken)
    assert len(calls) == 1  # only lock errors are retried


def _context(home: Path) -> BackendContext:
    return BackendContext(home=home, hooks=None, name="registry")  # type: ignore[arg-type]


def test_factory_defaults_to_registry_db_in_home(tmp_path):
    home = tmp_path / "project" / ".mlops"
    registry = SqliteRegistry.from_config(SqliteRegistryConfig(), _context(home))
    assert registry.path == home / "registry.db"
    registry.create_version("iris", ART)
    assert (home / "registry.db").exists()
    registry.close()


def test_factory_honours_path_and_timeout(tmp_path):
    config = SqliteRegistryConfig(path=str(tmp_path / "deep" / "er" / "models.sqlite"), timeout=5)
    registry = SqliteRegistry.from_config(config, _context(tmp_path / "home"))
    assert registry.path == tmp_path / "deep" / "er" / "models.sqlite" and registry.timeout == 5.0
    registry.create_version("iris", ART)
    assert registry.path.exists() and not (tmp_path / "home").exists()
    registry.close()


def test_plugin_is_discovered_and_builds_the_backend(tmp_path):
    manager = PluginManager()
    assert "sqlite" in manager.catalog.names("registry")
    spec = manager.catalog.get("registry", "sqlite")
    assert spec.distribution == "mlops-sqlite-registry" and spec.summary
    registry = manager.build("registry", "sqlite", {"path": str(tmp_path / "r.db")}, _context(tmp_path))
    assert isinstance(registry, SqliteRegistry)
    assert registry.create_version("iris", ART).version == 1
    registry.close()
    with pytest.raises(ConfigError):
        manager.build("registry", "sqlite", {"timeout": -1}, _context(tmp_path))
    with pytest.raises(ConfigError):
        manager.build("registry", "sqlite", {"file": "x.db"}, _context(tmp_path))


def test_plugin_module_is_import_cheap():
    code = (
        "import sys, mlops_sqlite_registry.plugin as p; "
        "heavy = [m for m in ('sqlite3', 'mlops_sqlite_registry.registry', 'mlops_sqlite_registry.migrations') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_database_is_created_private(tmp_path):
    """Issue 17: whoever can write registry.db decides what models:/ loads, so only its owner may."""
    import stat

    old = os.umask(0o022)
    try:
        reg = SqliteRegistry(tmp_path / "state" / "registry.db")
        reg.create_version("m", ArtifactRef("file:///s", "sha256:" + "0" * 64))
        for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
            path = tmp_path / "state" / name
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        reg.close()
    finally:
        os.umask(old)
