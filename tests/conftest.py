"""Fixtures for the core tests: an isolated stack home per test, and clean process-wide state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_core.api as api
from mlops_core.plugins import reset_plugin_manager

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_state(tmp_path, monkeypatch):
    """Every test runs in its own folder with its own .mlops home and a fresh plugin manager."""
    for key in list(os.environ):
        if key.startswith("MLOPS_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    reset_plugin_manager()
    api.set_stack(None)
    yield
    api.set_stack(None)
    reset_plugin_manager()


@pytest.fixture
def run_cli(tmp_path):
    """Run the real ``mlops`` console script in a subprocess; returns CompletedProcess."""

    def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
        full_env.update(env or {})
        mlops = Path(sys.executable).with_name("mlops")
        return subprocess.run([str(mlops), *args], capture_output=True, text=True, env=full_env,
                              cwd=cwd or tmp_path, timeout=120)

    return run
