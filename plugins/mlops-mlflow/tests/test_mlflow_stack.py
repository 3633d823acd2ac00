"""The ``mlflow`` registry chosen in a stack file: save, register, resolve and load through a real MLflow server,
and what MLflow shows for it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlops_core import api
from mlops_core.errors import BackendUnavailableError, InvalidInputError
from mlops_mlflow.registry import MlflowRegistry

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]


class Doubler:
    def predict(self, X):
        return np.asarray(X) * 2


def test_stack_with_mlflow_registry(tmp_path, mlflow_server):
    (tmp_path / "mlops.toml").write_text(f'[registry]\nbackend = "mlflow"\ntracking_uri = "{mlflow_server.uri}"\n')
    X = np.arange(6, dtype="float64").reshape(3, 2)
    version = api.register("stack-doubler", api.save(Doubler(), example=X), alias="prod", tags={"team": "a"})
    assert (version.version, version.aliases, dict(version.tags)) == (1, ("prod",), {"team": "a"})
    assert isinstance(api.get_stack().registry, MlflowRegistry)
    np.testing.assert_array_equal(api.load("models:/stack-doubler@prod").predict(X), X * 2)

    # what MLflow itself shows: the version, its alias, the artifact as tags, the bundle as source
    from mlflow import MlflowClient

    mv = MlflowClient(mlflow_server.uri).get_model_version_by_alias("stack-doubler", "prod")
    assert mv.version == "1" and mv.tags["team"] == "a"
    assert mv.tags["mlops.registry.artifact_digest"] == version.artifact.digest
    assert mv.source.startswith(f"mlops-bundle:/{version.artifact.digest}?store=")

    mlops = Path(sys.executable).with_name("mlops")
    out = subprocess.run([str(mlops), "models", "versions", "stack-doubler", "--json"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "stack-doubler" in out.stdout and version.artifact.digest in out.stdout
    doctor = subprocess.run([str(mlops), "doctor", "registry"], capture_output=True, text=True, cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "MLflow model registry" in doctor.stdout


def test_reserved_tags_and_foreign_versions_are_refused(mlflow_server):
    from mlflow import MlflowClient

    registry = MlflowRegistry(mlflow_server.uri)
    with pytest.raises(InvalidInputError):
        registry.set_tag("anything", "mlops.registry.artifact_uri", "x")
    client = MlflowClient(mlflow_server.uri)
    client.create_registered_model("made-in-mlflow")
    client.create_model_version("made-in-mlflow", "s3://elsewhere/model", await_creation_for=0)
    with pytest.raises(InvalidInputError) as info:
        registry.get_version("made-in-mlflow", 1)
    assert "mlops models import" in info.value.hint


def test_unreachable_server_is_a_clear_error():
    from mlflow_testkit import free_port

    registry = MlflowRegistry(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailableError) as info:
        registry.check()
    assert "running" in info.value.hint
