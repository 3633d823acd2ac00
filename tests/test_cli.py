"""The mlops CLI as a user runs it: real console script, JSON output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

MODEL_PY = """
import numpy as np

class Affine:
    def __init__(self, a, b):
        self.a, self.b = a, b
    def predict(self, x):
        return np.asarray(x) @ self.a + self.b

def make():
    return Affine(np.arange(3.0), 1.0)
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "train.py").write_text(MODEL_PY)
    np.save(tmp_path / "example.npy", np.ones((4, 3)))
    return tmp_path


def test_models_workflow(run_cli, project):
    r = run_cli("models", "save", "train:make", "--name", "affine", "--alias", "staging", "--example", "example.npy",
                "--tag", "team=ml", "--source-run", "run-7", "--json")
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert (v["model"], v["version"], v["aliases"]) == ("affine", 1, ["staging"])
    assert v["lineage"]["source_run"] == "run-7" and v["tags"] == {"team": "ml"}

    assert run_cli("models", "save", "train:make", "--name", "affine").returncode == 0
    models = json.loads(run_cli("models", "list", "--json").stdout)["models"]
    assert [(m["name"], m["latest_version"], m["aliases"]) for m in models] == [("affine", 2, {"staging": 1})]
    versions = json.loads(run_cli("models", "versions", "affine", "--json").stdout)["versions"]
    assert [x["version"] for x in versions] == [2, 1]

    moved = json.loads(run_cli("models", "alias", "affine", "staging", "2", "--json").stdout)
    assert (moved["previous"], moved["version"]) == (1, 2)
    assert run_cli("models", "tag", "affine", "owner=ana", "--version", "2").returncode == 0
    shown = json.loads(run_cli("models", "show", "models:/affine@staging", "--json").stdout)
    assert shown["version"] == 2 and shown["tags"] == {"owner": "ana"}
    table = run_cli("models", "show", "affine")
    assert "staging->2" in table.stdout

    refused = run_cli("models", "delete", "affine", "--version", "1")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert run_cli("models", "delete", "affine", "--version", "1", "--yes").returncode == 0
    assert [x["version"] for x in json.loads(run_cli("models", "versions", "affine", "--json").stdout)["versions"]] == [2]


@pytest.mark.parametrize("args, code, text", [
    (("models", "show", "models:/ghost/1"), 5, "hint:"),
    (("models", "save", "train:make", "--name", "bad name"), 2, "invalid model name"),
    (("models", "save", "nomodule:thing", "--name", "x"), 2, "cannot import"),
    (("models", "alias", "ghost", "prod", "1"), 5, "error:"),
    (("build", "models:/ghost"), 5, "error:"),
])
def test_expected_errors_have_codes_and_no_traceback(run_cli, project, args, code, text):
    r = run_cli(*args)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert text in r.stderr
    assert "Traceback" not in r.stderr


def test_config_errors_exit_3(run_cli, project):
    (project / "mlops.toml").write_text("[registry]\nbackend = \"nosuch\"\n")
    r = run_cli("models", "list")
    # other installed registry plugins (mlflow...) are listed too, in name order
    assert r.returncode == 3 and re.search(r"installed registry backends: .*\bsqlite\b", r.stderr), r.stderr
    assert "Traceback" not in r.stderr


def test_stack_show_and_doctor(run_cli, project):
    shown = json.loads(run_cli("stack", "show", "--json").stdout)
    assert shown["storage"]["backend"] == "fsspec" and shown["source"] == "embedded defaults"
    r = run_cli("doctor", "--json", "storage", "registry")
    data = json.loads(r.stdout)
    assert r.returncode == 0 and data["ok"], data
    assert {c["check"] for c in data["checks"]} >= {"config", "storage (fsspec)", "registry (sqlite)"}
    bad = run_cli("doctor", "--json", "storage", env={"MLOPS_STORAGE__URL": "nosuchproto://x"})
    assert bad.returncode == 4 and not json.loads(bad.stdout)["ok"]


def test_version_and_help(run_cli):
    assert run_cli("--version").stdout.startswith("mlops-core ")
    help_text = run_cli("--help").stdout
    for command in ("plugins", "doctor", "models", "deploy", "deployments"):
        assert command in help_text


def test_csv_examples_with_or_without_a_header(run_cli, project):
    (project / "with_header.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    (project / "no_header.csv").write_text("1,2,3\n4,5,6\n")
    for name in ("with_header.csv", "no_header.csv"):
        r = run_cli("models", "save", "train:make", "--name", "affine", "--example", name, "--json")
        assert r.returncode == 0, r.stderr
    shown = json.loads(run_cli("models", "versions", "affine", "--json").stdout)["versions"]
    assert len(shown) == 2
