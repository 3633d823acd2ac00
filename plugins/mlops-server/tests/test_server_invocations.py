"""MLflow's /invocations forms, one parser per form, against real loaded models.

The cases follow MLflow's own tests of its scoring server (``tests/utils/test_proto_json_utils.py``:
``test_parse_tf_serving_dictionary``, ``test_parse_tf_serving_single_array``,
``test_parse_tf_serving_raises_expected_errors``) mapped onto this server's signatures.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

import mlops_server_testmodels as tm
from mlops_core.bundle import save_bundle
from mlops_core.entities import Signature, TensorSpec
from mlops_server.invocations import parse_invocation
from mlops_server.models import RequestError, ServedModel


def _loaded(path) -> ServedModel:
    model = ServedModel(path)
    model.load()
    assert model.ready, model.error
    return model


@pytest.fixture(scope="module")
def iris(iris_bundle) -> ServedModel:
    return _loaded(iris_bundle)


@pytest.fixture(scope="module")
def frame(misc_bundles) -> ServedModel:
    return _loaded(misc_bundles["frame"])


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> ServedModel:
    """A dict model with MLflow's three-input example: a (strings), b (floats), c (3 ints per row)."""
    path = tmp_path_factory.mktemp("inv") / "abc"
    sig = Signature(inputs=[TensorSpec("a", "BYTES", (-1,)), TensorSpec("b", "FP32", (-1,)),
                            TensorSpec("c", "INT32", (-1, 3))],
                    outputs=[TensorSpec("output-0", "BYTES", (-1,))], input_kind="dict")
    save_bundle(tm.Echo(), path, signature=sig)
    return _loaded(path)


def parse(model: ServedModel, payload: object) -> dict[str, np.ndarray]:
    return parse_invocation(model, orjson.dumps(payload), "application/json")


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.mark.parametrize("payload", [
    {"instances": ROWS},
    {"inputs": ROWS},
    {"instances": [{"input-0": ROWS[0]}, {"input-0": ROWS[1]}]},  # issue 17: was 400 "has shape [2, 1, 4]"
    {"inputs": {"input-0": ROWS}},
    {"instances": ROWS[0]},  # one row without its batch dimension
    {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": ROWS}},
    {"dataframe_records": [dict(zip("abcd", r)) for r in ROWS]},
    {"inputs": ROWS, "params": {"temperature": 0.5}},  # MLflow's params sit next to the data
], ids=["instances", "inputs", "instances-of-dicts", "inputs-dict", "one-row", "split", "records", "params"])
def test_tensor_model_forms(iris, payload):
    arrays = parse(iris, payload)
    assert list(arrays) == ["input-0"]
    expected = np.array(ROWS if "one-row" not in str(payload) and payload.get("instances") != ROWS[0] else [ROWS[0]])
    np.testing.assert_array_equal(arrays["input-0"], expected)
    assert iris.check_inputs([("input-0", "FP64", arrays["input-0"])])["input-0"].shape == expected.shape


def test_instances_are_stacked_per_name(named):
    # MLflow's test_parse_tf_serving_dictionary, "instances are correctly aggregated to dict of input name -> tensor"
    body = {"instances": [{"a": "s1", "b": 1.1, "c": [1, 2, 3]},
                          {"a": "s2", "b": 2.2, "c": [4, 5, 6]},
                          {"a": "s3", "b": 3.3, "c": [7, 8, 9]}]}
    arrays = parse(named, body)
    assert arrays["a"].tolist() == ["s1", "s2", "s3"]
    assert arrays["b"].dtype == np.float32 and np.allclose(arrays["b"], [1.1, 2.2, 3.3])
    assert arrays["c"].dtype == np.int32 and arrays["c"].tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # ... and the same tensors given as a dict of columns ("input provided as a dict")
    columns = parse(named, {"inputs": {"a": ["s1", "s2", "s3"], "b": [1.1, 2.2, 3.3],
                                       "c": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}})
    for name in "abc":
        assert columns[name].tolist() == arrays[name].tolist()


def test_inputs_dict_may_have_different_first_dimensions(named):
    # MLflow's test_parse_tf_serving_arbitrary_input_dictionary
    arrays = parse(named, {"inputs": {"a": ["s1", "s2"], "b": [1.1, 2.2, 3.3],
                                      "c": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]}})
    assert [arrays[n].shape[0] for n in "abc"] == [2, 3, 4]


def test_dataframe_model_forms(frame):
    expected = {"x": [1.0, 2.0], "word": ["abc", "z"]}
    forms = [
        {"dataframe_split": {"columns": ["x", "word"], "data": [[1.0, "abc"], [2.0, "z"]]}},
        {"dataframe_records": [{"x": 1.0, "word": "abc"}, {"x": 2.0, "word": "z"}]},
        {"instances": [{"x": 1.0, "word": "abc"}, {"x": 2.0, "word": "z"}]},
        {"inputs": {"x": [1.0, 2.0], "word": ["abc", "z"]}},
    ]
    for body in forms:
        arrays = parse(frame, body)
        assert {k: v.tolist() for k, v in arrays.items()} == expected, body
    csv = parse_invocation(frame, b"x,word\n1.0,abc\n2.0,z\n", "text/csv")
    assert {k: v.tolist() for k, v in csv.items()} == expected


@pytest.mark.parametrize("payload, message", [
    ({"instances": [{"a": "s1", "b": 1}, {"a": "s2", "b": 2, "c": [4, 5, 6]}]}, "every instance needs a value"),
    ({"instances": [[1, 2, 3]], "inputs": {"a": ["s1"]}}, "exactly one of"),
    ({"signature_name": "hello", "inputs": {"a": ["s1"]}}, "signature_name"),
    ({"columns": ["a"]}, "exactly one of"),
    ({"inputs": {"zzz": [1]}}, "has no input 'zzz'"),
    ({"inputs": {"c": [[1, 2], [3]]}}, "rectangular list of INT32"),
], ids=["ragged-instances", "two-forms", "signature-name", "no-form", "unknown-input", "ragged-tensor"])
def test_refused_forms_say_why(named, payload, message):
    # MLflow's test_parse_tf_serving_raises_expected_errors, plus our own shape checks
    with pytest.raises(RequestError, match=message):
        parse(named, payload)


def test_end_to_end_instances_of_dicts(tmp_path, iris_bundle):
    from mlops_server_testkit import run_server

    with run_server([iris_bundle], tmp=tmp_path) as server:
        r = server.post("/invocations", json={"instances": [{"input-0": ROWS[0]}, {"input-0": ROWS[1]}]})
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [0, 2]}
