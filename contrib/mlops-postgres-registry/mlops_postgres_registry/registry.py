"""``PostgresRegistry``: the ModelRegistry contract on PostgreSQL with psycopg 3.

Version numbering: each model has a row in ``mlops_version_counters``. Creating a
version locks that row with ``SELECT ... FOR UPDATE`` inside the transaction that
inserts the version, so concurrent writers in any number of processes queue up
on the row and get 1, 2, 3... with no gap or duplicate; a rolled-back insert
rolls the counter back with it. The counter row outlives ``delete_model``, so a
number is never handed out twice for one model name.

Names are stored with ``COLLATE "C"`` so ordering is by code point, the same
as Python's ``sorted``. Each thread gets its own connection.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Sequence, TypeVar

import attrs

from mlops_core.entities import AliasChange, ArtifactRef, Lineage, ModelVersion, RegisteredModel
from mlops_core.errors import BackendUnavailableError, ConfigError, InvalidInputError, NotFoundError
from mlops_core.interfaces import BackendContext, ModelRegistry

__all__ = ["PostgresRegistryConfig", "PostgresRegistry", "create_registry", "SCHEMA_VERSION"]

R = TypeVar("R")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mlops_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS mlops_version_counters (
    model text COLLATE "C" PRIMARY KEY,
    next_version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS mlops_models (
    name text COLLATE "C" PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS mlops_model_tags (
    model text COLLATE "C" NOT NULL REFERENCES mlops_models(name) ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (model, key)
);
CREATE TABLE IF NOT EXISTS mlops_versions (
    model text COLLATE "C" NOT NULL REFERENCES mlops_models(name) ON DELETE CASCADE,
    version integer NOT NULL,
    artifact_uri text NOT NULL,
    artifact_digest text NOT NULL,
    description text NOT NULL DEFAULT '',
    source_run text,
    dataset_uri text,
    parent_version integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS mlops_version_tags (
    model text COLLATE "C" NOT NULL,
    version integer NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (model, version, key),
    FOREIGN KEY (model, version) REFERENCES mlops_versions(model, version) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS mlops_aliases (
    model text COLLATE "C" NOT NULL,
    alias text NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES mlops_versions(model, version) ON DELETE CASCADE
);
"""


@attrs.define
class PostgresRegistryConfig:
    """``[registry]`` settings: ``dsn`` is a libpq connection string or URL."""

    dsn: str = attrs.field(default="")
    connect_timeout: float = 10.0


def _no_nul(value: str, what: str) -> str:
    """PostgreSQL's own limit, on top of the core's checks: text cannot hold NUL."""
    if "\x00" in value:
        raise InvalidInputError(f"{what} contains a NUL character", hint="PostgreSQL text cannot hold NUL")
    return value


