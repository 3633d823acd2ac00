"""Binary tensor data extension both ways, and a standard V2 client (tritonclient) against the server."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from mlops_server_testkit import DATATYPES

pytestmark = pytest.mark.slow

NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
         "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
         "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


def sample(datatype: str, rows: int = 2) -> np.ndarray:
    rng = np.random.default_rng(7)
    if datatype == "BYTES":
        words = np.array(["", "a", "ünï", "long string " * 5, "x\x00y"], dtype=object)
        return words[rng.integers(0, len(words), size=(rows, 3))].astype(object)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=(rows, 3)).astype(bool)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=(rows, 3), dtype=dtype, endpoint=True)
    return rng.normal(size=(rows, 3)).astype(dtype)


def raw_bytes(arr: np.ndarray) -> bytes:
    if arr.dtype == object:
        parts = []
        for s in arr.ravel():
            b = s.encode() if isinstance(s, str) else s
            parts += [struct.pack("<I", len(b)), b]
        return b"".join(parts)
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def split_response(r) -> tuple[dict, bytes]:
    n = int(r.headers["Inference-Header-Content-Length"])
    return orjson.loads(r.content[:n]), r.content[n:]


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_input_and_binary_output(main_server, datatype):
    arr = sample(datatype)
    blob = raw_bytes(arr)
    head = orjson.dumps({"id": "b1", "inputs": [{"name": "input-0", "datatype": datatype, "shape": [2, 3],
                                                  "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "output-0", "parameters": {"binary_data": True}}]})
    r = main_server.post(f"/v2/models/echo-{datatype.lower()}/infer", data=head + blob,
                         headers={"Inference-Header-Content-Length": str(len(head)),
                                  "Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    meta, rest = split_response(r)
    (out,) = meta["outputs"]
    assert meta["id"] == "b1"
    assert out["datatype"] == datatype and out["shape"] == [2, 3] and "data" not in out
    assert out["parameters"]["binary_data_size"] == len(rest)
    assert rest == blob


def test_binary_input_json_output(main_server):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    head = orjson.dumps({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 3],
                                      "parameters": {"binary_data_size": 24}}]})
    r = main_server.post("/v2/models/echo-fp32/infer", data=head + arr.tobytes(),
                         headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_request_level_binary_output_flag(main_server):
    r = main_server.infer("two", [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}],
                          parameters={"binary_data_output": True})
    meta, rest = split_response(r)
    sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
    assert sizes == [24, 8] and len(rest) == 32
    assert np.frombuffer(rest[:24], "<f8").tolist() == [2.0, 4.0, 6.0]
    assert np.frombuffer(rest[24:], "<f8").tolist() == [6.0]


@pytest.mark.parametrize("body,header,fragment", [
    (b'{"inputs":[{"name":"input-0","datatype":"FP32","shape":[2,3],"parameters":{"binary_data_size":24}}]}' + b"\0" * 20,
     None, "binary"),
    (b'{"inputs":[{"name":"input-0","datatype":"FP32","shape":[2,3],"parameters":{"binary_data_size":20}}]}' + b"\0" * 20,
     "auto", "needs 24"),
    (b'{"inputs":[{"name":"input-0","datatype":"FP32","shape":[2,3],"parameters":{"binary_data_size":24}}]}' + b"\0" * 30,
     "auto", "not claimed"),
    (b'{"inputs":[]}', "999", "does not fit"),
    (b'{"inputs":[]}', "abc", "must be an integer"),
])
def test_malformed_binary_requests_are_400(main_server, body, header, fragment):
    headers = {}
    if header == "auto":
        headers["Inference-Header-Content-Length"] = str(body.index(b"}]}") + 3)
    elif header is not None:
        headers["Inference-Header-Content-Length"] = header
    r = main_server.post("/v2/models/echo-fp32/infer", data=body, headers=headers)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


# ---------------------------------------------------------------- tritonclient
@pytest.fixture(scope="module")
def triton(main_server):
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{main_server.port}")
    yield httpclient, client
    client.close()


def test_tritonclient_health_and_metadata(triton):
    _, client = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris")
    meta = client.get_model_metadata("iris")
    assert meta["inputs"][0]["shape"] == [-1, 4]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_predicts_iris(triton, iris_bundle, binary):
    from mlops_core.bundle import load_bundle
    from sklearn.datasets import load_iris

    httpclient, client = triton
    X, _ = load_iris(return_X_y=True)
    inp = httpclient.InferInput("input-0", list(X.shape), "FP64")
    inp.set_data_from_numpy(X, binary_data=binary)
    out = httpclient.InferRequestedOutput("output-0", binary_data=binary)
    result = client.infer("iris", [inp], outputs=[out], request_id="t-1")
    expected = load_bundle(iris_bundle).model.predict(X)
    assert np.array_equal(result.as_numpy("output-0"), expected)
    assert result.get_response()["id"] == "t-1"
    # no outputs named: tritonclient asks for every output in binary
    result = client.infer("iris", [inp])
    assert np.array_equal(result.as_numpy("output-0"), expected)


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_round_trips_every_datatype(triton, datatype, binary):
    httpclient, client = triton
    arr = sample(datatype, rows=4)
    if datatype == "BYTES":
        arr = np.array([s.encode() for s in arr.ravel()], dtype=object).reshape(arr.shape)
    inp = httpclient.InferInput("input-0", list(arr.shape), datatype)
    inp.set_data_from_numpy(arr, binary_data=binary)
    out = httpclient.InferRequestedOutput("output-0", binary_data=binary)
    result = client.infer(f"echo-{datatype.lower()}", [inp], outputs=[out])
    got = result.as_numpy("output-0")
    if datatype == "BYTES":
        got = np.array([g if isinstance(g, bytes) else str(g).encode() for g in got.ravel()], dtype=object)
        assert got.tolist() == arr.ravel().tolist()
    else:
        assert got.dtype == arr.dtype
        assert np.array_equal(got, arr)


def test_tritonclient_sees_errors(triton):
    httpclient, client = triton
    from tritonclient.utils import InferenceServerException

    inp = httpclient.InferInput("input-0", [1, 3], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException, match=r"expects \[-1, 4\]"):
        client.infer("iris", [inp])
