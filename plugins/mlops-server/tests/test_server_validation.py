"""Requests that do not match the signature, malformed bodies and size limits: clear 4xx answers."""

from __future__ import annotations

import gzip

import pytest

pytestmark = pytest.mark.slow


def fp(shape, data, name="input-0", datatype="FP64"):
    return [{"name": name, "datatype": datatype, "shape": shape, "data": data}]


@pytest.mark.parametrize("inputs,fragment", [
    (fp([1, 4], [1, 2, 3, 4], name="wrong"), "has no input 'wrong'; expected input-0 FP64 [-1, 4]"),
    (fp([1, 3], [1, 2, 3]), "expects [-1, 4]"),
    (fp([4], [1, 2, 3, 4]), "expects [-1, 4]"),
    (fp([1, 4], ["a", "b", "c", "d"], datatype="BYTES"), "expects FP64"),
    (fp([1, 4], [1, 2, 3, 4], datatype="FP16") + fp([1, 4], [1, 2, 3, 4]), "given twice"),
    (fp([1, 4], [1, 2, 3]), "has 3 elements, shape [1, 4] needs 4"),
    (fp([1, 4], [[1, 2], [3]]), "rectangular"),
    (fp([1, 4], [1, 2, "x", 4]), "must be numbers"),
    (fp([1, 4], [1, 2, None, 4]), "must be numbers"),
    (fp([1, -4], [1, 2, 3, 4]), "non-negative integers"),
    (fp([1, 4], [1, 2, 3, 4], datatype="FLOAT"), "unknown datatype"),
    ([{"name": "input-0", "datatype": "FP64", "shape": [1, 4]}], "has no 'data'"),
    ([], "non-empty 'inputs'"),
    (["nope"], "must be an object"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_signature_mismatch_is_400_saying_what_was_expected(main_server, inputs, fragment):
    r = main_server.infer("iris", inputs)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_safe_widening_is_accepted_and_narrowing_refused(main_server):
    assert main_server.infer("iris", fp([1, 4], [5, 3, 1, 0], datatype="INT32")).status_code == 200
    assert main_server.infer("iris", fp([1, 4], [5.1, 3.5, 1.4, 0.2], datatype="FP32")).status_code == 200
    r = main_server.infer("echo-int8", fp([1, 3], [1, 2, 3], datatype="INT64"))
    assert r.status_code == 400 and "expects INT8" in r.json()["error"]


@pytest.mark.parametrize("datatype,value,fragment", [
    ("INT8", 128, "out of range"), ("UINT8", -1, "out of range"), ("INT64", 2**63, "out of range"),
    ("INT32", 1.5, "must be integers"), ("BOOL", 1, "must be booleans"), ("FP16", 1e6, "out of range"),
    ("BYTES", 3, "must be strings"),
])
def test_values_that_do_not_fit_the_datatype(main_server, datatype, value, fragment):
    r = main_server.infer(f"echo-{datatype.lower()}", fp([1, 3], [value, value, value], datatype=datatype))
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


@pytest.mark.parametrize("body,fragment", [
    (b"", "not valid JSON"), (b"{", "not valid JSON"), (b"[1,2]", "JSON object"), (b"\xff\xfe", "not valid JSON"),
    (b'{"id": 3, "inputs": []}', "'id' must be a string"), (b'{"inputs": {}}', "non-empty 'inputs'"),
    (b'{"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [1,2,3,4]}], "outputs": 3}',
     "'outputs' must be a list"),
])
def test_malformed_bodies_are_400(main_server, body, fragment):
    r = main_server.post("/v2/models/iris/infer", data=body)
    assert r.status_code == 400 and fragment in r.json()["error"], r.text


def test_request_size_limit_is_413(main_server):
    big = b'{"inputs": [' + b" " * (2 << 20) + b"]}"
    r = main_server.post("/v2/models/iris/infer", data=big)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 65536

    r = main_server.post("/v2/models/iris/infer", data=chunks())
    assert r.status_code == 413
    assert main_server.get("/v2/health/ready").status_code == 200


def test_gzip_request_bodies(main_server):
    body = b'{"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}'
    r = main_server.post("/v2/models/iris/infer", data=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [0]
    bomb = gzip.compress(b" " * (8 << 20))
    r = main_server.post("/v2/models/iris/infer", data=bomb, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 413
    r = main_server.post("/v2/models/iris/infer", data=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
