"""The tensor codec on its own (fast, no server process)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mlops_server.batching import AdaptiveBatcher
from mlops_server.codec import TensorError, bytes_elements, decode_tensor, encode_tensor, to_output_arrays


def test_json_and_binary_decoding_agree():
    arr = np.arange(12, dtype="<i4").reshape(3, 4)
    _, _, from_json = decode_tensor({"name": "x", "datatype": "INT32", "shape": [3, 4], "data": arr.tolist()})
    _, _, from_bin = decode_tensor({"name": "x", "datatype": "INT32", "shape": [3, 4]}, memoryview(arr.tobytes()))
    assert from_json.dtype == from_bin.dtype == np.int32
    assert np.array_equal(from_json, arr) and np.array_equal(from_bin, arr)
    from_bin[0, 0] = 99  # the model may write into its input
    assert from_bin.flags.writeable


def test_bytes_elements_and_encoding_round_trip():
    items = ["a", "", "ünï", b"\xff\x00"]
    raw = b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() if isinstance(s, str) else s for s in items))
    assert bytes_elements(memoryview(raw), 4, "x") == items
    arr = np.array(items, dtype=object)
    tensor, payload = encode_tensor("y", arr, binary=True)
    assert payload == raw and tensor["parameters"]["binary_data_size"] == len(raw)
    with pytest.raises(TensorError, match="left over"):
        bytes_elements(memoryview(raw + b"x"), 4, "x")
    with pytest.raises(TensorError, match="overruns"):
        bytes_elements(memoryview(raw[:-1]), 4, "x")


def test_fp16_is_written_exactly_in_json():
    tensor, _ = encode_tensor("h", np.array([0.1, 65504], dtype=np.float16), binary=False)
    assert tensor["datatype"] == "FP16"
    assert np.array_equal(np.float16(tensor["data"]), np.array([0.1, 65504], dtype=np.float16))


def test_output_shapes_of_predict_results():
    named = to_output_arrays({"a": [1, 2], "b": np.zeros((2, 2))}, [])
    assert [(n, a.shape) for n, a in named] == [("a", (2,)), ("b", (2, 2))]
    assert to_output_arrays([1.5, 2.5], ["label"])[0][0] == "label"
    assert to_output_arrays((np.ones(2), np.zeros(2)), [])[1][0] == "output-1"
    assert to_output_arrays(np.array(["x", "y"]), [])[0][1].dtype == object


def test_huge_shapes_are_refused_before_allocating():
    with pytest.raises(TensorError, match="at most"):
        decode_tensor({"name": "x", "datatype": "FP64", "shape": [1 << 20, 1 << 20], "data": []})


class _RowModel:
    name = "row"

    def runs_inline(self, rows):
        return True

    def predict(self, arrays):
        return [("out", arrays["x"].sum(axis=1))]


class _PooledModel(_RowModel):
    def predict(self, arrays):
        return [("out", np.array([arrays["x"].sum()]))]  # one value per call, not per row


@pytest.mark.parametrize("model", [_RowModel(), _PooledModel()], ids=["row-wise", "not-row-wise"])
def test_batcher_splits_results_back_per_request(model):
    import asyncio

    async def run():
        batcher = AdaptiveBatcher(model, max_batch_size=8, max_wait_s=0.0)
        inputs = [np.full((n, 3), float(i)) for i, n in enumerate([1, 2, 3, 1])]
        futures = [batcher.submit({"x": x}, len(x)) for x in inputs]
        results = await asyncio.gather(*futures)
        return inputs, results, batcher

    inputs, results, batcher = asyncio.run(run())
    for x, result in zip(inputs, results):
        assert np.array_equal(result[0][1], model.predict({"x": x})[0][1])
    assert batcher.batches == 1 and batcher.batched_requests == 4
    assert batcher.fallbacks == (1 if isinstance(model, _PooledModel) else 0)
