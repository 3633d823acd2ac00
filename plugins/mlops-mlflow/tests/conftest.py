"""Fixtures of the mlops-mlflow tests: one real MLflow tracking server per test session, and an
isolated stack (its own folder and ``.mlops`` home) per test."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

import mlops_core.api as api
from mlflow_testkit import MlflowServer, start_mlflow_server
from mlops_core.plugins import reset_plugin_manager


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _isolated_stack(tmp_path, monkeypatch):
    """Every test runs in its own folder (so its own embedded stack) with a fresh plugin manager."""
    for key in list(os.environ):
        if key.startswith("MLOPS_") or key == "MLFLOW_TRACKING_URI":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    reset_plugin_manager()
    api.set_stack(None)
    yield
    api.set_stack(None)
    reset_plugin_manager()
