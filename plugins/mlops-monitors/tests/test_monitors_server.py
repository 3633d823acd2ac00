"""End to end: a real `python -m mlops_server` with all monitors, a real Prometheus scraping it, the CLI after.

The server process builds the stack's monitors itself (from MLOPS_CONFIG) and
loads a plugin that raises on every prediction event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from monitors_fixtures import free_port, http_get, prom_query, start_prometheus, wait_until

pytest.importorskip("mlops_server")
pytest.importorskip("mlops_fsspec_storage")
sklearn = pytest.importorskip("sklearn.linear_model")

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
N_REQUESTS = 60
ROWS = 50


def _metric(text: str, prefix: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _infer(port: int, x: np.ndarray) -> dict:
    body = json.dumps({"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64",
                                   "data": x.ravel().tolist()}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/iris/infer", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlops_core.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def served(tmp_path):
    from mlops_core.bundle import save_bundle

    rng = np.random.default_rng(0)
    train = rng.normal(size=(3000, 4)) * [1.0, 2.0, 0.5, 3.0] + [5.0, 0.0, -1.0, 10.0]
    labels = (train[:, 0] + train[:, 3] > 15).astype(int)
    model = sklearn.LogisticRegression().fit(train, labels)
    bundle = save_bundle(model, tmp_path / "bundle", example=train[:5])
    np.save(tmp_path / "train.npy", train)
    stack_file = tmp_path / "mlops.toml"
    stack_file.write_text(
        f'home = "{tmp_path / "home"}"\n[storage]\nbackend = "fsspec"\nurl = "{tmp_path / "store"}"\n'
        '[[monitors]]\nbackend = "prometheus"\n'
        '[[monitors]]\nbackend = "drift"\nwindow_rows = 2000\nsubwindows = 4\nmin_rows = 500\npersist_interval_s = 1.0\n'
        '[[monitors]]\nbackend = "log"\nsample_rate = 1.0\nmax_rows = 1000\nflush_interval_s = 1.0\n')
    env = {**os.environ, "MLOPS_CONFIG": str(stack_file),
           "MLOPS_PLUGIN_MODULES": "monitors_boom_plugin",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    # the reference profile, captured from the training data with the CLI
    done = _mlops(env, "monitor", "profile", "models:/iris/1", "--data", str(tmp_path / "train.npy"))
    assert done.returncode == 0, done.stderr
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlops_server", "--bundle", str(bundle.path), "--name", "iris",
                             "--model-version", "1", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is None and http_get(f"http://127.0.0.1:{port}/v2/health/ready"), 60,
                   what="the model server")
        yield {"port": port, "proc": proc, "env": env, "tmp": tmp_path, "rng": rng}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_served_model_with_all_monitors_and_a_broken_one(served, tmp_path):
    port, rng, env = served["port"], served["rng"], served["env"]
    (tmp_path / "prom").mkdir()
    prom = start_prometheus(tmp_path / "prom", [f"127.0.0.1:{port}"])
    try:
        for _ in range(N_REQUESTS):
            x = rng.normal(size=(ROWS, 4)) * [1.0, 2.0, 0.5, 3.0] + [5.0, 0.0, -1.0, 10.0]
            x[:, 2] += 1.5  # feature 2 shifts by three standard deviations
            out = _infer(port, x)  # every prediction succeeds though a plugin raises on each event
            assert out["outputs"][0]["shape"][0] == ROWS
        url = f"http://127.0.0.1:{port}/metrics"

        def counted():
            text = http_get(url).decode()
            done = _metric(text, 'mlops_requests_total{model="iris",version="1"}') == N_REQUESTS
            return done and _metric(text, 'mlops_drift_window_rows{model="iris",version="1"}') and text

        text = wait_until(counted, 60, 0.2, "the monitors to see every request")
        assert _metric(text, 'mlops_predictions_total{model="iris",version="1"}') == N_REQUESTS * ROWS
        errors = _metric(text, 'mlops_hook_errors_total{plugin="monitors_boom_plugin",hook="mlops_predictions_served"}')
        assert errors == N_REQUESTS
        drift = {f: _metric(text, f'mlops_drift_detected{{model="iris",version="1",feature="input-0[{f}]"}}')
                 for f in range(4)}
        assert drift == {0: 0, 1: 0, 2: 1, 3: 0}

        # a real Prometheus scrapes the served model's /metrics
        def scraped():
            res = prom_query(prom.url, 'mlops_requests_total{model="iris",version="1"}')
            return res and float(res[0]["value"][1]) == N_REQUESTS

        wait_until(scraped, 60, 0.5, "Prometheus to scrape the model server")
        res = prom_query(prom.url, 'mlops_drift_detected{feature="input-0[2]"}')
        assert float(res[0]["value"][1]) == 1
        res = prom_query(prom.url, 'sum(mlops_hook_errors_total{plugin="monitors_boom_plugin"})')
        assert float(res[0]["value"][1]) == N_REQUESTS
    finally:
        prom.stop()

    # graceful stop: the log and drift monitors write what they buffered
    served["proc"].send_signal(signal.SIGTERM)
    assert served["proc"].wait(30) == 0
    replay = _mlops(env, "monitor", "replay", "models:/iris/1", "--json")
    assert replay.returncode == 0, replay.stderr
    report = json.loads(replay.stdout)
    assert report["rows"] == N_REQUESTS * ROWS and report["drifted"] == ["input-0[2]"]
    html = served["tmp"] / "report.html"
    rep = _mlops(env, "monitor", "report", "models:/iris/1", "-o", str(html))
    assert rep.returncode == 0, rep.stderr
    assert html.read_text().count("<svg") == 4
    status = _mlops(env, "monitor", "status", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert rows[0]["model"] == "iris" and rows[0]["drifted"] == ["input-0[2]"]
    assert 1500 <= rows[0]["window_rows"] <= 2000  # 3 full sub-windows of 500 rows and the current one
    table = _mlops(env, "monitor", "status")
    assert "DRIFT: input-0[2]" in table.stdout
