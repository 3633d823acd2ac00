"""Warm-up on the bundle's example, the cached listener check, and the stack's monitors in the server."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

import mlops_server_testmodels as tm
from mlops_core.bundle import save_bundle
from mlops_server.config import ServerConfig
from mlops_server_testkit import echo_signature, free_port, run_server


def fp(rows: np.ndarray) -> dict:
    return {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(rows.shape),
                        "data": rows.ravel().tolist()}]}


# ------------------------------------------------------------------ warm-up
@pytest.fixture(scope="module")
def zero_shy_bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeroshy")
    rows = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    save_bundle(tm.RejectsZeros(), root / "with-example", example=rows)
    save_bundle(tm.RejectsZeros(), root / "no-example", signature=echo_signature("FP64"))
    return root


def test_warm_up_uses_the_bundles_example(zero_shy_bundles):
    from mlops_server.models import ServedModel

    model = ServedModel(zero_shy_bundles / "with-example")
    model.load()
    assert model.ready, model.error
    assert model.warmup_input == "example"
    # Without an example the warm-up falls back to zeros, which this model refuses.
    fallback = ServedModel(zero_shy_bundles / "no-example")
    fallback.load()
    assert fallback.state == "failed" and "all-zero" in fallback.error
    assert fallback.warmup_input == "zeros"


@pytest.mark.slow
def test_a_model_that_refuses_zeros_becomes_ready_with_reuse_port(tmp_path, zero_shy_bundles):
    with run_server([zero_shy_bundles / "with-example"], "--reuse-port", tmp=tmp_path) as server:
        r = server.post("/v2/models/with-example/infer", json=fp(np.ones((1, 3))))
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0, 2.0, 2.0]
    assert "warm-up on example" in server.log.read_text()


# ------------------------------------------------------------------ listener check
class _FakeHooks:
    def __init__(self) -> None:
        self.generation = 0
        self.listening = False
        self.asked = 0

    def has_listeners(self, name: str) -> bool:
        assert name == "mlops_predictions_served"
        self.asked += 1
        return self.listening

    def predictions_served(self, event) -> None:
        pass


def test_listeners_are_asked_again_only_when_the_plugins_change(tmp_path):
    from mlops_server.app import ModelServerApp

    app = ModelServerApp(ServerConfig(bundles=()), models=[])
    hooks = _FakeHooks()
    app._hooks = hooks
    assert app._check_listeners() is False and hooks.asked == 1
    for _ in range(100):
        assert app._listens() is False
    assert hooks.asked == 1  # a cached answer: one integer compare per request
    hooks.listening = True
    hooks.generation += 1  # a plugin was registered
    assert app._listens() is True and hooks.asked == 2
    assert all(app._listens() for _ in range(10)) and hooks.asked == 2
    assert app._dispatcher is not None
    app._dispatcher.close()


# ------------------------------------------------------------------ stack monitors
def _stack_env(tmp_path, **extra: str) -> dict[str, str]:
    stack_file = tmp_path / "mlops.toml"
    stack_file.write_text("")
    return {"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_CONFIG": str(stack_file), **extra}


@pytest.mark.slow
def test_stack_monitors_receive_events_and_add_to_metrics(tmp_path, affine_bundle):
    pytest.importorskip("mlops_monitors", reason="the mlops-monitors plugin (prometheus monitor) is not installed")
    env = _stack_env(tmp_path, MLOPS_MONITORS="prometheus")
    with run_server([affine_bundle], "--model-version", "3", tmp=tmp_path, env=env) as server:
        for _ in range(4):
            assert server.post("/v2/models/affine/infer", json=fp(np.ones((2, 5)))).status_code == 200
        # Events reach the monitor on a background thread: poll until it counted them all.
        deadline = time.monotonic() + 30
        while True:
            metrics = server.get("/metrics").text
            if 'mlops_predictions_total{model="affine",version="3"} 8' in metrics:
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.05)
        assert 'mlops_requests_total{model="affine",version="3"} 4' in metrics
        assert "mlops_server_requests_total" in metrics  # the server's own counters are still there
    log = server.log.read_text()
    assert "stack monitors: prometheus" in log
    assert server.proc.returncode == 0


@pytest.mark.slow
def test_an_unreadable_stack_only_turns_monitoring_off(tmp_path, affine_bundle):
    env = {"MLOPS_CONFIG": str(tmp_path / "missing.toml"), "MLOPS_HOME": str(tmp_path / "home")}
    with run_server([affine_bundle], tmp=tmp_path, env=env) as server:
        assert server.post("/v2/models/affine/infer", json=fp(np.ones((1, 5)))).status_code == 200
    log = server.log.read_text()
    assert "cannot read the stack configuration" in log and "missing.toml" in log


@pytest.mark.slow
def test_a_configured_monitor_that_cannot_start_is_a_startup_error(tmp_path, affine_bundle):
    env = {**__import__("os").environ, **_stack_env(tmp_path, MLOPS_MONITORS="no-such-monitor")}
    proc = subprocess.run([sys.executable, "-m", "mlops_server", "--bundle", str(affine_bundle),
                           "--port", str(free_port()), "--reuse-port"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 5, proc.stderr
    assert "'no-such-monitor'" in proc.stderr and "cannot be started" in proc.stderr
