"""Deployed servers run with the deployer's stack: MLOPS_HOME and MLOPS_CONFIG, and so its monitors."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

import mlops_core
from mlops_core import api
from mlops_process_deployer.config import ProcessDeployerConfig
from mlops_process_deployer.deployer import ProcessDeployer
from process_deployer_support import DeployEnv, infer, wait_until


def test_the_deployer_knows_its_stack_file_without_mlops_config(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlops.toml").write_text('[deployer]\nbackend = "process"\n')
    from mlops_core.stack import Stack, load_config

    stack = Stack(load_config())
    deployer = ProcessDeployer.from_config(ProcessDeployerConfig(), stack.context("process"))
    assert deployer.stack_file == (tmp_path / "mlops.toml").resolve()
    assert deployer.home == (tmp_path / ".mlops").absolute()


def _metrics(url: str) -> str:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_deployed_server_feeds_the_stacks_monitors(fresh: DeployEnv) -> None:
    pytest.importorskip("mlops_monitors", reason="the mlops-monitors plugin (prometheus monitor) is not installed")
    original = fresh.stack_file.read_text()
    fresh.stack_file.write_text(original + '\n[[monitors]]\nbackend = "prometheus"\n')
    api.set_stack(None)
    try:
        deployment = mlops_core.deploy("models:/adder/1", name="monitored")
        for _ in range(3):
            infer(deployment.url)
        wait_until(lambda: 'mlops_requests_total{model="adder",version="1"} 3' in _metrics(deployment.url), 30,
                   "the server's prometheus monitor to count the requests")
        environ = Path(f"/proc/{deployment.details['pid']}/environ").read_bytes().split(b"\0")
        assert f"MLOPS_CONFIG={fresh.stack_file}".encode() in environ
        assert f"MLOPS_HOME={fresh.home}".encode() in environ
    finally:
        fresh.stack_file.write_text(original)
        api.set_stack(None)
