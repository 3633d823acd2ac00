"""V2 REST protocol round trips, MLflow /invocations and /metrics against a real server process."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_server_testkit import DATATYPES

pytestmark = pytest.mark.slow

SAMPLE = {
    "BOOL": [[True, False, True], [False, False, True]],
    "UINT8": [[0, 255, 7], [1, 2, 3]],
    "UINT16": [[0, 65535, 7], [1, 2, 3]],
    "UINT32": [[0, 4294967295, 7], [1, 2, 3]],
    "UINT64": [[0, 18446744073709551615, 7], [1, 2, 3]],
    "INT8": [[-128, 127, 0], [1, -2, 3]],
    "INT16": [[-32768, 32767, 0], [1, -2, 3]],
    "INT32": [[-2147483648, 2147483647, 0], [1, -2, 3]],
    "INT64": [[-9223372036854775808, 9223372036854775807, 0], [1, -2, 3]],
    "FP16": [[0.5, -1.25, 65504.0], [1.0, 2.0, 3.0]],
    "FP32": [[0.1, -1.5e30, 3.25], [1.0, 2.0, 3.0]],
    "FP64": [[0.1, -1.5e300, 3.141592653589793], [1.0, 2.0, 3.0]],
    "BYTES": [["a", "", "ünï"], ["x", "yy", "zzz"]],
}


def test_health_and_server_metadata(main_server):
    assert main_server.get("/v2/health/live").status_code == 200
    assert main_server.get("/v2/health/ready").status_code == 200
    meta = main_server.get("/v2").json()
    assert meta["name"] == "mlops-server"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_comes_from_the_signature(main_server):
    r = main_server.get("/v2/models/iris")
    assert r.status_code == 200
    meta = r.json()
    assert meta["name"] == "iris" and meta["platform"] == "mlops-core"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    assert main_server.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
def test_json_round_trip_of_every_datatype(main_server, datatype, nested):
    rows = SAMPLE[datatype]
    data = rows if nested else [v for row in rows for v in row]
    r = main_server.infer(f"echo-{datatype.lower()}", [{"name": "input-0", "datatype": datatype, "shape": [2, 3],
                                                       "data": data}], id="req-7")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-7" and body["model_name"] == f"echo-{datatype.lower()}"
    (out,) = body["outputs"]
    assert out["name"] == "output-0" and out["datatype"] == datatype and out["shape"] == [2, 3]
    flat = [v for row in rows for v in row]
    if datatype == "FP32":
        assert np.array_equal(np.float32(out["data"]), np.float32(flat))
    else:
        assert out["data"] == flat


def test_iris_predictions_match_the_model(main_server, iris_bundle):
    from mlops_core.bundle import load_bundle

    from sklearn.datasets import load_iris

    X, _ = load_iris(return_X_y=True)
    model = load_bundle(iris_bundle).model
    r = main_server.infer("iris", [{"name": "input-0", "datatype": "FP64", "shape": list(X.shape),
                                    "data": X.tolist()}])
    assert r.status_code == 200
    assert r.json()["outputs"][0]["data"] == model.predict(X).tolist()


def test_requested_outputs_are_honoured(main_server):
    inputs = [{"name": "input-0", "datatype": "FP64", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]
    both = main_server.infer("two", inputs).json()["outputs"]
    assert [o["name"] for o in both] == ["doubled", "total"]
    only = main_server.infer("two", inputs, outputs=[{"name": "total"}]).json()["outputs"]
    assert only == [{"name": "total", "datatype": "FP64", "shape": [2], "data": [6.0, 15.0]}]
    r = main_server.infer("two", inputs, outputs=[{"name": "nope"}])
    assert r.status_code == 400 and "nope" in r.json()["error"]


def test_unknown_model_and_version_are_404(main_server):
    r = main_server.get("/v2/models/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = main_server.infer("nope", [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1]}])
    assert r.status_code == 404
    assert main_server.get("/v2/models/iris/versions/9").status_code == 404
    assert main_server.get("/v2/unknown").status_code == 404
    r = main_server.get("/v2/models/iris/infer")
    assert r.status_code == 405 and "error" in r.json()


def test_dataframe_and_dict_models(main_server):
    r = main_server.infer("frame", [
        {"name": "x", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]},
        {"name": "word", "datatype": "BYTES", "shape": [2], "data": ["abc", "z"]},
    ])
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [13.0, 21.0]
    r = main_server.infer("dictmodel", [
        {"name": "a", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]},
        {"name": "b", "datatype": "FP64", "shape": [1, 2], "data": [10, 20]},
    ])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [11.0, 22.0]


def test_model_error_on_valid_input_is_a_400(main_server):
    r = main_server.infer("rejects", [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [-1, 2]}])
    assert r.status_code == 400 and "negative values" in r.json()["error"]
    assert main_server.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("payload", [
    {"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}},
    {"dataframe_records": [{"a": 5.1, "b": 3.5, "c": 1.4, "d": 0.2}, {"a": 6.7, "b": 3.0, "c": 5.2, "d": 2.3}]},
    {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
    {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
], ids=["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_mlflow_invocations(tmp_path, iris_bundle, payload):
    from mlops_server_testkit import run_server

    with run_server([iris_bundle], tmp=tmp_path) as server:
        r = server.post("/invocations", json=payload)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": [0, 2]}
        csv = "a,b,c,d\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
        r = server.post("/invocations", data=csv, headers={"Content-Type": "text/csv"})
        assert r.status_code == 200 and r.json() == {"predictions": [0, 2]}
        r = server.post("/invocations", json={"instances": [[1, 2]]})
        assert r.status_code == 400 and "expects [-1, 4]" in r.json()["error"]
        assert server.get("/ping").status_code == 200


def test_metrics_page(main_server):
    main_server.infer("affine", [{"name": "input-0", "datatype": "FP64", "shape": [1, 5], "data": [0] * 5}])
    r = main_server.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'mlops_server_requests_total{model="affine",route="infer",code="200"}' in text
    assert 'mlops_server_model_ready{model="iris",version=""} 1' in text
    assert "# TYPE mlops_server_request_duration_seconds histogram" in text
    assert 'mlops_server_request_duration_seconds_bucket{model="affine",le="+Inf"}' in text
