"""The project's registry conformance suite (mlops_core.testing), run against a real MLflow tracking server."""

from __future__ import annotations

import pytest

from mlops_core.testing.suites import RegistrySuite
from mlops_mlflow.registry import MlflowRegistry

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]


class TestMlflowRegistryConformance(RegistrySuite):
    # MLflow deletes a registered model's rows on delete_model, so numbering starts again at 1
    # when the name is registered again: declared, and documented in docs/plugins/mlflow.md.
    counter_survives_model_delete = False
    # MLflow refuses some tag keys the core accepts (Hypothesis found "/"), so the random comparison with the
    # in-memory reference cannot hold; the fixed tests of the suite still run. Documented in docs/plugins/mlflow.md.
    state_machine = False
    state_machine_settings = {"max_examples": 15, "stateful_step_count": 20}

    @pytest.fixture
    def backend(self, mlflow_server):
        registry = MlflowRegistry(mlflow_server.uri)
        yield registry
        registry.close()

    @pytest.fixture
    def make_backend(self, mlflow_server, backend):
        """One client per writer thread, like separate processes would have."""
        return lambda: MlflowRegistry(mlflow_server.uri)
