"""Honest readiness, adaptive batching, timeouts, load shedding and graceful drain, on real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

import mlops_server_testmodels as tm
from mlops_server_testkit import free_port, run_server
from mlops_core.bundle import save_bundle
from mlops_core.testing.waiting import wait_until

pytestmark = pytest.mark.slow


def fp(rows: np.ndarray, name: str = "input-0") -> dict:
    return {"inputs": [{"name": name, "datatype": "FP64", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


# ------------------------------------------------------------------ readiness
@pytest.fixture(scope="module")
def broken_bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
        # A signature lets the server build a warm-up request: this one raises there.
    from mlops_server_testkit import echo_signature

    save_bundle(tm.Broken(), root / "warmup-fails", signature=echo_signature("FP64"))
    save_bundle(tm.Echo(), root / "tampered", signature=echo_signature("FP64"))
    payload = root / "tampered" / "model.pkl"
    raw = bytearray(payload.read_bytes())
    raw[-2] ^= 0xFF  # same size, different content: only the hash can tell
    payload.write_bytes(bytes(raw))
    return {"warmup": root / "warmup-fails", "tampered": root / "tampered"}


@pytest.mark.parametrize("kind", ["warmup", "tampered"])
def test_a_model_that_fails_is_reported_and_never_ready(tmp_path, affine_bundle, broken_bundles, kind):
    with run_server([affine_bundle, broken_bundles[kind]], tmp=tmp_path, wait="live") as server:
        name = broken_bundles[kind].name
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the loader has finished with both
            state = server.get(f"/v2/models/{name}").json()["parameters"]["state"]
            if state != "loading" and server.get("/v2/models/affine/ready").status_code == 200:
                break
            time.sleep(0.05)
        meta = server.get(f"/v2/models/{name}").json()
        assert meta["parameters"]["state"] == "failed"
        expected = "broken on purpose" if kind == "warmup" else "sha256"
        assert expected in meta["parameters"]["error"]
        for _ in range(3):
            assert server.get("/v2/health/ready").status_code == 503
            assert server.get("/v2/health/live").status_code == 200
        r = server.get(f"/v2/models/{name}/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        r = server.post(f"/v2/models/{name}/infer", json=fp(np.zeros((1, 3))))
        assert r.status_code == 503 and "not ready" in r.json()["error"]
        # the healthy model is served all the same
        assert server.post("/v2/models/affine/infer", json=fp(np.zeros((1, 5)))).status_code == 200
        assert "mlops_server_model_ready{model=\"%s\",version=\"\"} 0" % name in server.get("/metrics").text
    assert expected in server.log.read_text()


def test_reuse_port_mode_refuses_to_bind_with_a_failed_model(tmp_path, broken_bundles):
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "mlops_server", "--bundle", str(broken_bundles["warmup"]),
                           "--port", str(port), "--reuse-port"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "not listening on" in proc.stderr
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


# ------------------------------------------------------------------- batching
@pytest.mark.parametrize("model_fixture,args", [
    ("affine_bundle", ["--max-batch-size", "16", "--max-batch-wait-ms", "5"]),
    ("slow_affine_bundle", ["--max-batch-size", "8", "--max-batch-wait-ms", "2", "--executor", "thread"]),
])
def test_batched_results_are_identical_to_unbatched(tmp_path, request, model_fixture, args):
    bundle = request.getfixturevalue(model_fixture)
    rng = np.random.default_rng(3)
    requests_rows = [rng.normal(size=(int(rng.integers(1, 4)), 5)) * 10.0 ** int(rng.integers(-3, 3))
                     for _ in range(48)]
    name = bundle.name

    def run_all(server) -> list[list[float]]:
        def one(rows):
            with requests.Session() as s:
                r = s.post(f"{server.url}/v2/models/{name}/infer", json=fp(rows), timeout=60)
                assert r.status_code == 200, r.text
                return r.json()["outputs"][0]["data"]

        with ThreadPoolExecutor(12) as pool:
            return list(pool.map(one, requests_rows))

    with run_server([bundle], tmp=tmp_path) as plain:
        expected = run_all(plain)
    with run_server([bundle], *args, tmp=tmp_path) as batched:
        got = run_all(batched)
        metrics = batched.get("/metrics").text
    assert got == expected  # bit for bit: JSON floats round-trip exactly
    for rows, out in zip(requests_rows, got):
        assert out == (rows * 2.0 + 1.0).ravel().tolist()
    batches = int(next(l for l in metrics.splitlines() if l.startswith("mlops_server_batches_total{")).split()[-1])
    batched_requests = int(next(l for l in metrics.splitlines()
                                if l.startswith("mlops_server_batched_requests_total{")).split()[-1])
    assert batched_requests == len(requests_rows)
    if model_fixture == "slow_affine_bundle":
        # requests queue while a batch runs in the thread, so batches must have formed
        assert batches < batched_requests


@pytest.fixture(scope="module")
def slow_affine_bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slowaffine") / "slow-affine"
    save_bundle(tm.SlowAffine(), path, example=np.zeros((1, 5)))
    return path


# ------------------------------------------------------- timeouts and shedding
@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slow") / "slow"
    from mlops_server_testkit import echo_signature

    save_bundle(tm.Slow(0.4), path, signature=echo_signature("FP64"))
    return path


def test_timeout_answers_504_and_the_server_stays_healthy(tmp_path, slow_bundle):
    with run_server([slow_bundle], "--timeout", "0.1", tmp=tmp_path) as server:
        r = server.post("/v2/models/slow/infer", json=fp(np.ones((1, 3))))
        assert r.status_code == 504 and "timed out after 0.1 s" in r.json()["error"]
        assert server.get("/v2/health/ready").status_code == 200
        assert "mlops_server_timeouts_total 1" in server.get("/metrics").text


def test_overload_sheds_with_503_and_retry_after(tmp_path, slow_bundle):
    with run_server([slow_bundle], "--max-queue", "2", tmp=tmp_path) as server:
        def one(_):
            return requests.post(f"{server.url}/v2/models/slow/infer", json=fp(np.ones((1, 3))), timeout=60)

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(one, range(10)))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 503}
        assert codes.count(200) >= 2 and codes.count(503) >= 1
        for r in answers:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "1" and "overloaded" in r.json()["error"]
        assert server.get("/v2/health/ready").status_code == 200
        assert server.post("/v2/models/slow/infer", json=fp(np.ones((1, 3)))).status_code == 200


# ------------------------------------------------------------------ draining
def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path, slow_bundle):
    with run_server([slow_bundle], "--threads", "4", tmp=tmp_path) as server:
        results: list = []

        def call():
            try:
                r = requests.post(f"{server.url}/v2/models/slow/infer", json=fp(np.ones((1, 3))), timeout=60)
                results.append(r.status_code)
            except requests.RequestException as exc:
                results.append(exc)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        # wait until the four requests are being predicted, then ask the server to stop
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "mlops_server_queue_depth 4" in requests.get(server.url + "/metrics", timeout=5).text:
                break
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert server.proc.wait(30) == 0
        assert results == [200, 200, 200, 200]
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url + "/v2/health/live", timeout=5)
    log = server.log.read_text()
    assert "drained and stopped" in log


def test_reuse_port_lets_two_versions_share_a_port(tmp_path, affine_bundle):
    port = free_port()
    cmd = [sys.executable, "-m", "mlops_server", "--bundle", str(affine_bundle), "--port", str(port),
           "--reuse-port", "--log-level", "warning"]
    first = subprocess.Popen(cmd + ["--model-version", "1"])
    second = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(url + "/v2/health/ready", timeout=2).status_code == 200, 60,
                   "the first server to be ready", proc=first, ignore=(requests.RequestException,))
        second = subprocess.Popen(cmd + ["--model-version", "2"])
        seen = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and seen != {"1", "2"}:
            with requests.Session() as s:  # a new connection each time: the kernel picks a process
                seen.update(s.get(url + "/v2/models/affine", timeout=5).json()["versions"])
        assert seen == {"1", "2"}
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        for _ in range(20):
            with requests.Session() as s:
                assert s.get(url + "/v2/models/affine", timeout=5).json()["versions"] == ["2"]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)


def test_sigterm_while_loading_exits_cleanly(tmp_path):
    from mlops_server_testkit import echo_signature

    bundle = tmp_path / "slow-load"
    save_bundle(tm.SlowToLoad(), bundle, signature=echo_signature("FP64"))
    gate = str(tmp_path / "load-gate")
    env = {**os.environ, "MLOPS_TEST_LOAD_GATE": gate}
    proc = subprocess.Popen([sys.executable, "-m", "mlops_server", "--bundle", str(bundle), "--port",
                             str(free_port()), "--reuse-port"], stderr=subprocess.PIPE, text=True, env=env)
    # The model's unpickling announces itself and then waits for the release file: the signal is
    # sent while it loads (the server installs its handler before loading), whatever the machine's speed.
    deadline = time.monotonic() + 60
    while not Path(gate + ".started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the model never started loading"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    Path(gate + ".release").touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped before serving" in err


def test_sigterm_closes_busy_keep_alive_connections_without_losing_a_request(tmp_path, affine_bundle):
    import http.client

    body = json.dumps(fp(np.ones((1, 5))))
    with run_server([affine_bundle], tmp=tmp_path) as server:
        outcomes: list = []
        go = threading.Event()

        def client():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            sent = 0
            try:
                while True:  # back-to-back requests on one connection until the server says close
                    conn.request("POST", "/v2/models/affine/infer", body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    sent += 1
                    outcomes.append(resp.status)
                    if sent == 20:
                        go.set()
                    if resp.getheader("connection", "").lower() == "close":
                        return
            except Exception as exc:  # a request the server dropped
                outcomes.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        go.wait(30)
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert server.proc.wait(30) == 0
    failures = [o for o in outcomes if o != 200]
    assert not failures, failures[:3]
    assert len(outcomes) >= 20
