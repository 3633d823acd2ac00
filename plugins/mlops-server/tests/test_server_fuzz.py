"""Hypothesis throws random and malformed requests at /infer: never a 5xx, never a crash."""

from __future__ import annotations

import json
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_server_testkit import DATATYPES

pytestmark = pytest.mark.slow

MODELS = ["iris", "affine", "two", "dictmodel", *(f"echo-{d.lower()}" for d in DATATYPES)]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=24)
shapes = st.lists(st.integers(min_value=-2, max_value=4), max_size=4)


@st.composite
def tensors(draw):
    shape = draw(st.one_of(shapes, st.just([1, 3]), st.just([2, 4]), st.just([1, 5])))
    datatype = draw(st.one_of(st.sampled_from(DATATYPES), st.text(max_size=6)))
    tensor = {"name": draw(st.sampled_from(["input-0", "a", "b", "", "x"])), "datatype": datatype, "shape": shape}
    if draw(st.booleans()):
        tensor["data"] = draw(nested)
    if draw(st.integers(0, 4)) == 0:
        tensor["parameters"] = draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=3), scalars, max_size=2)))
    if draw(st.integers(0, 3)) == 0:
        del tensor[draw(st.sampled_from(["name", "datatype", "shape"]))]
    return tensor


@st.composite
def requests_(draw):
    body = {"inputs": draw(st.lists(tensors(), max_size=3))}
    if draw(st.booleans()):
        body["id"] = draw(scalars)
    if draw(st.integers(0, 3)) == 0:
        body["outputs"] = draw(st.lists(st.dictionaries(st.sampled_from(["name", "parameters"]), scalars,
                                                        max_size=2), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        body["parameters"] = draw(st.one_of(scalars, st.dictionaries(st.text(max_size=3), scalars, max_size=2)))
    return body


def check(r) -> None:
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert isinstance(r.json()["error"], str)


@FUZZ
@given(model=st.sampled_from(MODELS), body=requests_())
def test_random_v2_requests(main_server, model, body):
    check(main_server.post(f"/v2/models/{model}/infer", data=json.dumps(body).encode()))


@FUZZ
@given(model=st.sampled_from(MODELS), raw=st.binary(max_size=300))
def test_random_bytes(main_server, model, raw):
    check(main_server.post(f"/v2/models/{model}/infer", data=raw))


@FUZZ
@given(model=st.sampled_from(MODELS), body=requests_(), blob=st.binary(max_size=64),
       header=st.one_of(st.just("exact"), st.integers(-5, 400).map(str), st.text(alphabet="0123456789x-+.", max_size=4)),
       sizes=st.lists(st.one_of(st.integers(-2, 70), st.text(max_size=2)), max_size=3))
def test_random_binary_extension_requests(main_server, model, body, blob, header, sizes):
    for tensor, size in zip(body["inputs"], sizes):
        tensor.setdefault("parameters", {})
        if isinstance(tensor["parameters"], dict):
            tensor["parameters"]["binary_data_size"] = size
    head = json.dumps(body).encode()
    if header == "exact":
        header = str(len(head))
    r = main_server.post(f"/v2/models/{model}/infer", data=head + blob,
                         headers={"Inference-Header-Content-Length": header})
    check(r)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=(1 << 20) + 1, max_value=3 << 20))
def test_oversized_bodies(main_server, size):
    r = main_server.post("/v2/models/iris/infer", data=b"[" * size)
    assert r.status_code == 413


@FUZZ
@given(body=st.one_of(st.dictionaries(st.sampled_from(["dataframe_split", "dataframe_records", "instances",
                                                       "inputs", "columns"]),
                                      st.one_of(nested, st.dictionaries(st.sampled_from(["input-0", "columns", "data",
                                                                                         "a", "x"]), nested,
                                                                        max_size=3),
                                                st.lists(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]),
                                                                         scalars, max_size=4), max_size=3)),
                                      max_size=2),
                      nested))
def test_random_invocations(tmp_path_factory, iris_bundle, body, invocations_server):
    check(invocations_server.post("/invocations", data=json.dumps(body).encode()))


@pytest.fixture(scope="module")
def invocations_server(tmp_path_factory, iris_bundle):
    from mlops_server_testkit import run_server

    with run_server([iris_bundle], tmp=tmp_path_factory.mktemp("inv")) as server:
        yield server
        assert server.get("/v2/health/ready").status_code == 200


def test_server_is_healthy_after_fuzzing(main_server):
    assert main_server.get("/v2/health/ready").status_code == 200
    assert main_server.proc.poll() is None
    r = main_server.infer("iris", [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                                    "data": [5.1, 3.5, 1.4, 0.2]}])
    assert r.json()["outputs"][0]["data"] == [0]
