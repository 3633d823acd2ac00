"""Versioned schema of the SQLite registry, as an ordered list of migrations.

The schema version lives in ``PRAGMA user_version`` (0 for a fresh file). Opening a
database applies every pending migration in one ``BEGIN IMMEDIATE`` transaction,
so concurrent openers never see a half-migrated file, and re-reads the version
inside that transaction, so two processes racing to migrate apply each step once.
A database written by a newer release (``user_version`` above the last migration)
is refused rather than misread.

To change the schema, *append* a migration; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3

import attrs

from mlops_core.errors import BackendUnavailableError

__all__ = ["Migration", "MIGRATIONS", "LATEST_VERSION", "schema_version", "migrate"]


@attrs.frozen
class Migration:
    """One schema step: moves the database from ``version - 1`` to ``version``."""

    version: int
    summary: str
    statements: tuple[str, ...] = attrs.field(converter=tuple)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "models, versions, tags, aliases and per-model version counters",
        (
            # Counters outlive their model, so a number is never handed out twice for one
            # name, even after delete_model (a pinned models:/name/3 never changes meaning).
            """CREATE TABLE version_counters (
                model TEXT PRIMARY KEY,
                next_version INTEGER NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE models (
                name TEXT PRIMARY KEY,
                description TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            ) WITHOUT ROWID""",
            """CREATE TABLE model_tags (
                model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (model, key)
            ) WITHOUT ROWID""",
            """CREATE TABLE versions (
                model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
                version INTEGER NOT NULL,
                artifact_uri TEXT NOT NULL,
                artifact_digest TEXT NOT NULL,
                description TEXT NOT NULL DEFAULT '',
                source_run TEXT,
                dataset_uri TEXT,
                parent_version INTEGER,
                created_at TEXT NOT NULL,
                PRIMARY KEY (model, version)
            ) WITHOUT ROWID""",
            """CREATE TABLE version_tags (
                model TEXT NOT NULL,
                version INTEGER NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (model, version, key),
                FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
            ) WITHOUT ROWID""",
            """CREATE TABLE aliases (
                model TEXT NOT NULL,
                alias TEXT NOT NULL,
                version INTEGER NOT NULL,
                PRIMARY KEY (model, alias),
                FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
            ) WITHOUT ROWID""",
            # The cascade from versions to aliases looks aliases up by (model, version).
            "CREATE INDEX aliases_by_version ON aliases (model, version)",
        ),
    ),
)

#: The schema version this release writes.
LATEST_VERSION = MIGRATIONS[-1].version


def _check_order(migrations: tuple[Migration, ...]) -> None:
    expected = list(range(1, len(migrations) + 1))
    if [m.version for m in migrations] != expected:
        raise ValueError(f"migrations must be numbered {expected}, not {[m.version for m in migrations]}")


_check_order(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def refuse_newer(found: int, path: str, latest: int | None = None) -> None:
    latest = MIGRATIONS[-1].version if latest is None else latest
    if found > latest:
        raise BackendUnavailableError(
            f"registry database {path} has schema version {found}, newer than this "
            f"mlops-sqlite-registry understands (up to {latest})",
            hint="upgrade the plugin (pip install -U mlops-sqlite-registry), "
            "or point the registry's `path` setting at another file",
        )


def migrate(conn: sqlite3.Connection, path: str, migrations: tuple[Migration, ...] | None = None) -> int:
    """Bring the database up to the last of ``migrations`` (default: all); return the schema version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). The caller retries
    on ``database is locked``: nothing is half-applied when this raises.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    _check_order(migrations)
    latest = migrations[-1].version if migrations else 0
    found = schema_version(conn)
    refuse_newer(found, path, latest)
    if found == latest:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)  # another process may have migrated meanwhile
        refuse_newer(found, path, latest)
        for migration in migrations:
            if migration.version <= found:
                continue
            for statement in migration.statements:
                conn.execute(statement)
        # user_version is part of the database header, so it commits with the schema.
        conn.execute(f"PRAGMA user_version = {int(latest)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return latest
