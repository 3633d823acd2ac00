"""Bundles: round trips, integrity checks before unpickling, the published schema, streaming."""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlops_core
from mlops_core.bundle import MANIFEST, read_manifest, schema_path, validate_manifest
from mlops_core.errors import AlreadyExistsError, IntegrityError, InvalidInputError

SCHEMA = json.loads(schema_path().read_text())


def _iris_model():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(X, y), X


def test_sklearn_round_trip(tmp_path):
    model, X = _iris_model()
    info = mlops_core.save_bundle(model, tmp_path / "iris", example=X[:5])
    jsonschema.validate(info.manifest, SCHEMA)
    sig = info.signature
    assert [(t.name, t.datatype, t.shape) for t in sig.inputs] == [("input-0", "FP64", (-1, 4))]
    assert sig.outputs[0].datatype == "INT64"
    names = {r["name"] for r in info.manifest["requirements"]}
    assert {"scikit-learn", "numpy"} <= names
    loaded = mlops_core.load_bundle(tmp_path / "iris")
    assert (loaded.model.predict(X) == model.predict(X)).all()
    assert loaded.digest == info.digest


class Scaler:
    """A class defined in a test module: cloudpickle must carry it by reference or value."""

    def __init__(self, k):
        self.k = k

    def predict(self, x):
        return np.asarray(x) * self.k


@pytest.mark.parametrize("factory", [
    lambda: (lambda x: np.asarray(x) + 1),
    lambda: Scaler(3),
    lambda: (lambda offset: (lambda x: np.asarray(x) - offset))(7),  # a closure
])
def test_arbitrary_callables_round_trip(tmp_path, factory):
    model = factory()
    x = np.arange(6, dtype="float64").reshape(2, 3)
    info = mlops_core.save_bundle(model, tmp_path / "m", example=x)
    assert info.manifest["signature"]["inputs"][0]["shape"] == [-1, 3]
    loaded = mlops_core.load_bundle(tmp_path / "m").model
    predict = getattr(loaded, "predict", loaded)
    expected = getattr(model, "predict", model)(x)
    assert (predict(x) == expected).all()


