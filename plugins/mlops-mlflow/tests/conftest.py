"""Fixtures of the mlops-mlflow tests: one real MLflow tracking server per test session."""

from __future__ import annotations

from typing import Iterator

import pytest

from mlflow_testkit import MlflowServer, start_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()
