"""Issue 17: what a stack file makes the process deployer run is shown, and the reported address is the real one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_core.errors import ConfigError
from mlops_core.plugins import PluginManager
from mlops_core.interfaces import BackendContext
from mlops_process_deployer import ProcessDeployerConfig


@pytest.mark.parametrize("args", ["--host 0.0.0.0", "--host=0.0.0.0", "--ho 0.0.0.0", "--port 9", "--bundle /x",
                                  "--workers 2 --hos ::"])
def test_server_args_cannot_override_what_the_deployer_reports(args):
    """Before: --host 0.0.0.0 in server_args made servers listen everywhere while `deployments list` said 127.0.0.1."""
    with pytest.raises(ValueError, match="set by the deployer"):
        ProcessDeployerConfig(server_args=args)
    pm = PluginManager()
    ctx = BackendContext(home=Path("/nonexistent"), hooks=pm.hooks, name="process")
    with pytest.raises(ConfigError, match="server_args"):
        pm.build("deployer", "process", {"server_args": args}, ctx)


def test_other_server_args_are_kept():
    assert ProcessDeployerConfig(server_args="--workers 2 --log-level debug").server_args == (
        "--workers", "2", "--log-level", "debug")


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    mlops = Path(sys.executable).with_name("mlops")
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    return subprocess.run([str(mlops), *args], capture_output=True, text=True, cwd=cwd, env={**base, **env},
                          timeout=120)


def test_stack_show_and_doctor_list_the_programs_a_stack_file_runs(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()
    (project / "mlops.toml").write_text(
        '[deployer]\nbackend = "process"\npython = "/opt/evil/bin/python"\nserver_args = "--workers 2"\n')
    env = {"MLOPS_HOME": str(tmp_path / "home")}
    shown = _cli("stack", "show", "--json", cwd=project, env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["config_file"] == str(project / "mlops.toml")
    commands = [p["command"] for p in data["programs"] if p["component"] == "deployer"]
    assert commands and commands[0][0] == "/opt/evil/bin/python" and commands[0][-2:] == ["--workers", "2"]
    text = _cli("stack", "show", cwd=project, env=env)
    assert "programs this stack runs:" in text.stdout and "/opt/evil/bin/python -m mlops_server" in text.stdout
    doctor = _cli("doctor", "--json", "deployer", cwd=project, env=env)
    runs = [c["detail"] for c in json.loads(doctor.stdout)["checks"] if c["check"] == "deployer runs"]
    assert runs and runs[0].startswith("/opt/evil/bin/python -m mlops_server")
    (project / "mlops.toml").chmod(0o666)
    doctor = _cli("doctor", "--json", "deployer", cwd=project, env=env)
    assert any(c["check"] == "stack file" and not c["ok"] and "writable by other users" in c["detail"]
               for c in json.loads(doctor.stdout)["checks"])
    # A stack file above the repository root is not picked up.
    (project / "mlops.toml").rename(tmp_path / "mlops.toml")
    data = json.loads(_cli("stack", "show", "--json", cwd=project, env=env).stdout)
    assert data["config_file"] is None and data["source"] == "embedded defaults"
