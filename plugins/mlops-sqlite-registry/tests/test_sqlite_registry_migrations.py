"""Schema migrations: ordered, applied in one transaction, newer databases refused."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from mlops_core.entities import ArtifactRef
from mlops_core.errors import BackendUnavailableError
from mlops_sqlite_registry import migrations
from mlops_sqlite_registry.migrations import LATEST_VERSION, MIGRATIONS, Migration, migrate, schema_version
from mlops_sqlite_registry.registry import SqliteRegistry

ART = ArtifactRef(uri="file:///store", digest="sha256:" + "0" * 64)


def _connect(path):
    return sqlite3.connect(path, isolation_level=None)


def _tables(conn):
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migrations_are_numbered_in_order():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == MIGRATIONS[-1].version
    assert all(m.summary and m.statements for m in MIGRATIONS)


def test_a_fresh_file_gets_the_latest_schema_and_wal(tmp_path):
    registry = SqliteRegistry(tmp_path / "r.db")
    registry.check()
    conn = _connect(tmp_path / "r.db")
    assert schema_version(conn) == LATEST_VERSION
    assert {"models", "versions", "model_tags", "version_tags", "aliases", "version_counters"} <= _tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    registry.close()


def test_pending_migrations_are_applied_in_order_once(tmp_path):
    steps = (
        Migration(1, "create", ["CREATE TABLE t (a INTEGER)"]),
        Migration(2, "add a column", ["ALTER TABLE t ADD COLUMN b TEXT", "INSERT INTO t VALUES (1, 'x')"]),
    )
    conn = _connect(tmp_path / "db")
    assert migrate(conn, "db", steps[:1]) == 1
    assert migrate(conn, "db", steps) == 2
    assert migrate(conn, "db", steps) == 2  # nothing left to do: applied once
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(1, "x")]
    conn.close()


def test_migrations_out_of_order_are_refused(tmp_path):
    conn = _connect(tmp_path / "db")
    with pytest.raises(ValueError):
        migrate(conn, "db", (Migration(2, "skips one", ["SELECT 1"]),))
    conn.close()


def test_a_failing_migration_leaves_the_database_untouched(tmp_path):
    steps = (
        Migration(1, "create", ["CREATE TABLE t (a INTEGER)"]),
        Migration(2, "broken", ["ALTER TABLE t ADD COLUMN b TEXT", "THIS IS NOT SQL"]),
    )
    conn = _connect(tmp_path / "db")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, "db", steps)
    assert schema_version(conn) == 0 and "t" not in _tables(conn) and not conn.in_transaction
    conn.close()


def test_an_older_schema_is_upgraded_on_open(tmp_path, monkeypatch):
    path = tmp_path / "r.db"
    registry = SqliteRegistry(path)
    registry.create_version("iris", ART)
    registry.close()
    extra = Migration(LATEST_VERSION + 1, "add an index", ["CREATE INDEX versions_by_created ON versions (created_at)"])
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, extra))
    upgraded = SqliteRegistry(path)
    assert upgraded.get_version("iris", 1).version == 1
    conn = _connect(path)
    assert schema_version(conn) == extra.version
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'versions_by_created'").fetchone()
    conn.close()
    upgraded.close()


def test_a_database_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "r.db"
    SqliteRegistry(path).check()
    conn = _connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    registry = SqliteRegistry(path)
    with pytest.raises(BackendUnavailableError) as err:
        registry.create_version("iris", ART)
    assert "newer" in err.value.message and str(path) in err.value.message
    assert "pip install -U mlops-sqlite-registry" in err.value.hint


def test_concurrent_first_opens_migrate_once(tmp_path):
    path = tmp_path / "r.db"
    errors, numbers = [], []

    def open_and_register():
        try:
            registry = SqliteRegistry(path)
            numbers.append(registry.create_version("iris", ART).version)
            registry.close()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_register) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(numbers) == [1, 2, 3, 4, 5, 6]