class Tripwire:
    """Unpickling this object writes a marker file: proof of whether pickled code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled!",))

    def predict(self, x):
        return x


def test_tampered_payload_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "ran.txt"
    mlops_core.save_bundle(Tripwire(str(marker)), tmp_path / "b")
    # Control: loading the intact bundle does run the pickled code (the tripwire works).
    mlops_core.load_bundle(tmp_path / "b")
    assert marker.exists()
    marker.unlink()
    payload = tmp_path / "b" / "model.pkl"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        mlops_core.load_bundle(tmp_path / "b")
    assert not marker.exists(), "pickled code ran before the hash check"


def test_truncated_extra_and_missing_files_are_refused(tmp_path):
    model, X = _iris_model()
    # cloudpickle named: with a scikit-learn format plugin installed the automatic choice would differ
    mlops_core.save_bundle(model, tmp_path / "b", format="cloudpickle")
    payload = tmp_path / "b" / "model.pkl"
    original = payload.read_bytes()
    payload.write_bytes(original[:-3])
    with pytest.raises(IntegrityError, match="size"):
        mlops_core.load_bundle(tmp_path / "b")
    payload.write_bytes(original)
    (tmp_path / "b" / "evil.py").write_text("print('hi')")
    with pytest.raises(IntegrityError, match="does not list"):
        mlops_core.load_bundle(tmp_path / "b")
    (tmp_path / "b" / "evil.py").unlink()
    payload.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        mlops_core.load_bundle(tmp_path / "b")


def test_manifest_edits_change_the_digest_and_are_caught(tmp_path):
    model, _ = _iris_model()
    info = mlops_core.save_bundle(model, tmp_path / "b")
    mpath = tmp_path / "b" / MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest["files"][0]["path"] = "../outside.pkl"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="unsafe file path"):
        mlops_core.load_bundle(tmp_path / "b")
    manifest["files"][0]["path"] = "model.pkl"
    manifest["metadata"] = {"edited": True}
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="expected"):
        mlops_core.load_bundle(tmp_path / "b", expected_digest=info.digest)


def test_save_is_atomic_and_refuses_to_overwrite(tmp_path):
    class Unpicklable:
        def predict(self, x):
            return x

        def __reduce__(self):
            raise RuntimeError("cannot pickle me")

    with pytest.raises(RuntimeError):
        mlops_core.save_bundle(Unpicklable(), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temp left behind
    mlops_core.save_bundle(Scaler(1), tmp_path / "b")
    with pytest.raises(AlreadyExistsError):
        mlops_core.save_bundle(Scaler(2), tmp_path / "b")
    mlops_core.save_bundle(Scaler(2), tmp_path / "b", overwrite=True)
    assert mlops_core.load_bundle(tmp_path / "b").model.k == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_signature_inference_errors_are_clear(tmp_path):
    class Broken:
        def predict(self, x):
            raise ValueError("wrong shape")

    with pytest.raises(InvalidInputError, match="predict\\(example\\) raised ValueError"):
        mlops_core.save_bundle(Broken(), tmp_path / "b", example=np.zeros((1, 2)))


def test_dataframe_and_dict_signatures(tmp_path):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"age": [1.0, 2.0], "city": ["a", "b"], "n": np.array([1, 2], dtype="int32")})
    info = mlops_core.save_bundle(lambda d: d["age"].to_numpy(), tmp_path / "df", example=df)
    sig = info.manifest["signature"]
    assert sig["input_kind"] == "dataframe"
    assert [(t["name"], t["datatype"]) for t in sig["inputs"]] == [("age", "FP64"), ("city", "BYTES"), ("n", "INT32")]
    info = mlops_core.save_bundle(lambda d: d["a"] + d["b"], tmp_path / "dict",
                                  example={"a": np.zeros((2, 2), "float32"), "b": np.ones((2, 2), "float32")})
    assert info.manifest["signature"]["input_kind"] == "dict"
    assert info.manifest["signature"]["outputs"][0]["datatype"] == "FP32"


def test_large_bundle_is_hashed_as_a_stream(tmp_path):
    big = Scaler(np.random.default_rng(0).random(8 * 1024 * 1024))  # 64 MiB of float64
    info = mlops_core.save_bundle(big, tmp_path / "big")
    assert info.manifest["files"][0]["size"] > 64 * 1024 * 1024
    tracemalloc.start()
    mlops_core.verify_bundle(tmp_path / "big")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # verification streams: far below the 64 MiB payload


# ----------------------------------------------------------------- property tests
safe_segment = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_characters="/\\"),
                       min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
safe_path = st.lists(safe_segment, min_size=1, max_size=4).map("/".join)
sha = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
file_entry = st.fixed_dictionaries({"path": safe_path, "sha256": sha, "size": st.integers(0, 2**40)})
tensor = st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8),
                                "datatype": st.sampled_from(["BOOL", "INT64", "FP32", "FP64", "BYTES", "UINT8"]),
                                "shape": st.lists(st.integers(-1, 64), max_size=3)})
manifests = st.fixed_dictionaries({
    "schema": st.just("mlops-bundle/1"),
    "format": st.sampled_from(["cloudpickle", "onnx"]),
    "files": st.lists(file_entry, min_size=1, max_size=5, unique_by=lambda f: f["path"]).filter(
        lambda fs: not any(a["path"].startswith(b["path"] + "/") for a in fs for b in fs)),
    "signature": st.none() | st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=3),
                                                    "outputs": st.lists(tensor, max_size=2)}),
    "python": st.just({"version": "3.11.7"}),
    "requirements": st.lists(st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8),
                                                    "version": st.text(min_size=1, max_size=8)}), max_size=3),
    "created_at": st.just("2026-01-01T00:00:00+00:00"),
    "created_by": st.just({"name": "mlops-core", "version": "0.1.0"}),
})


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(manifests)
def test_valid_manifests_pass_both_the_loader_and_the_schema(manifest):
    validate_manifest(manifest)
    jsonschema.validate(manifest, SCHEMA)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(manifests, st.sampled_from(["drop_files", "bad_sha", "traversal", "absolute", "negative_size", "schema",
                                   "newline_sha"]))
def test_corrupted_manifests_fail_both(manifest, corruption):
    m = json.loads(json.dumps(manifest))
    if corruption == "drop_files":
        del m["files"]
    elif corruption == "bad_sha":
        m["files"][0]["sha256"] = "XYZ"
    elif corruption == "traversal":
        m["files"][0]["path"] = "a/../../etc/passwd"
    elif corruption == "absolute":
        m["files"][0]["path"] = "/etc/passwd"
    elif corruption == "negative_size":
        m["files"][0]["size"] = -1
    elif corruption == "newline_sha":
        m["files"][0]["sha256"] = "0" * 64 + "\n"
    else:
        m["schema"] = "mlops-bundle/999"
    with pytest.raises(IntegrityError):
        validate_manifest(m)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(m, SCHEMA)


def test_read_manifest_refuses_non_json(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / MANIFEST).write_bytes(b"\xff\xfe not json")
    with pytest.raises(IntegrityError, match="not valid JSON"):
        read_manifest(tmp_path / "b")


def test_example_rows_are_stored_for_warm_ups(tmp_path):
    from mlops_core.bundle import read_example

    model, X = _iris_model()
    info = mlops_core.save_bundle(model, tmp_path / "b", example=X)
    body = read_example(info)
    assert body["inputs"][0]["shape"] == [150, 4] and body["inputs"][0]["name"] == "input-0"
    assert np.allclose(np.asarray(body["inputs"][0]["data"]).reshape(150, 4), X)
    jsonschema.validate(info.manifest, SCHEMA)
    assert "example.json" in {f["path"] for f in info.manifest["files"]}  # hashed like the payload
    assert read_example(mlops_core.save_bundle(model, tmp_path / "c")) is None


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(manifests, st.sampled_from(["twice", "file_and_folder", "shadows_manifest"]))
def test_rules_beyond_the_schema_fail_the_one_validator(manifest, rule):
    """What JSON Schema cannot say (written in the schema's description) is enforced by validate_manifest,
    for loads, pushes and pulls alike (mlops_core.artifacts uses it too)."""
    from mlops_core.artifacts import _payload_entries

    m = json.loads(json.dumps(manifest))
    first = m["files"][0]
    if rule == "twice":
        m["files"].append(dict(first))
    elif rule == "file_and_folder":
        m["files"].append({**first, "path": first["path"] + "/inner"})
    else:
        m["files"].append({**first, "path": "manifest.json"})
    jsonschema.validate(m, SCHEMA)  # the schema alone lets these through
    with pytest.raises(IntegrityError):
        validate_manifest(m)
    with pytest.raises(IntegrityError):
        _payload_entries(json.dumps(m).encode(), "test")
