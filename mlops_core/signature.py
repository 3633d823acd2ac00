"""Infer a V2 signature (tensor names, datatypes, shapes) from an example input.

numpy and pandas are never imported here unless the example already is one of
their objects (then they are in ``sys.modules`` anyway), so the core stays light.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any, Mapping

from .entities import Signature, TensorSpec
from .errors import InvalidInputError

__all__ = ["infer_signature", "infer_tensor_specs", "numpy_datatype", "example_request"]

_NUMPY_TO_V2 = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}


def numpy_datatype(dtype: Any) -> str:
    """V2 datatype of a numpy dtype; strings, bytes and objects map to BYTES."""
    name = str(getattr(dtype, "name", dtype))
    if name in _NUMPY_TO_V2:
        return _NUMPY_TO_V2[name]
    if getattr(dtype, "kind", "") in ("U", "S", "O") or name.startswith(("str", "bytes", "object")):
        return "BYTES"
    raise InvalidInputError(f"numpy dtype {name} has no Open Inference Protocol datatype",
                            hint="convert to a bool, integer, float or string dtype")


def _is_dataframe(x: Any) -> bool:
    return "pandas" in sys.modules and isinstance(x, sys.modules["pandas"].DataFrame)


def _is_series(x: Any) -> bool:
    return "pandas" in sys.modules and isinstance(x, sys.modules["pandas"].Series)


def _is_ndarray(x: Any) -> bool:
    return "numpy" in sys.modules and isinstance(x, sys.modules["numpy"].ndarray)


def _variable_batch(shape: tuple[int, ...]) -> tuple[int, ...]:
    # The first dimension is the batch: any number of rows is accepted.
    return (-1, *shape[1:]) if shape else (-1,)


def _python_datatype(values: list[Any]) -> str:
    flat: list[Any] = []
    stack = list(values)
    while stack and len(flat) < 10_000:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            flat.append(v)
    if flat and all(isinstance(v, bool) for v in flat):
        return "BOOL"
    if flat and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in flat):
        return "INT64"
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in flat):
        return "FP64"
    if all(isinstance(v, (str, bytes)) for v in flat):
        return "BYTES"
    raise InvalidInputError("cannot infer a tensor datatype from a list mixing types",
                            hint="pass a numpy array, a DataFrame, or a list of numbers or strings")


def _shape_of(values: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(values, (list, tuple)):
        shape.append(len(values))
        values = values[0] if values else None
    return tuple(shape)


def _tensor(name: str, value: Any) -> TensorSpec:
    if _is_ndarray(value):
        return TensorSpec(name, numpy_datatype(value.dtype), _variable_batch(tuple(value.shape)))
    if _is_series(value):
        return TensorSpec(name, numpy_datatype(value.dtype), (-1,))
    if isinstance(value, (list, tuple)):
        return TensorSpec(name, _python_datatype(list(value)), _variable_batch(_shape_of(value)))
    if isinstance(value, (numbers.Number, str, bytes)):
        return TensorSpec(name, _python_datatype([value]), (-1,))
    raise InvalidInputError(f"cannot infer a signature from {type(value).__name__}",
                            hint="pass an example that is a numpy array, a pandas DataFrame, a dict of arrays or a list")


def infer_tensor_specs(value: Any, prefix: str) -> tuple[list[TensorSpec], str]:
    """Tensor specs for a value and the input kind a server must rebuild it as."""
    if _is_dataframe(value):
        return [TensorSpec(str(col), numpy_datatype(value[col].dtype), (-1,)) for col in value.columns], "dataframe"
    if isinstance(value, Mapping):
        return [_tensor(str(k), v) for k, v in value.items()], "dict"
    if isinstance(value, tuple) and value and not isinstance(value[0], numbers.Number):
        return [_tensor(f"{prefix}-{i}", v) for i, v in enumerate(value)], "dict"
    return [_tensor(f"{prefix}-0", value)], "ndarray"


def infer_signature(model: Any, example: Any) -> Signature:
    """Signature of ``model`` from one example input: inputs from the example, outputs from predict(example)."""
    inputs, kind = infer_tensor_specs(example, "input")
    predict = getattr(model, "predict", None) or model
    try:
        output = predict(example)
    except Exception as exc:
        raise InvalidInputError(
            f"model.predict(example) raised {type(exc).__name__}: {exc}",
            hint="pass an example input the model accepts, or pass signature= explicitly",
        ) from exc
    outputs, _ = infer_tensor_specs(output, "output")
    return Signature(inputs=inputs, outputs=outputs, input_kind=kind)


def _tensor_data(value: Any, rows: int) -> tuple[list[int], list[Any]]:
    if _is_ndarray(value) or _is_series(value):
        arr = value[:rows]
        data = arr.tolist() if _is_series(value) else arr.reshape(-1).tolist()
        return list(getattr(arr, "shape", (len(data),))), [d.decode() if isinstance(d, bytes) else d for d in data]
    if isinstance(value, (list, tuple)):
        value = list(value)[:rows]
        shape = list(_shape_of(value))
        flat: list[Any] = []

        def walk(v: Any) -> None:
            if isinstance(v, (list, tuple)):
                for x in v:
                    walk(x)
            else:
                flat.append(v)

        walk(value)
        return shape, flat
    return [1], [value]


def example_request(example: Any, signature: Signature, rows: int = 1000) -> dict[str, Any] | None:
    """A V2 inference request body with the first ``rows`` rows of ``example``.

    Stored in bundles so servers can warm a model up with real data (zeros are not
    valid input for every model, e.g. a one-hot encoder with unknown categories
    refused), and so a drift monitor can profile it as the version's reference when
    it is large enough. None when the example cannot be expressed as V2 tensors.
    """
    try:
        if _is_dataframe(example):
            values = {str(c): example[c] for c in example.columns}
        elif isinstance(example, Mapping):
            values = {str(k): v for k, v in example.items()}
        else:
            values = {signature.inputs[0].name: example} if len(signature.inputs) == 1 else None
        if values is None:
            return None
        inputs = []
        for spec in signature.inputs:
            shape, data = _tensor_data(values[spec.name], rows)
            inputs.append({"name": spec.name, "datatype": spec.datatype, "shape": shape, "data": data})
        return {"inputs": inputs}
    except Exception:  # an example we cannot encode is simply not stored
        return None
