"""Stacks on clouds, for real: S3 (moto server) and Azure Blob (Azurite), one stack file, two profiles.

register -> load -> build -> deploy -> predict through each remote stack, and ``mlops models
copy`` from one cloud to the other with hashes verified and tags, lineage and aliases kept.
GCS (gcsfs) works the same way through fsspec but has no emulator here: it is untested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("s3fs")
pytest.importorskip("adlfs")

from cloud_services import azurite, moto_s3  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clouds")]

MODEL = """
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

def make():
    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(X, y)
"""


@pytest.fixture(scope="module")
def clouds(tmp_path_factory):
    work = tmp_path_factory.mktemp("clouds")
    with moto_s3(work, "models") as s3, azurite(work, "models") as az:
        yield {"s3": s3, "azure": az}


def _toml_inline(table: dict) -> str:
    """A TOML inline table (``{ key = "value", nested = { ... } }``) for the storage options."""
    items = (f"{k} = {_toml_inline(v) if isinstance(v, dict) else json.dumps(v)}" for k, v in table.items())
    return "{ " + ", ".join(items) + " }"


def _stack_file(project: Path, clouds: dict) -> None:
    s3 = _toml_inline(clouds["s3"])
    az = _toml_inline(clouds["azure"])
    (project / "mlops.toml").write_text(f"""
[deployer]
backend = "process"

[stacks.aws]
[stacks.aws.storage]
backend = "fsspec"
url = "s3://models/team"
storage_options = {s3}

[stacks.azure]
[stacks.azure.storage]
backend = "fsspec"
url = "abfs://models/team"
storage_options = {az}
""")


def _mlops(project: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([str(Path(sys.executable).with_name("mlops")), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"mlops {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


def test_full_flow_through_each_cloud_and_a_copy_between_them(tmp_path, clouds):
    project = tmp_path
    _stack_file(project, clouds)
    (project / "train.py").write_text(MODEL)
    from sklearn.datasets import load_iris

    X = load_iris().data
    np.save(project / "X.npy", X[:10])
    expected = None
    for cloud in ("aws", "azure"):
        _mlops(project, "--stack", cloud, "models", "save", "train:make", "--name", "iris", "--alias", "prod",
               "--example", "X.npy", "--tag", f"cloud={cloud}", "--source-run", f"run-{cloud}")
        shown = json.loads(_mlops(project, "--stack", cloud, "models", "show", "models:/iris@prod", "--json").stdout)
        assert shown["version"] == 1 and shown["tags"]["cloud"] == cloud
        built = _mlops(project, "--stack", cloud, "build", "models:/iris@prod", "--json")
        assert json.loads(built.stdout)["digest"].startswith("sha256:")
        dep = json.loads(_mlops(project, "--stack", cloud, "deploy", "models:/iris@prod", "--name", f"iris-{cloud}",
                                "--json").stdout)
        try:
            body = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                                "data": X[:3].ravel().tolist()}]}
            answer = requests.post(f"{dep['url']}/v2/models/iris/infer", json=body, timeout=30).json()
            predictions = answer["outputs"][0]["data"]
            assert len(predictions) == 3
            expected = expected or predictions
            assert predictions == expected  # the same model from either cloud
        finally:
            _mlops(project, "--stack", cloud, "deployments", "delete", f"iris-{cloud}")

    # artifacts really live in the clouds, not on the local disk
    import fsspec

    s3_files = fsspec.filesystem("s3", **clouds["s3"]).find("models/team")
    az_files = fsspec.filesystem("abfs", **clouds["azure"]).find("models/team")
    assert s3_files and az_files

    copied = json.loads(_mlops(project, "models", "copy", "models:/iris@prod", "--from", "aws", "--to", "azure",
                               "--json").stdout)
    assert copied["version"] == 2 and copied["aliases"] == ["prod"]
    assert copied["tags"]["cloud"] == "aws" and copied["tags"]["mlops.copied_from"] == "aws:models:/iris/1"
    assert copied["lineage"]["source_run"] == "run-aws"
    again = json.loads(_mlops(project, "models", "copy", "models:/iris@prod", "--from", "aws", "--to", "azure",
                              "--json").stdout)
    assert again["version"] == 2  # a second copy is a no-op
    code = ("import mlops_core as m, numpy as np, json; from sklearn.datasets import load_iris; "
            "print(json.dumps(m.load('models:/iris@prod').predict(load_iris().data[:3]).tolist()))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env={**env, "MLOPS_STACK": "azure"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
