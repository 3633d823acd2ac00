"""Fast checks of mlops-mlflow without a server: discovery, import cost, source parsing, config errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlops_core.entities import ArtifactRef
from mlops_core.errors import InvalidInputError
from mlops_mlflow.interop import MlflowSource, parse_source
from mlops_mlflow.registry import MlflowRegistryConfig, version_source


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_discovery_and_help_never_import_mlflow():
    code = ("import mlops_core, mlops_mlflow.plugin\n"
            "from mlops_core.plugins import get_plugin_manager\n"
            "pm = get_plugin_manager()\n"
            "assert 'mlflow' in pm.catalog.names('registry'), pm.catalog.names('registry')\n"
            "assert 'mlflow-pyfunc' in pm.catalog.names('format')\n"
            "from mlops_core import cli\n"
            "for argv in (['--help'], ['models', '--help'], ['models', 'import', '--help']):\n"
            "    try:\n        cli.main(argv)\n    except SystemExit:\n        pass\n")
    loaded = _modules_after(code)
    assert "mlflow" not in loaded and not [m for m in loaded if m.startswith("mlflow.")]


def test_saving_a_bundle_does_not_import_mlflow(tmp_path):
    # every installed format is built when a bundle is saved: ours must stay import-cheap
    code = (f"from mlops_core.bundle import save_bundle\n"
            f"class M:\n    def predict(self, x):\n        return x\n"
            f"save_bundle(M(), {str(tmp_path / 'b')!r})\n")
    assert "mlflow" not in _modules_after(code)


@pytest.mark.parametrize("text, expected", [
    ("mlflow:/runs:/abc123/model", MlflowSource("runs", "runs:/abc123/model")),
    ("runs:/abc123/model", MlflowSource("runs", "runs:/abc123/model")),
    ("mlflow:/models:/iris/3", MlflowSource("models", "models:/iris/3")),
    ("mlflow:models:/iris@prod", MlflowSource("models", "models:/iris@prod")),
])
def test_parse_source_uris(text, expected):
    assert parse_source(text) == expected


def test_parse_source_folder(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    assert parse_source(f"mlflow:{tmp_path}") == MlflowSource("folder", str(tmp_path.resolve()))
    assert parse_source(str(tmp_path)).kind == "folder"


@pytest.mark.parametrize("bad", ["", "mlflow:/runs:/", "mlflow:/models:/", "mlflow:/no/such/folder"])
def test_parse_source_refuses_what_it_cannot_read(bad):
    with pytest.raises(InvalidInputError) as info:
        parse_source(bad)
    assert info.value.hint


def test_version_source_is_the_bundle_uri_or_a_form_mlflow_accepts():
    digest = "sha256:" + "ab" * 32
    s3 = version_source(ArtifactRef(uri="s3://bucket/models", digest=digest))
    assert s3.startswith("s3://bucket/models/") and s3.endswith("ab" * 32)
    for local in ("file:///tmp/store", "/tmp/store", "http://127.0.0.1:9000/x"):
        src = version_source(ArtifactRef(uri=local, digest=digest))
        assert src.startswith(f"mlops-bundle:/{digest}?store="), src


def test_config_needs_a_tracking_uri():
    with pytest.raises(InvalidInputError):
        MlflowRegistryConfig(tracking_uri=" ")
    assert MlflowRegistryConfig(tracking_uri="http://127.0.0.1:5000").retries == 5