class PostgresRegistry(ModelRegistry):
    """Models, versions, aliases and tags in PostgreSQL tables prefixed ``mlops_``."""

    def __init__(self, dsn: str, *, connect_timeout: float = 10.0) -> None:
        import psycopg

        if not dsn:
            raise ConfigError("the postgres registry needs a dsn",
                              hint='set [registry] dsn = "postgresql://user@host:5432/db" or MLOPS_REGISTRY__DSN')
        self._psycopg = psycopg
        self.dsn = dsn
        self._timeout = connect_timeout
        self._local = threading.local()
        self._all: list[Any] = []
        self._all_lock = threading.Lock()
        self._migrate()

    def __repr__(self) -> str:
        return f"PostgresRegistry({self._safe_dsn()!r})"

    def _safe_dsn(self) -> str:
        return self.dsn.split("@")[-1] if "@" in self.dsn else self.dsn

    # connections ------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self._psycopg.connect(self.dsn, autocommit=True, connect_timeout=int(self._timeout))
            except self._psycopg.OperationalError as exc:
                raise BackendUnavailableError(f"cannot connect to PostgreSQL at {self._safe_dsn()}: {exc}",
                                              hint="check that the server runs and the dsn is right") from None
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _tx(self, body: Callable[[Any], R]) -> R:
        """Run ``body(cursor)`` in one transaction; connection loss becomes BackendUnavailableError."""
        conn = self._conn()
        try:
            with conn.transaction(), conn.cursor() as cur:
                return body(cur)
        except self._psycopg.OperationalError as exc:
            raise BackendUnavailableError(f"PostgreSQL at {self._safe_dsn()} failed: {exc}",
                                          hint="check the server; the operation was rolled back") from None

    def _migrate(self) -> None:
        def body(cur: Any) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(7251043)")  # one migrator at a time
            cur.execute(_SCHEMA)
            cur.execute("SELECT max(version) FROM mlops_schema")
            current = cur.fetchone()[0]
            if current is None:
                cur.execute("INSERT INTO mlops_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif current > SCHEMA_VERSION:
                raise ConfigError(f"the database schema is version {current}, newer than this plugin's {SCHEMA_VERSION}",
                                  hint="upgrade mlops-postgres-registry")

        self._tx(body)

    def check(self) -> str:
        version = self._tx(lambda cur: cur.execute("SHOW server_version").fetchone()[0])
        return f"PostgreSQL {version} at {self._safe_dsn()}"

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    # helpers ----------------------------------------------------------------
    @staticmethod
    def _require_model(cur: Any, model: str, lock: bool = False) -> None:
        cur.execute("SELECT 1 FROM mlops_models WHERE name = %s" + (" FOR UPDATE" if lock else ""), (model,))
        if cur.fetchone() is None:
            raise NotFoundError(f"no registered model named {model!r}", hint="check the name (mlops models list)")

    def _require_version(self, cur: Any, model: str, version: int) -> None:
        cur.execute("SELECT 1 FROM mlops_versions WHERE model = %s AND version = %s", (model, version))
        if cur.fetchone() is None:
            self._require_model(cur, model)
            raise NotFoundError(f"model {model!r} has no version {version}", hint="list them with mlops models versions")

    @staticmethod
    def _touch(cur: Any, model: str) -> None:
        cur.execute("UPDATE mlops_models SET updated_at = now() WHERE name = %s", (model,))

    def _versions(self, cur: Any, rows: Sequence[tuple[Any, ...]]) -> list[ModelVersion]:
        if not rows:
            return []
        models = sorted({r[0] for r in rows})
        cur.execute("SELECT model, version, key, value FROM mlops_version_tags WHERE model = ANY(%s)", (models,))
        tags: dict[tuple[str, int], dict[str, str]] = {}
        for m, v, k, val in cur.fetchall():
            tags.setdefault((m, v), {})[k] = val
        cur.execute("SELECT model, version, alias FROM mlops_aliases WHERE model = ANY(%s)", (models,))
        aliases: dict[tuple[str, int], list[str]] = {}
        for m, v, a in cur.fetchall():
            aliases.setdefault((m, v), []).append(a)
        return [
            ModelVersion(model=m, version=v, artifact=ArtifactRef(uri, digest), description=desc,
                         tags=tags.get((m, v), {}), aliases=tuple(sorted(aliases.get((m, v), []))),
                         lineage=Lineage(source_run=run, dataset_uri=data, parent_version=parent), created_at=created)
            for m, v, uri, digest, desc, run, data, parent, created in rows
        ]

    _VERSION_COLUMNS = ("model, version, artifact_uri, artifact_digest, description, source_run, dataset_uri, "
                        "parent_version, created_at")

    def _version(self, cur: Any, model: str, version: int) -> ModelVersion:
        cur.execute(f"SELECT {self._VERSION_COLUMNS} FROM mlops_versions WHERE model = %s AND version = %s",
                    (model, version))
        rows = cur.fetchall()
        if not rows:
            self._require_version(cur, model, version)
        return self._versions(cur, rows)[0]

    def _models(self, cur: Any, names: Sequence[str]) -> list[RegisteredModel]:
        if not names:
            return []
        cur.execute("SELECT name, description, created_at, updated_at FROM mlops_models WHERE name = ANY(%s)",
                    (list(names),))
        base = {r[0]: r for r in cur.fetchall()}
        cur.execute("SELECT model, key, value FROM mlops_model_tags WHERE model = ANY(%s)", (list(names),))
        tags: dict[str, dict[str, str]] = {}
        for m, k, v in cur.fetchall():
            tags.setdefault(m, {})[k] = v
        cur.execute("SELECT model, alias, version FROM mlops_aliases WHERE model = ANY(%s)", (list(names),))
        aliases: dict[str, dict[str, int]] = {}
        for m, a, v in cur.fetchall():
            aliases.setdefault(m, {})[a] = v
        cur.execute("SELECT model, max(version) FROM mlops_versions WHERE model = ANY(%s) GROUP BY model",
                    (list(names),))
        latest = dict(cur.fetchall())
        return [RegisteredModel(name=n, description=base[n][1], tags=tags.get(n, {}), aliases=aliases.get(n, {}),
                                latest_version=latest.get(n), created_at=base[n][2], updated_at=base[n][3])
                for n in names]

    # versions ---------------------------------------------------------------
    def _create_version(self, model: str, artifact: ArtifactRef, description: str, tags: Mapping[str, str],
                        lineage: Lineage) -> ModelVersion:
        _no_nul(description, "description")
        for key, value in tags.items():
            _no_nul(value, f"tag value of {key!r}")

        def body(cur: Any) -> ModelVersion:
            cur.execute("INSERT INTO mlops_version_counters (model, next_version) VALUES (%s, 1) "
                        "ON CONFLICT (model) DO NOTHING", (model,))
            # The lock that keeps numbering gapless: writers of this model queue here until we commit.
            cur.execute("SELECT next_version FROM mlops_version_counters WHERE model = %s FOR UPDATE", (model,))
            number = cur.fetchone()[0]
            cur.execute("UPDATE mlops_version_counters SET next_version = %s WHERE model = %s", (number + 1, model))
            cur.execute("INSERT INTO mlops_models (name) VALUES (%s) "
                        "ON CONFLICT (name) DO UPDATE SET updated_at = now()", (model,))
            cur.execute(
                "INSERT INTO mlops_versions (model, version, artifact_uri, artifact_digest, description, source_run, "
                "dataset_uri, parent_version) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (model, number, artifact.uri, artifact.digest, description, lineage.source_run, lineage.dataset_uri,
                 lineage.parent_version))
            if tags:
                cur.executemany("INSERT INTO mlops_version_tags (model, version, key, value) VALUES (%s, %s, %s, %s)",
                                [(model, number, k, v) for k, v in tags.items()])
            return self._version(cur, model, number)

        return self._tx(body)

    def _get_version(self, model: str, version: int) -> ModelVersion:
        return self._tx(lambda cur: self._version(cur, model, version))

    def _search_versions(self, model: str | None, tags: Mapping[str, str], limit: int,
                         after: tuple[str, int] | None) -> list[ModelVersion]:
        def body(cur: Any) -> list[ModelVersion]:
            if model is not None:
                self._require_model(cur, model)
            where, params = [], []
            if model is not None:
                where.append("v.model = %s")
                params.append(model)
            for k, val in tags.items():
                where.append("EXISTS (SELECT 1 FROM mlops_version_tags t WHERE t.model = v.model "
                             "AND t.version = v.version AND t.key = %s AND t.value = %s)")
                params += [k, val]
            if after is not None:
                where.append("(v.model > %s OR (v.model = %s AND v.version < %s))")
                params += [after[0], after[0], after[1]]
            columns = ", ".join(f"v.{c.strip()}" for c in self._VERSION_COLUMNS.split(","))
            sql = (f"SELECT {columns} FROM mlops_versions v" + (" WHERE " + " AND ".join(where) if where else "")
                   + " ORDER BY v.model, v.version DESC LIMIT %s")
            cur.execute(sql, [*params, limit])
            return self._versions(cur, cur.fetchall())

        return self._tx(body)

    def _delete_version(self, model: str, version: int) -> None:
        def body(cur: Any) -> None:
            self._require_version(cur, model, version)
            cur.execute("DELETE FROM mlops_versions WHERE model = %s AND version = %s", (model, version))
            self._touch(cur, model)

        self._tx(body)

    # models -----------------------------------------------------------------
    def _get_model(self, model: str) -> RegisteredModel:
        def body(cur: Any) -> RegisteredModel:
            self._require_model(cur, model)
            return self._models(cur, [model])[0]

        return self._tx(body)

    def _search_models(self, name_contains: str | None, tags: Mapping[str, str], limit: int,
                       after: str | None) -> list[RegisteredModel]:
        if name_contains:
            _no_nul(name_contains, "name_contains")

        def body(cur: Any) -> list[RegisteredModel]:
            where, params = [], []
            if name_contains:
                where.append("strpos(m.name, %s) > 0")  # a plain substring: no LIKE wildcards to escape
                params.append(name_contains)
            for k, val in tags.items():
                where.append("EXISTS (SELECT 1 FROM mlops_model_tags t WHERE t.model = m.name AND t.key = %s "
                             "AND t.value = %s)")
                params += [k, val]
            if after is not None:
                where.append("m.name > %s")
                params.append(after)
            cur.execute("SELECT m.name FROM mlops_models m" + (" WHERE " + " AND ".join(where) if where else "")
                        + " ORDER BY m.name LIMIT %s", [*params, limit])
            return self._models(cur, [r[0] for r in cur.fetchall()])

        return self._tx(body)

    def _delete_model(self, model: str) -> None:
        def body(cur: Any) -> None:
            self._require_model(cur, model, lock=True)
            cur.execute("DELETE FROM mlops_models WHERE name = %s", (model,))  # versions, tags, aliases cascade

        self._tx(body)

    # aliases ----------------------------------------------------------------
    def _set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        def body(cur: Any) -> AliasChange:
            self._require_version(cur, model, version)
            cur.execute("SELECT version FROM mlops_aliases WHERE model = %s AND alias = %s FOR UPDATE", (model, alias))
            row = cur.fetchone()
            cur.execute("INSERT INTO mlops_aliases (model, alias, version) VALUES (%s, %s, %s) "
                        "ON CONFLICT (model, alias) DO UPDATE SET version = EXCLUDED.version", (model, alias, version))
            self._touch(cur, model)
            return AliasChange(model=model, alias=alias, version=version, previous=row[0] if row else None)

        return self._tx(body)

    def _delete_alias(self, model: str, alias: str) -> AliasChange:
        def body(cur: Any) -> AliasChange:
            self._require_model(cur, model)
            cur.execute("DELETE FROM mlops_aliases WHERE model = %s AND alias = %s RETURNING version", (model, alias))
            row = cur.fetchone()
            if row is None:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
            self._touch(cur, model)
            return AliasChange(model=model, alias=alias, version=None, previous=row[0])

        return self._tx(body)

    def _get_alias(self, model: str, alias: str) -> ModelVersion:
        def body(cur: Any) -> ModelVersion:
            self._require_model(cur, model)
            cur.execute("SELECT version FROM mlops_aliases WHERE model = %s AND alias = %s", (model, alias))
            row = cur.fetchone()
            if row is None:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}", hint="check the alias")
            return self._version(cur, model, row[0])

        return self._tx(body)

    # tags and descriptions ----------------------------------------------------
    def _set_tag(self, model: str, key: str, value: str | None, version: int | None) -> None:
        if value is not None:
            _no_nul(value, f"value of tag {key!r}")

        def body(cur: Any) -> None:
            if version is None:
                self._require_model(cur, model)
                if value is None:
                    cur.execute("DELETE FROM mlops_model_tags WHERE model = %s AND key = %s", (model, key))
                else:
                    cur.execute("INSERT INTO mlops_model_tags (model, key, value) VALUES (%s, %s, %s) "
                                "ON CONFLICT (model, key) DO UPDATE SET value = EXCLUDED.value", (model, key, value))
            else:
                self._require_version(cur, model, version)
                if value is None:
                    cur.execute("DELETE FROM mlops_version_tags WHERE model = %s AND version = %s AND key = %s",
                                (model, version, key))
                else:
                    cur.execute("INSERT INTO mlops_version_tags (model, version, key, value) VALUES (%s, %s, %s, %s) "
                                "ON CONFLICT (model, version, key) DO UPDATE SET value = EXCLUDED.value",
                                (model, version, key, value))
            self._touch(cur, model)

        self._tx(body)

    def _set_description(self, model: str, description: str, version: int | None) -> None:
        _no_nul(description, "description")

        def body(cur: Any) -> None:
            if version is None:
                self._require_model(cur, model)
                cur.execute("UPDATE mlops_models SET description = %s WHERE name = %s", (description, model))
            else:
                self._require_version(cur, model, version)
                cur.execute("UPDATE mlops_versions SET description = %s WHERE model = %s AND version = %s",
                            (description, model, version))
            self._touch(cur, model)

        self._tx(body)


def create_registry(config: PostgresRegistryConfig, context: BackendContext) -> PostgresRegistry:
    return PostgresRegistry(config.dsn, connect_timeout=config.connect_timeout)
