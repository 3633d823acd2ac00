"""Packaging: discovered through the entry point, import-cheap, stack-configurable, CLI wired."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlops_core.errors import ConfigError
from mlops_core.plugins import PluginManager
from mlops_core.stack import Stack, load_config


def test_the_distribution_is_discovered_and_offers_four_monitors():
    pm = PluginManager()
    assert not [f for f in pm.all_failures() if f.name == "monitors"]
    specs = {s.name: s for s in pm.catalog.specs() if s.component == "monitor"}
    assert {"prometheus", "drift", "log", "webhook"} <= set(specs)
    assert specs["drift"].distribution == "mlops-monitors"


def test_plugin_module_imports_nothing_heavy():
    code = ("import sys, mlops_monitors.plugin; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'mlops_monitors')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == ["mlops_monitors", "mlops_monitors._version", "mlops_monitors.plugin"]


def test_stack_builds_configured_monitors_and_refuses_unknown_settings(tmp_path):
    stack_file = tmp_path / "mlops.toml"
    stack_file.write_text('[[monitors]]\nbackend = "prometheus"\npush_interval_s = 0\n'
                          '[[monitors]]\nbackend = "drift"\npsi_threshold = 0.25\nnumeric_method = "ks"\n'
                          '[[monitors]]\nbackend = "log"\nsample_rate = 1.0\n'
                          '[[monitors]]\nbackend = "webhook"\nurl = "http://127.0.0.1:9/hook"\n')
    stack = Stack(load_config(stack_file, env={}), PluginManager())
    try:
        kinds = [type(m).__name__ for m in stack.start_monitors()]
        assert kinds == ["PrometheusMonitor", "DriftMonitor", "LogMonitor", "WebhookAlerter"]
        assert stack.monitors[1].config.numeric_method == "ks"
        assert stack.events.has_prediction_listeners()
        assert not stack.plugins.pm.has_plugin("monitor:drift:1")  # the stack's, not the shared manager's
    finally:
        stack.close()
    stack_file.write_text('[[monitors]]\nbackend = "drift"\npsi_treshold = 0.25\n')
    stack = Stack(load_config(stack_file, env={}), PluginManager())
    with pytest.raises(ConfigError, match="psi_treshold") as info:
        stack.start_monitors()
    assert "psi_threshold" in info.value.hint


def _mlops(tmp_path, *args):
    env = {**os.environ, "MLOPS_HOME": str(tmp_path / "home")}
    env.pop("MLOPS_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "mlops_core.cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def test_cli_commands_are_wired_and_fail_cleanly(tmp_path):
    pytest.importorskip("mlops_fsspec_storage")
    helped = _mlops(tmp_path, "monitor", "--help")
    assert helped.returncode == 0
    for action in ("profile", "report", "status", "replay"):
        assert action in helped.stdout
    missing = _mlops(tmp_path, "monitor", "report", "models:/nope/1")
    assert missing.returncode == 5 and "no reference profile" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "train.csv").write_text("a,b,colour\n" + "".join(f"{i},{i % 7},c{i % 3}\n" for i in range(500)))
    made = _mlops(tmp_path, "monitor", "profile", "models:/tiny/2", "--data", "train.csv", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == {"key": "profiles/tiny/2.json", "model": "tiny", "version": 2, "rows": 500,
                                       "features": ["a", "b", "colour"]}
    (tmp_path / "current.csv").write_text("a,b,colour\n" + "".join(f"{i % 300},{i % 7},c0\n" for i in range(600)))
    report = _mlops(tmp_path, "monitor", "report", "models:/tiny/2", "--data", "current.csv", "-o", "r.html")
    assert report.returncode == 0, report.stderr
    assert "2 of 3 feature(s) drifted" in report.stdout  # a: range shifted down; colour: one category only
    status = _mlops(tmp_path, "monitor", "status")
    assert status.returncode == 0 and "tiny" in status.stdout
