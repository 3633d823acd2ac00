"""A newcomer's first hour: doctor tells the truth, every error says what to do, nothing half-written."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

MODEL_PY = """
import numpy as np

class Affine:
    def predict(self, x):
        return np.asarray(x).sum(axis=1)

def make():
    return Affine()
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "train.py").write_text(MODEL_PY)
    np.save(tmp_path / "example.npy", np.ones((4, 3)))
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_fails_on_a_misspelled_monitor_and_names_the_fix(run_cli, project):
    (project / "mlops.toml").write_text('[[monitors]]\nbackend = "promethius"\n')
    r = run_cli("doctor", "--json", "storage", "monitors")
    data = json.loads(r.stdout)
    assert r.returncode == 4 and not data["ok"]
    failed = [c for c in data["checks"] if not c["ok"]]
    assert [c["check"] for c in failed] == ["monitor #1 (promethius)"]
    assert "prometheus" in failed[0]["hint"]  # the close match is suggested
    text = run_cli("doctor", "monitors")
    assert text.returncode == 4 and "FAIL  monitor #1 (promethius)" in text.stdout and "fix:" in text.stdout


def test_doctor_builds_each_configured_monitor(run_cli, project):
    (project / "mlops.toml").write_text('[[monitors]]\nbackend = "log"\n\n[[monitors]]\nbackend = "prometheus"\n')
    data = json.loads(run_cli("doctor", "--json", "monitors").stdout)
    assert data["ok"], data
    assert [c["check"] for c in data["checks"] if c["check"].startswith("monitor")] == \
        ["monitor #1 (log)", "monitor #2 (prometheus)"]


@pytest.mark.parametrize("builder", [
    '[builder]\nbackend = "oci"\nbase = "127.0.0.1:{port}/python:3.11-slim"\nbase_fallback = "off"\nplain_http = true\n',
    '[builder]\nbackend = "oci"\nbase = "oci:{tmp}/no-such-layout:python"\n',
])
def test_doctor_fails_on_an_unreachable_base(run_cli, project, builder):
    (project / "mlops.toml").write_text(builder.format(port=_closed_port(), tmp=project))
    r = run_cli("doctor", "--json", "builder")
    data = json.loads(r.stdout)
    assert r.returncode == 4, data
    (builder_check,) = [c for c in data["checks"] if c["check"].startswith("builder")]
    assert not builder_check["ok"] and builder_check["hint"]
    if "base_fallback" in builder:
        assert "mlops image base" in builder_check["hint"]


def test_stack_show_flags_unknown_backends(run_cli, project):
    (project / "mlops.toml").write_text('[deployer]\nbackend = "kubernetez"\n\n[[monitors]]\nbackend = "promethius"\n')
    r = run_cli("stack", "show")
    assert r.returncode == 3
    assert "error: deployer (kubernetez)" in r.stderr and "error: monitor #1 (promethius)" in r.stderr
    assert "did you mean 'prometheus'?" in r.stderr
    shown = json.loads(run_cli("stack", "show", "--json").stdout)
    assert {p["check"] for p in shown["problems"]} == {"deployer (kubernetez)", "monitor #1 (promethius)"}


def test_a_rejected_save_writes_no_bundle(run_cli, project):
    for args in (("--name", "bad name"), ("--name", "ok", "--alias", "bad alias"), ("--name", "ok", "--tag", "bad key=1")):
        r = run_cli("models", "save", "train:make", *args, "--example", "example.npy")
        assert r.returncode == 2, r.stderr
    assert not (project / ".mlops" / "bundles").exists() or not any((project / ".mlops" / "bundles").iterdir())


ERROR_PATHS = [
    ("models", "show", "models:/ghost/1"),
    ("models", "save", "train:make", "--name", "bad name"),
    ("models", "save", "nomodule:thing", "--name", "x"),
    ("models", "save", "train:make", "--name", "x", "--example", "missing.npy"),
    ("models", "save", "train:make", "--name", "x", "--example", "example.txt"),
    ("models", "alias", "ghost", "prod", "1"),
    ("models", "alias", "ghost", "prod"),
    ("models", "tag", "ghost", "novalue"),
    ("models", "delete", "ghost"),
    ("models", "versions", "ghost", "--page-size", "0"),
    ("build", "models:/ghost"),
    ("build", "not-a-uri"),
    ("deploy", "models:/ghost@prod"),
    ("deployments", "status", "ghost"),
    ("deployments", "rollback", "ghost"),
    ("deployments", "delete", "ghost"),
    ("predict", "ghost", "--input", "rows.csv"),
    ("predict", "http://127.0.0.1:9", "--model", "m", "--input", "missing.csv"),
    ("predict", "http://127.0.0.1:9", "--input", "rows.csv"),
    ("doctor", "nosuchcomponent"),
    ("plugin", "new", "Bad Name!", "--component", "storage"),
]


@pytest.mark.parametrize("args", ERROR_PATHS, ids=lambda a: " ".join(a))
def test_every_error_line_comes_with_a_hint(run_cli, project, args):
    (project / "rows.csv").write_text("1,2,3\n")
    (project / "example.txt").write_text("1,2,3\n")
    r = run_cli(*args)
    assert r.returncode not in (0, 70), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors, r.stderr
    assert "\nhint: " in r.stderr, r.stderr
