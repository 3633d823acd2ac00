"""The plugin itself: discovery, cheap import, `mlops serve` / `mlops predict`, and prediction events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from mlops_server_testkit import RunningServer, free_port, run_server

MLOPS = [str(Path(sys.executable).with_name("mlops"))]
TESTS = Path(__file__).parent


def test_plugin_is_discovered_through_its_entry_point():
    from mlops_core.plugins import PluginManager

    pm = PluginManager()
    info = {p.name: p for p in pm.plugins()}
    assert "server" in info, [f.describe() for f in pm.failures]
    assert info["server"].distribution == "mlops-server"
    assert "mlops_add_cli_commands" in info["server"].hooks


def test_plugin_import_is_cheap():
    out = subprocess.run([sys.executable, "-c", "import sys, mlops_server.plugin; "
                          "print(sorted(m for m in ('numpy', 'uvicorn', 'orjson', 'uvloop') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def mlops(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*MLOPS, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


@pytest.mark.slow
def test_mlops_serve_and_predict(tmp_path, iris_bundle):
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*MLOPS, "serve", str(iris_bundle), "--name", "flowers", "--model-version", "3",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    server = RunningServer(proc, port, log)
    try:
        server.wait_ready()
        assert server.get("/v2/models/flowers/versions/3").json()["versions"] == ["3"]
        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
        out = mlops("predict", server.url, "--model", "flowers", "--input", str(rows))
        assert out.stdout.split() == ["output-0", "(INT64", "[2]):", "0", "2"]
        csv = tmp_path / "rows.csv"
        csv.write_text("a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
        out = mlops("predict", server.url, "--model", "flowers", "--input", str(csv), "--json")
        body = json.loads(out.stdout)
        assert body["outputs"][0]["data"] == [0, 2] and body["model_version"] == "3"
        v2 = tmp_path / "v2.json"
        v2.write_text(json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                                              "data": [6.7, 3.0, 5.2, 2.3]}]}))
        out = mlops("predict", server.url, "--model", "flowers", "--model-version", "3", "--input", str(v2), "--json")
        assert json.loads(out.stdout)["outputs"][0]["data"] == [2]
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps([[1, 2]]))
        out = mlops("predict", server.url, "--model", "flowers", "--input", str(bad), check=False)
        assert out.returncode == 2 and "expects [-1, 4]" in out.stderr
        out = mlops("predict", f"http://127.0.0.1:{free_port()}", "--model", "x", "--input", str(rows), check=False)
        assert out.returncode == 8 and "cannot reach" in out.stderr
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_mlops_serve_a_model_uri(tmp_path, iris_bundle):
    env = {**os.environ, "MLOPS_HOME": str(tmp_path / "home")}
    reg = subprocess.run([sys.executable, "-c", "import sys, mlops_core.api as api; "
                          "v = api.register('irisreg', sys.argv[1], alias='staging'); print(v.version)",
                          str(iris_bundle)], capture_output=True, text=True, env=env, cwd=tmp_path)
    if reg.returncode != 0:
        pytest.skip(f"the default stack cannot register here: {reg.stderr.strip().splitlines()[-1:]}")
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*MLOPS, "serve", "models:/irisreg@staging", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    server = RunningServer(proc, port, log)
    try:
        server.wait_ready()
        meta = server.get("/v2/models/irisreg").json()
        assert meta["versions"] == [reg.stdout.strip()]
    finally:
        assert server.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("batching", [False, True], ids=["plain", "batched"])
def test_prediction_events_reach_listeners_and_a_broken_one_hurts_nobody(tmp_path, affine_bundle, batching):
    events = tmp_path / "events.jsonl"
    env = {"MLOPS_PLUGIN_MODULES": "mlops_server_testlistener,mlops_server_testraising", "MLOPS_SERVER_TEST_EVENTS": str(events),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    args = ["--max-batch-size", "8", "--max-batch-wait-ms", "2"] if batching else []
    with run_server([affine_bundle], *args, "--model-version", "4", tmp=tmp_path, env=env) as server:
        for i in range(5):
            r = server.infer("affine", [{"name": "input-0", "datatype": "FP64", "shape": [1, 5], "data": [i] * 5}])
            assert r.status_code == 200
        metrics = server.get("/metrics").text
        assert "test_listener_up 1" in metrics
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not events.exists() or len(events.read_text().splitlines()) < 5):
            time.sleep(0.05)
    lines = [json.loads(l) for l in events.read_text().splitlines()]
    assert len(lines) == 5
    assert {l["model"] for l in lines} == {"affine"} and {l["version"] for l in lines} == {4}
    assert sorted(l["inputs"]["input-0"][0][0] for l in lines) == [0, 1, 2, 3, 4]
    assert all(l["outputs"]["output-0"] == [[2 * l["inputs"]["input-0"][0][0] + 1.0] * 5] for l in lines)
    assert "a broken monitor" in server.log.read_text()


@pytest.mark.slow
def test_several_workers_share_the_port_and_stop_together(tmp_path, affine_bundle):
    with run_server([affine_bundle], "--workers", "2", tmp=tmp_path) as server:
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
        assert len(children) == 2
        for _ in range(20):
            with requests.Session() as s:  # new connections: the kernel spreads them over the workers
                r = s.post(server.url + "/v2/models/affine/infer", json={"inputs": [
                    {"name": "input-0", "datatype": "FP64", "shape": [1, 5], "data": [1] * 5}]})
                assert r.status_code == 200
    assert server.proc.returncode == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists()


@pytest.mark.slow
def test_mlops_predict_builds_one_tensor_per_column_for_dataframe_models(tmp_path, main_server):
    csv = tmp_path / "frame.csv"
    csv.write_text("word,x\nabc,1.0\nz,2.0\n")
    out = mlops("predict", main_server.url, "--model", "frame", "--input", str(csv), "--json")
    assert json.loads(out.stdout)["outputs"][0]["data"] == [13.0, 21.0]
    records = tmp_path / "frame.json"
    records.write_text(json.dumps([{"x": 1.0, "word": "abc"}, {"x": 2.0, "word": "z"}]))
    out = mlops("predict", main_server.url, "--model", "frame", "--input", str(records), "--json")
    assert json.loads(out.stdout)["outputs"][0]["data"] == [13.0, 21.0]


def test_failed_predictions_reach_listeners_with_their_error(tmp_path, misc_bundles):
    """Monitors count model errors: a prediction the model refuses fires an event carrying the error."""
    events = tmp_path / "events.jsonl"
    env = {"MLOPS_PLUGIN_MODULES": "mlops_server_testlistener", "MLOPS_SERVER_TEST_EVENTS": str(events),
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    with run_server([misc_bundles["rejects"]], tmp=tmp_path, env=env) as server:
        ok = server.infer("rejects", [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}])
        bad = server.infer("rejects", [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [-1, 2]}])
        assert ok.status_code == 200 and bad.status_code == 400
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not events.exists() or len(events.read_text().splitlines()) < 2):
            time.sleep(0.05)
    lines = [json.loads(l) for l in events.read_text().splitlines()]
    assert [l["error"] is None for l in lines] == [True, False]
    assert "negative values are not allowed" in lines[1]["error"] and lines[1]["outputs"] == {}


@pytest.mark.slow
def test_mlops_predict_returns_one_prediction_per_input_row_for_every_input_form(tmp_path, main_server):
    """Rows in == predictions out: CSV with or without a header, JSON rows, a V2 body, one row or many."""
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    names = [s["name"] for s in main_server.get("/v2/models/iris").json()["inputs"]]
    inputs = {
        "plain.csv": "\n".join(",".join(map(str, r)) for r in rows) + "\n",
        "header.csv": "a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n",
        "one.csv": "5.1,3.5,1.4,0.2\n",
        "rows.json": json.dumps(rows),
        "v2.json": json.dumps({"inputs": [{"name": names[0], "shape": [3, 4], "datatype": "FP64",
                                           "data": [v for r in rows for v in r]}]}),
    }
    for file_name, text in inputs.items():
        path = tmp_path / file_name
        path.write_text(text)
        out = mlops("predict", main_server.url, "--model", "iris", "--input", str(path), "--json")
        expected = 1 if file_name == "one.csv" else 3
        assert len(json.loads(out.stdout)["outputs"][0]["data"]) == expected, file_name
    forced = tmp_path / "forced.csv"
    forced.write_text(inputs["plain.csv"])
    out = mlops("predict", main_server.url, "--model", "iris", "--input", str(forced), "--header", "--json")
    assert len(json.loads(out.stdout)["outputs"][0]["data"]) == 2  # asked for: the first row named the columns
def test_log_format_comes_from_the_flag_or_mlops_log_format(monkeypatch):
    """(#12) The container deployer sets MLOPS_LOG_FORMAT=json in the container; the flag wins over it."""
    from mlops_core.errors import ConfigError
    from mlops_server._args import build_module_parser
    from mlops_server.cli import config_argv, config_from_args
    from mlops_server.config import BundleSpec

    parser = build_module_parser()
    bundles = [BundleSpec("/b")]
    monkeypatch.delenv("MLOPS_LOG_FORMAT", raising=False)
    assert config_from_args(parser.parse_args(["--bundle", "/b"]), bundles).log_format == "text"
    monkeypatch.setenv("MLOPS_LOG_FORMAT", "json")
    config = config_from_args(parser.parse_args(["--bundle", "/b"]), bundles)
    assert config.log_format == "json"
    assert "--log-format" in (argv := config_argv(config)) and argv[argv.index("--log-format") + 1] == "json"
    assert config_from_args(parser.parse_args(["--bundle", "/b", "--log-format", "text"]), bundles).log_format == "text"
    monkeypatch.setenv("MLOPS_LOG_FORMAT", "yaml")
    with pytest.raises(ConfigError, match="unknown log format"):
        config_from_args(parser.parse_args(["--bundle", "/b"]), bundles)
