"""Large valid requests: decoded straight into numpy (same answers as the plain parse), a bounded memory
peak, a bounded in-flight budget, and health checks answered while a big body is decoded."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import orjson
import pytest
import requests

from mlops_server import bigjson
from mlops_server.models import ServedModel
from mlops_server.responses import HttpError
from mlops_server.v2 import LIFT_FROM_BYTES, decode_request
from mlops_server_testkit import run_server


# ------------------------------------------------------------------ the fast reader, in process
@pytest.fixture(scope="module")
def echo_models(echo_bundles) -> dict[str, ServedModel]:
    out = {}
    for dt in ("FP64", "FP32", "FP16", "INT64", "INT32", "UINT8", "BOOL", "BYTES"):
        m = ServedModel(echo_bundles[dt])
        m.load()
        out[dt] = m
    return out


def _plain(model: ServedModel, body: bytes):
    """What the ordinary parse says: the arrays, or the HttpError."""
    from mlops_server import v2

    try:
        request, binary = v2._parse_request(body, None)
        return model.check_inputs(v2._decode_inputs(request, binary))
    except HttpError as exc:
        return exc
    except Exception as exc:  # RequestError -> 400 in decode_request
        return HttpError(400, str(exc))


def _same(model: ServedModel, body: bytes) -> None:
    expected = _plain(model, body)
    try:
        got = decode_request(model, body, None)[1]
    except HttpError as exc:
        got = exc
    if isinstance(expected, HttpError):
        assert isinstance(got, HttpError), got
        assert (got.status, got.message) == (expected.status, expected.message)
    else:
        assert not isinstance(got, HttpError), got.message
        assert got.keys() == expected.keys()
        for name in got:
            assert got[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(got[name], expected[name])


def _body(datatype: str, data, shape, **extra) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input-0", "datatype": datatype, "shape": shape, "data": data}],
                         **extra})


ROWS = 150_000  # 3 columns: above LIFT_FROM_BYTES as JSON, even for small integers


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "FP16", "INT64", "INT32", "UINT8"])
@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
def test_large_bodies_decode_exactly_as_the_plain_parse(echo_models, datatype, nested):
    rng = np.random.default_rng(1)
    if datatype.startswith(("INT", "UINT")):
        values = rng.integers(0, 200, (ROWS, 3))
    else:
        values = rng.normal(0, 100, (ROWS, 3)).round(3)
    data = values.tolist() if nested else values.ravel().tolist()
    body = _body(datatype, data, [ROWS, 3], id="big", parameters={"p": [1, 2, 3]})
    assert len(body) >= LIFT_FROM_BYTES
    lifted = bigjson.lift_numeric_arrays(body)
    assert lifted is not None and len(lifted.skeleton) < 1000  # the numbers were really lifted
    _same(echo_models[datatype], body)
    request, arrays = decode_request(echo_models[datatype], body, None)
    assert request["id"] == "big" and request["parameters"] == {"p": [1, 2, 3]}


@pytest.mark.parametrize("case", [
    "ragged", "count", "float-for-int", "int-overflow", "fp32-overflow", "trailing-comma", "two-arrays",
    "in-a-string", "bool-tensor", "bytes-tensor", "exponent", "whitespace", "nan-token", "in-parameters",
])
def test_malformed_or_unusual_large_bodies_get_the_plain_answer(echo_models, case):
    rows = np.arange(ROWS * 3, dtype=np.int64).reshape(ROWS, 3) % 97
    text = json.dumps(rows.tolist())
    dt, shape = "INT64", [ROWS, 3]
    if case == "ragged":
        text = text.replace("[0, 1, 2]", "[0, 1]", 1)
        shape = [ROWS * 3 - 1]
    elif case == "count":
        shape = [ROWS + 1, 3]
    elif case == "float-for-int":
        text = text.replace("[0, 1, 2]", "[0.5, 1, 2]", 1)
    elif case == "int-overflow":
        text = text.replace("[0, 1, 2]", "[99999999999999999999, 1, 2]", 1)
    elif case == "fp32-overflow":
        dt, text = "FP32", text.replace("[0, 1, 2]", "[1e300, 1, 2]", 1)
    elif case == "trailing-comma":
        text = text[:-1] + ",]"
    elif case == "two-arrays":
        text = text + ", [1, 2, 3]"
    elif case == "bool-tensor":
        dt = "BOOL"
    elif case == "bytes-tensor":
        dt = "BYTES"
    elif case == "exponent":
        dt, text = "FP64", text.replace("[0, 1, 2]", "[0e0, 1E+1, -2.5e-3]", 1)
    elif case == "whitespace":
        text = text.replace(", ", ",\n\t ")
    elif case == "nan-token":
        dt, text = "FP64", text.replace("[0, 1, 2]", "[NaN, 1, 2]", 1)
    if case == "in-a-string":
        body = ('{"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1], "data": ["%s"]}]}'
                % text).encode()
        _same(echo_models["BYTES"], body)
        return
    if case == "in-parameters":
        body = ('{"parameters": {"x": %s}, "inputs": [{"name": "input-0", "datatype": "INT64", "shape": [1, 3], '
                '"data": [1, 2, 3]}]}' % text).encode()
        _same(echo_models["INT64"], body)
        return
    body = ('{"inputs": [{"name": "input-0", "datatype": "%s", "shape": %s, "data": %s}]}'
            % (dt, json.dumps(shape), text)).encode()
    assert len(body) >= LIFT_FROM_BYTES
    _same(echo_models[dt], body)


# ------------------------------------------------------------------ against a real server
def rss(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(key)


def big_iris_body(mib: int) -> tuple[bytes, np.ndarray]:
    rows = int(mib * (1 << 20) / 80)
    data = (np.random.default_rng(0).random((rows, 4)) * 8)
    body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": list(data.shape),
                                   "data": data.tolist()}]}).encode()
    return body, data


@pytest.mark.slow
def test_a_62_mib_request_peaks_below_3x_its_size_and_health_is_answered_meanwhile(tmp_path, iris_bundle):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    body, data = big_iris_body(62)
    X, y = load_iris(return_X_y=True)
    expected = LogisticRegression(max_iter=1000).fit(X, y).predict(data)
    with run_server([iris_bundle], "--max-body-bytes", str(len(body) + 1024), tmp=tmp_path) as server:
        pid = server.proc.pid
        assert server.post("/v2/models/iris/infer", json={"inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}).ok
        idle = rss(pid)
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        result: dict = {}

        def big() -> None:
            result["response"] = requests.post(server.url + "/v2/models/iris/infer", data=body, timeout=600,
                                               headers={"Content-Type": "application/json"})

        thread = threading.Thread(target=big)
        thread.start()
        health = []
        with requests.Session() as probe:
            while thread.is_alive():
                health.append(probe.get(server.url + "/v2/health/ready", timeout=60).status_code)
        thread.join()
        peak = rss(pid, "VmHWM")
        r = result["response"]
        assert r.status_code == 200, r.text[:300]
        assert r.json()["outputs"][0]["data"] == expected.tolist()
        assert peak - idle <= 3 * len(body), (
            f"peak {(peak - idle) >> 20} MiB above idle for a {len(body) >> 20} MiB body")
        assert health and set(health) == {200}


def _start_large(port: int, size: int) -> socket.socket:
    """A large request whose headers and first bytes are sent, the rest held back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n{" % size)
    return s


def test_large_bodies_beyond_the_in_flight_budget_get_503(tmp_path, iris_bundle):
    size = 3 << 20
    with run_server([iris_bundle], "--max-inflight-body-bytes", str(4 << 20), tmp=tmp_path) as server:
        first = _start_large(server.port, size)
        with first:
            # the first one holds 3 of the 4 MiB: a second large one does not fit...
            deadline_reply = None
            for _ in range(600):
                second = requests.post(server.url + "/v2/models/iris/infer", data=b" " * size, timeout=60,
                                       headers={"Content-Type": "application/json"})
                deadline_reply = second
                if second.status_code == 503:
                    break
            assert deadline_reply is not None and deadline_reply.status_code == 503, deadline_reply.text
            assert deadline_reply.headers["retry-after"] == "1"
            assert "large request bodies in flight" in deadline_reply.json()["error"]
            # ...while small requests are never counted
            small = server.post("/v2/models/iris/infer", json={"inputs": [
                {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]})
            assert small.status_code == 200
        # the first client went away: its reservation is released, large requests fit again
        rows = [[5.1, 3.5, 1.4, 0.2]] * 60_000
        body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [60_000, 4],
                                       "data": rows}]}).encode()
        assert len(body) > 1 << 20
        for _ in range(600):
            r = requests.post(server.url + "/v2/models/iris/infer", data=body, timeout=60,
                              headers={"Content-Type": "application/json"})
            if r.status_code != 503:
                break
        assert r.status_code == 200, r.text[:300]
        assert r.json()["outputs"][0]["data"] == [0] * 60_000
