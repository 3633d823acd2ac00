"""mlops-postgres-registry: discovered through its entry point, and conformant (the mlops-core kit)."""

from __future__ import annotations

import multiprocessing

import pytest

from mlops_core.entities import ArtifactRef
from mlops_core.errors import BackendUnavailableError, ConfigError
from mlops_core.interfaces import BackendContext
from mlops_core.plugins import PluginManager
from mlops_core.testing.suites import RegistrySuite

from mlops_postgres_registry.registry import PostgresRegistry

pytestmark = pytest.mark.slow


def test_plugin_is_installed_and_discovered() -> None:
    pm = PluginManager()
    assert "postgres" in [p.name for p in pm.plugins()], [f.describe() for f in pm.all_failures()]
    assert "postgres" in pm.catalog.names("registry")


def test_built_through_the_plugin_manager(postgres_dsn: str, tmp_path) -> None:
    pm = PluginManager(autoload=False)
    import mlops_postgres_registry.plugin as plugin

    pm.register(plugin, name="postgres")
    registry = pm.build("registry", "postgres", {"dsn": postgres_dsn}, BackendContext(tmp_path, pm.hooks, "postgres"))
    try:
        assert registry.check().startswith("PostgreSQL 1")
    finally:
        registry.close()
    with pytest.raises(ConfigError, match="valid settings: connect_timeout, dsn"):
        pm.build("registry", "postgres", {"url": "x"}, BackendContext(tmp_path, pm.hooks, "postgres"))


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailableError, match="cannot connect to PostgreSQL"):
        PostgresRegistry("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)


class TestPostgresRegistry(RegistrySuite):
    """The whole kit, on one shared database: every test works under its own model-name prefix."""

    @pytest.fixture
    def backend(self, postgres_dsn: str):
        registry = PostgresRegistry(postgres_dsn)
        yield registry
        registry.close()

    @pytest.fixture
    def make_backend(self, postgres_dsn: str, backend):
        made = []

        def make():
            made.append(PostgresRegistry(postgres_dsn))
            return made[-1]

        yield make
        for registry in made:
            registry.close()


def _register_many(dsn: str, model: str, count: int) -> list[int]:
    registry = PostgresRegistry(dsn)
    try:
        return [registry.create_version(model, ArtifactRef("memory://p", "sha256:" + "0" * 64)).version
                for _ in range(count)]
    finally:
        registry.close()


def test_gapless_numbers_across_processes(postgres_dsn: str) -> None:
    """4 processes x 50 versions of one model: exactly 1..200, each number once."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_register_many, [(postgres_dsn, "procs-model", 50)] * 4)
    numbers = sorted(n for chunk in results for n in chunk)
    assert numbers == list(range(1, 201))
