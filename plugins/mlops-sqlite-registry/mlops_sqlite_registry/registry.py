"""A ModelRegistry in one SQLite file, safe for concurrent writers in several processes.

How the contract is kept:

* every write runs in a ``BEGIN IMMEDIATE`` transaction, so it takes the database's
  single write lock before reading anything it depends on (the next version number,
  whether a version exists); SQLite serialises writers, and WAL mode lets readers
  carry on meanwhile;
* waiting for the lock is SQLite's busy handler (``timeout`` seconds); on top of it, a
  bounded retry with jittered backoff absorbs the few ``database is locked`` errors
  the busy handler does not cover (WAL recovery, a concurrent schema migration);
* version numbers come from a per-model counter that is only ever incremented and
  survives version and model deletion, so a number is never handed out twice;
* aliases reference versions through a foreign key and are deleted with them.

sqlite3 connections are not thread-safe: each thread (and each process, after a
fork) gets its own connection, opened on first use. Durability: WAL with
``synchronous=NORMAL``, so a committed version survives a crash of the process;
the last transactions may be lost on power failure, never corrupted.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import attrs

from mlops_core.entities import AliasChange, ArtifactRef, Lineage, ModelVersion, RegisteredModel, utcnow
from mlops_core.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from mlops_core.interfaces import BackendContext, ModelRegistry

from . import migrations

__all__ = ["SqliteRegistryConfig", "SqliteRegistry"]

R = TypeVar("R")

#: Attempts of one transaction on ``database is locked`` after SQLite's own busy wait.
MAX_ATTEMPTS = 12
_BACKOFF_START = 0.002
_BACKOFF_MAX = 0.25
# Row-value IN lists are sent in chunks well below SQLite's bound-parameter limit.
_CHUNK = 400


def _positive(_inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be a positive number of seconds, not {value!r}")


@attrs.define
class SqliteRegistryConfig:
    """Settings of the ``sqlite`` registry backend (the ``[registry]`` table of a stack)."""

    #: Database file; default ``<stack home>/registry.db``. Its folder is created if needed.
    path: str | None = attrs.field(default=None)
    #: Seconds a write waits for another writer to finish before giving up.
    timeout: float = attrs.field(default=30.0, converter=float, validator=_positive)


# ------------------------------------------------------------------ helpers
def _ts(value: _dt.datetime) -> str:
    return value.isoformat()


def _parse_ts(value: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(value)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def _chunks(items: Sequence[R], size: int = _CHUNK) -> Iterable[Sequence[R]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _ThreadState(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = 0
    generation: int = -1


# ----------------------------------------------------------------- registry
class SqliteRegistry(ModelRegistry):
    """Model registry stored in one SQLite file (see the module docstring for the guarantees)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise InvalidInputError(
                f"the sqlite registry needs a database file path, not {text!r}",
                hint="use a file path (a temporary folder works for throwaway registries)",
            )
        self.path = Path(text).expanduser().absolute()
        self.timeout = float(timeout)
        self._local = _ThreadState()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._abandoned: list[sqlite3.Connection] = []  # inherited across fork: never touch them
        self._generation = 0
        self._pid = os.getpid()
        self._schema: int | None = None

    @classmethod
    def from_config(cls, config: SqliteRegistryConfig, context: BackendContext) -> "SqliteRegistry":
        """The backend factory: ``factory(config, context)``."""
        path = context.resolve_path(config.path) if config.path else Path(context.home) / "registry.db"
        return cls(path, timeout=config.timeout)

    def __repr__(self) -> str:
        return f"SqliteRegistry({str(self.path)!r})"

    # --------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailableError(
                f"cannot create the folder of registry database {self.path}: {exc}",
                hint="set the registry's `path` setting to a writable location",
            ) from None
        try:
            # Created private (0600) before SQLite opens it; SQLite gives its -wal and -shm
            # files the database's permissions. An existing file keeps its mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600))
        except OSError as exc:
            raise BackendUnavailableError(f"cannot create registry database {self.path}: {exc}",
                                          hint="set the registry's `path` setting to a writable location") from None
        try:
            # Autocommit mode: transactions are opened explicitly with BEGIN [IMMEDIATE].
            # check_same_thread=False only so close() may close every thread's connection;
            # each connection is still used by the thread that opened it.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            self._retry(lambda: self._enable_wal(conn))
            conn.execute("PRAGMA synchronous = NORMAL")
            if self._schema is None:
                self._schema = self._retry(lambda: migrations.migrate(conn, str(self.path)))
            else:
                migrations.refuse_newer(migrations.schema_version(conn), str(self.path))
        except sqlite3.Error as exc:  # e.g. "file is not a database"
            conn.close()
            raise self._unavailable(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _enable_wal(conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # e.g. a file system without shared memory
            raise BackendUnavailableError(
                f"cannot switch the registry database to WAL mode (got {mode!r})",
                hint="put the database on a local file system, not a network share",
            )

    def _conn(self) -> sqlite3.Connection:
        state = self._local
        pid = os.getpid()
        if state.conn is not None and state.pid == pid and state.generation == self._generation:
            return state.conn
        with self._lock:
            if pid != self._pid:
                # A forked child must neither use nor close its parent's handles.
                self._abandoned.extend(self._connections)
                self._connections = []
                self._pid = pid
        conn = self._connect()
        with self._lock:
            self._connections.append(conn)
        state.conn, state.pid, state.generation = conn, pid, self._generation
        return conn

    def close(self) -> None:
        """Close every thread's connection; the next call opens a fresh one."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._generation += 1
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass
        self._local.conn = None

    def check(self) -> str:
        def describe(conn: sqlite3.Connection) -> str:
            models = conn.execute("SELECT count(*) FROM models").fetchone()[0]
            versions = conn.execute("SELECT count(*) FROM versions").fetchone()[0]
            schema = migrations.schema_version(conn)
            return f"sqlite registry {self.path} (schema v{schema}, WAL, {models} models, {versions} versions)"

        return self._read(describe)

    # -------------------------------------------------------- transactions
    def _unavailable(self, exc: BaseException) -> BackendUnavailableError:
        if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
            return BackendUnavailableError(
                f"registry database {self.path} stayed locked by another writer for more than {self.timeout:g}s",
                hint="another process holds a long write transaction; retry, or raise the registry's `timeout` setting",
            )
        return BackendUnavailableError(
            f"registry database {self.path} is unusable: {exc}",
            hint="check that the file is a registry database and that its folder is writable "
            "(point the registry's `path` setting elsewhere to start a new one)",
        )

    def _retry(self, action: Callable[[], R]) -> R:
        """Run ``action``, retrying with jittered backoff while the database is locked."""
        deadline = time.monotonic() + self.timeout
        delay = _BACKOFF_START
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == MAX_ATTEMPTS or time.monotonic() >= deadline:
                    raise self._unavailable(exc) from None
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _BACKOFF_MAX)
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(self, begin: str, body: Callable[[sqlite3.Connection], R]) -> R:
        def attempt() -> R:
            conn = self._conn()
            conn.execute(begin)
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retry(attempt)

    def _write(self, body: Callable[[sqlite3.Connection], R]) -> R:
        # IMMEDIATE takes the write lock first, so what body reads cannot change under it.
        return self._transaction("BEGIN IMMEDIATE", body)

    def _read(self, body: Callable[[sqlite3.Connection], R]) -> R:
        # A deferred transaction gives body one consistent snapshot across its queries.
        return self._transaction("BEGIN", body)

    # -------------------------------------------------- lookups and errors
    def _model_row(self, conn: sqlite3.Connection, model: str) -> tuple[Any, ...]:
        row = conn.execute(
            "SELECT name, description, created_at, updated_at FROM models WHERE name = ?", (model,)
        ).fetchone()
        if row is None:
            raise self._model_not_found(conn, model)
        return row

    def _model_not_found(self, conn: sqlite3.Connection, model: str) -> NotFoundError:
        names = [r[0] for r in conn.execute("SELECT name FROM models ORDER BY name LIMIT 10000")]
        close = difflib.get_close_matches(model, names, n=3)
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        else:
            hint = "list the registered models with `mlops models list`; `mlops models save` registers a new one"
        return NotFoundError(f"no registered model named {model!r}", hint=hint)

    def _require_version(self, conn: sqlite3.Connection, model: str, version: int) -> None:
        if conn.execute(
            "SELECT 1 FROM versions WHERE model = ? AND version = ?", (model, version)
        ).fetchone() is None:
            raise self._version_not_found(conn, model, version)

    def _version_not_found(self, conn: sqlite3.Connection, model: str, version: int) -> NotFoundError:
        self._model_row(conn, model)  # an unknown model is the better error
        latest = conn.execute("SELECT max(version) FROM versions WHERE model = ?", (model,)).fetchone()[0]
        counter = conn.execute(
            "SELECT next_version FROM version_counters WHERE model = ?", (model,)
        ).fetchone()
        if counter and version < counter[0]:
            what = f"version {version} of model {model!r} was deleted"
            hint = "version numbers are never reused; "
        else:
            what = f"model {model!r} has no version {version}"
            hint = ""
        if latest:
            hint += f"the latest version is {latest}; list them with `mlops models versions {model}`"
        else:
            hint += "the model has no versions left; register one with `mlops models save`"
        return NotFoundError(what, hint=hint)

    def _alias_not_found(self, conn: sqlite3.Connection, model: str, alias: str) -> NotFoundError:
        aliases = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE model = ? ORDER BY alias", (model,))]
        how = f"`mlops models alias {model} {alias} VERSION` points it at a version"
        if aliases:
            hint = f"aliases of {model!r}: {', '.join(aliases)}; {how}"
        else:
            hint = f"{model!r} has no aliases yet; {how}"
        return NotFoundError(f"model {model!r} has no alias {alias!r}", hint=hint)

    def _touch(self, conn: sqlite3.Connection, model: str) -> None:
        conn.execute("UPDATE models SET updated_at = ? WHERE name = ?", (_ts(utcnow()), model))

    # ----------------------------------------------------- entity builders
    def _load_models(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[RegisteredModel]:
        names = [r[0] for r in rows]
        tags: dict[str, dict[str, str]] = {n: {} for n in names}
        aliases: dict[str, dict[str, int]] = {n: {} for n in names}
        latest: dict[str, int | None] = {}
        for chunk in _chunks(names):
            marks = ",".join("?" * len(chunk))
            for name, key, value in conn.execute(
                f"SELECT model, key, value FROM model_tags WHERE model IN ({marks})", chunk
            ):
                tags[name][key] = value
            for name, alias, version in conn.execute(
                f"SELECT model, alias, version FROM aliases WHERE model IN ({marks}) ORDER BY alias", chunk
            ):
                aliases[name][alias] = version
            for name, top in conn.execute(
                f"SELECT model, max(version) FROM versions WHERE model IN ({marks}) GROUP BY model", chunk
            ):
                latest[name] = top
        return [
            RegisteredModel(
                name=name,
                description=description,
                tags=tags[name],
                aliases=aliases[name],
                latest_version=latest.get(name),
                created_at=_parse_ts(created),
                updated_at=_parse_ts(updated),
            )
            for name, description, created, updated in rows
        ]

    _VERSION_COLUMNS = (
        "v.model, v.version, v.artifact_uri, v.artifact_digest, v.description, "
        "v.source_run, v.dataset_uri, v.parent_version, v.created_at"
    )

    def _load_versions(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[ModelVersion]:
        keys = [(r[0], r[1]) for r in rows]
        tags: dict[tuple[str, int], dict[str, str]] = {k: {} for k in keys}
        aliases: dict[tuple[str, int], list[str]] = {k: [] for k in keys}
        for chunk in _chunks(keys):
            pairs = ",".join(["(?,?)"] * len(chunk))
            params = [p for key in chunk for p in key]
            for model, version, key, value in conn.execute(
                f"SELECT model, version, key, value FROM version_tags WHERE (model, version) IN (VALUES {pairs})",
                params,
            ):
                tags[(model, version)][key] = value
            for model, version, alias in conn.execute(
                f"SELECT model, version, alias FROM aliases WHERE (model, version) IN (VALUES {pairs}) ORDER BY alias",
                params,
            ):
                aliases[(model, version)].append(alias)
        return [
            ModelVersion(
                model=model,
                version=version,
                artifact=ArtifactRef(uri=uri, digest=digest),
                description=description,
                tags=tags[(model, version)],
                aliases=tuple(aliases[(model, version)]),
                lineage=Lineage(source_run=run, dataset_uri=dataset, parent_version=parent),
                created_at=_parse_ts(created),
            )
            for model, version, uri, digest, description, run, dataset, parent, created in rows
        ]

    def _version(self, conn: sqlite3.Connection, model: str, version: int) -> ModelVersion:
        row = conn.execute(
            f"SELECT {self._VERSION_COLUMNS} FROM versions v WHERE v.model = ? AND v.version = ?", (model, version)
        ).fetchone()
        if row is None:
            raise self._version_not_found(conn, model, version)
        return self._load_versions(conn, [row])[0]

    # ------------------------------------------------------------ versions
    def _create_version(self, model: str, artifact: ArtifactRef, description: str, tags: Mapping[str, str],
                        lineage: Lineage) -> ModelVersion:
        def body(conn: sqlite3.Connection) -> ModelVersion:
            now = utcnow()
            stamp = _ts(now)
            conn.execute(
                "INSERT INTO models (name, description, created_at, updated_at) VALUES (?, '', ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at",
                (model, stamp, stamp),
            )
            conn.execute(
                "INSERT INTO version_counters (model, next_version) VALUES (?, 2) "
                "ON CONFLICT (model) DO UPDATE SET next_version = next_version + 1",
                (model,),
            )
            number = conn.execute(
                "SELECT next_version - 1 FROM version_counters WHERE model = ?", (model,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO versions (model, version, artifact_uri, artifact_digest, description, "
                "source_run, dataset_uri, parent_version, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model, number, artifact.uri, artifact.digest, description,
                 lineage.source_run, lineage.dataset_uri, lineage.parent_version, stamp),
            )
            if tags:
                conn.executemany(
                    "INSERT INTO version_tags (model, version, key, value) VALUES (?, ?, ?, ?)",
                    [(model, number, k, v) for k, v in tags.items()],
                )
            return ModelVersion(
                model=model, version=number, artifact=artifact, description=description,
                tags=tags, lineage=lineage, created_at=now,
            )

        return self._write(body)

    def _get_version(self, model: str, version: int) -> ModelVersion:
        return self._read(lambda conn: self._version(conn, model, version))

    def _search_versions(self, model: str | None, tags: Mapping[str, str], limit: int,
                         after: tuple[str, int] | None) -> list[ModelVersion]:
        """Versions ordered by model name, then version descending; ``tags`` must all match.

        Naming a ``model`` that does not exist raises NotFoundError (an empty page would
        hide a typo); an existing model without versions gives an empty page.
        """

        def body(conn: sqlite3.Connection) -> list[ModelVersion]:
            where, params = [], []  # type: list[str], list[Any]
            if model is not None:
                self._model_row(conn, model)
                where.append("v.model = ?")
                params.append(model)
            for key, value in sorted(tags.items()):
                where.append(
                    "EXISTS (SELECT 1 FROM version_tags t WHERE t.model = v.model AND t.version = v.version "
                    "AND t.key = ? AND t.value = ?)"
                )
                params += [key, value]
            if after is not None:
                where.append("(v.model > ? OR (v.model = ? AND v.version < ?))")
                params += [after[0], after[0], after[1]]
            sql = f"SELECT {self._VERSION_COLUMNS} FROM versions v"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY v.model, v.version DESC LIMIT ?"
            return self._load_versions(conn, conn.execute(sql, [*params, limit]).fetchall())

        return self._read(body)

    def _delete_version(self, model: str, version: int) -> None:
        def body(conn: sqlite3.Connection) -> None:
            self._require_version(conn, model, version)
            conn.execute("DELETE FROM aliases WHERE model = ? AND version = ?", (model, version))
            conn.execute("DELETE FROM version_tags WHERE model = ? AND version = ?", (model, version))
            conn.execute("DELETE FROM versions WHERE model = ? AND version = ?", (model, version))
            self._touch(conn, model)

        self._write(body)

    # -------------------------------------------------------------- models
    def _get_model(self, model: str) -> RegisteredModel:
        return self._read(lambda conn: self._load_models(conn, [self._model_row(conn, model)])[0])

    def _search_models(self, name_contains: str | None, tags: Mapping[str, str], limit: int,
                       after: str | None) -> list[RegisteredModel]:
        """Models ordered by name. ``name_contains`` is a case-sensitive substring; ``tags`` must all match."""

        def body(conn: sqlite3.Connection) -> list[RegisteredModel]:
            where, params = [], []  # type: list[str], list[Any]
            if name_contains:
                where.append("instr(m.name, ?) > 0")
                params.append(name_contains)
            for key, value in sorted(tags.items()):
                where.append("EXISTS (SELECT 1 FROM model_tags t WHERE t.model = m.name AND t.key = ? AND t.value = ?)")
                params += [key, value]
            if after is not None:
                where.append("m.name > ?")
                params.append(after)
            sql = "SELECT m.name, m.description, m.created_at, m.updated_at FROM models m"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY m.name LIMIT ?"
            return self._load_models(conn, conn.execute(sql, [*params, limit]).fetchall())

        return self._read(body)

    def _delete_model(self, model: str) -> None:
        """Delete the model with its versions, tags and aliases. Its version numbers stay used."""

        def body(conn: sqlite3.Connection) -> None:
            self._model_row(conn, model)
            conn.execute("DELETE FROM aliases WHERE model = ?", (model,))
            conn.execute("DELETE FROM version_tags WHERE model = ?", (model,))
            conn.execute("DELETE FROM versions WHERE model = ?", (model,))
            conn.execute("DELETE FROM model_tags WHERE model = ?", (model,))
            conn.execute("DELETE FROM models WHERE name = ?", (model,))

        self._write(body)

    # ------------------------------------------------------------- aliases
    def _set_alias(self, model: str, alias: str, version: int) -> AliasChange:
        def body(conn: sqlite3.Connection) -> AliasChange:
            self._require_version(conn, model, version)
            row = conn.execute("SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)).fetchone()
            conn.execute(
                "INSERT INTO aliases (model, alias, version) VALUES (?, ?, ?) "
                "ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version",
                (model, alias, version),
            )
            self._touch(conn, model)
            return AliasChange(model=model, alias=alias, version=version, previous=row[0] if row else None)

        return self._write(body)

    def _delete_alias(self, model: str, alias: str) -> AliasChange:
        def body(conn: sqlite3.Connection) -> AliasChange:
            self._model_row(conn, model)
            row = conn.execute("SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)).fetchone()
            if row is None:
                raise self._alias_not_found(conn, model, alias)
            conn.execute("DELETE FROM aliases WHERE model = ? AND alias = ?", (model, alias))
            self._touch(conn, model)
            return AliasChange(model=model, alias=alias, version=None, previous=row[0])

        return self._write(body)

    def _get_alias(self, model: str, alias: str) -> ModelVersion:
        def body(conn: sqlite3.Connection) -> ModelVersion:
            self._model_row(conn, model)
            row = conn.execute("SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)).fetchone()
            if row is None:
                raise self._alias_not_found(conn, model, alias)
            return self._version(conn, model, row[0])

        return self._read(body)

    # ------------------------------------------------- tags and descriptions
    def _set_tag(self, model: str, key: str, value: str | None, version: int | None) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if version is None:
                self._model_row(conn, model)
                if value is None:
                    conn.execute("DELETE FROM model_tags WHERE model = ? AND key = ?", (model, key))
                else:
                    conn.execute(
                        "INSERT INTO model_tags (model, key, value) VALUES (?, ?, ?) "
                        "ON CONFLICT (model, key) DO UPDATE SET value = excluded.value",
                        (model, key, value),
                    )
            else:
                self._require_version(conn, model, version)
                if value is None:
                    conn.execute(
                        "DELETE FROM version_tags WHERE model = ? AND version = ? AND key = ?", (model, version, key)
                    )
                else:
                    conn.execute(
                        "INSERT INTO version_tags (model, version, key, value) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (model, version, key) DO UPDATE SET value = excluded.value",
                        (model, version, key, value),
                    )
            self._touch(conn, model)

        self._write(body)

    def _set_description(self, model: str, description: str, version: int | None) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if version is None:
                self._model_row(conn, model)
                conn.execute("UPDATE models SET description = ? WHERE name = ?", (description, model))
            else:
                self._require_version(conn, model, version)
                conn.execute(
                    "UPDATE versions SET description = ? WHERE model = ? AND version = ?", (description, model, version)
                )
            self._touch(conn, model)

        self._write(body)
