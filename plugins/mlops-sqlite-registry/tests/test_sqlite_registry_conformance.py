"""The project's registry conformance suite (mlops_core.testing), run against the SQLite registry."""

from __future__ import annotations

import pytest

from mlops_core.testing.suites import RegistrySuite
from mlops_sqlite_registry.registry import SqliteRegistry


class TestSqliteRegistryConformance(RegistrySuite):
    # Every capability is claimed: concurrent writers, input validation, counters that
    # survive delete_model, and the state machine against the in-memory reference.

    @pytest.fixture
    def backend(self, tmp_path):
        registry = SqliteRegistry(tmp_path / "registry.db")
        yield registry
        registry.close()

    @pytest.fixture
    def make_backend(self, tmp_path, backend):
        """One instance (so one set of connections) per writer thread, on the same file."""
        made = []

        def make():
            made.append(SqliteRegistry(tmp_path / "registry.db"))
            return made[-1]

        yield make
        for registry in made:
            registry.close()
