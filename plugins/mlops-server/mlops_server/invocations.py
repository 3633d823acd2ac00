"""MLflow's scoring protocol (``POST /invocations``), so MLflow clients keep working.

Accepted bodies, as ``mlflow models serve`` accepts them (``mlflow.pyfunc.scoring_server``,
``infer_and_parse_data`` and ``parse_tf_serving_input``):

==========================================================  =====================================
``{"dataframe_split": {"columns": [...], "data": [[...]]}}``  a table, one row per list
``{"dataframe_records": [{"col": v, ...}, ...]}``            a table, one object per row
``{"instances": [[...], ...]}``                              one tensor (rows)
``{"instances": [{"name": v, ...}, ...]}``                   named tensors, one object per instance:
                                                             each name's values are stacked
``{"inputs": [[...], ...]}``                                 one tensor
``{"inputs": {"name": [...], ...}}``                         named tensors, already stacked
``text/csv`` with a header row                               a table
==========================================================  =====================================

Exactly one of the four keys must be present (``params`` may sit next to it and is
ignored; ``signature_name`` is refused, as MLflow does). The answer is
``{"predictions": ...}``. Each form has its own small parser below; they all end in
``name -> array``, which the server then checks against the model's signature.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable

import numpy as np

from .codec import DTYPES, _as_array
from .models import RequestError, ServedModel

__all__ = ["parse_invocation", "predictions_body", "FORMATS"]

#: The body keys that select a form (MLflow's ``SUPPORTED_FORMATS``).
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

Arrays = dict[str, np.ndarray]


def parse_invocation(model: ServedModel, body: bytes, content_type: str) -> Arrays:
    """Decode an ``/invocations`` body to input arrays for ``model``."""
    if content_type.startswith("text/csv"):
        return _parse_csv(model, body)
    payload = _json_object(body)
    form = _pick_form(payload)
    return _PARSERS[form](model, payload[form])


# ---------------------------------------------------------------- envelope
def _json_object(body: bytes) -> dict[str, Any]:
    import orjson

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(f"the body must be a JSON object with one of {', '.join(FORMATS)}")
    return payload


def _pick_form(payload: dict[str, Any]) -> str:
    if "signature_name" in payload:
        raise RequestError('the "signature_name" field is not supported (MLflow does not support it either)')
    forms = [key for key in FORMATS if key in payload]
    if len(forms) != 1:
        got = f"got {', '.join(forms)}" if forms else f"got the fields {sorted(payload)[:10]}"
        raise RequestError(f"the body must have exactly one of {', '.join(FORMATS)} ({got})")
    return forms[0]


# ---------------------------------------------------------------- tables
def _parse_csv(model: ServedModel, body: bytes) -> Arrays:
    try:
        table = [row for row in csv.reader(io.StringIO(body.decode("utf-8"))) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestError(f"cannot read the CSV body: {exc}") from None
    if not table:
        raise RequestError("the CSV body is empty")
    header, rows = table[0], table[1:]
    if _is_tensor_model(model):
        try:
            rows = [[float(v) for v in r] for r in rows]
        except ValueError:
            raise RequestError("CSV values must be numbers for this model") from None
    return _table(model, header, rows)


def _dataframe_split(model: ServedModel, split: Any) -> Arrays:
    if not isinstance(split, dict) or "data" not in split:
        raise RequestError('dataframe_split must be {"columns": [...], "data": [[...]]}')
    cols = split.get("columns")
    return _table(model, [str(c) for c in cols] if isinstance(cols, list) else None, split["data"])


def _dataframe_records(model: ServedModel, records: Any) -> Arrays:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise RequestError("dataframe_records must be a list of objects")
    columns = list(records[0]) if records else list(model.inputs)
    return _table(model, columns, [[r.get(c) for c in columns] for r in records])


def _table(model: ServedModel, columns: list[str] | None, rows: Any) -> Arrays:
    """A table (header + rows): one tensor of the rows, or one column per named input."""
    if not isinstance(rows, list):
        raise RequestError("the data must be a list of rows")
    if _is_tensor_model(model):
        return _one_tensor(model, rows)  # the column names of a table for a tensor model are only labels
    specs = model.inputs
    if columns is None:
        raise RequestError(f"model {model.name!r} takes named columns {list(specs)}; "
                           "send dataframe_split with 'columns' or dataframe_records")
    if not all(isinstance(r, list) and len(r) == len(columns) for r in rows):
        raise RequestError(f"every row must have {len(columns)} values, one per column")
    missing = [n for n in specs if n not in columns]
    if missing:
        raise RequestError(f"missing column(s) {missing}; model {model.name!r} expects {list(specs)}")
    index = {c: i for i, c in enumerate(columns)}
    return {n: _column([r[index[n]] for r in rows], specs[n], n) for n in specs}


# ---------------------------------------------------------------- tensors (TF serving forms)
def _instances(model: ServedModel, data: Any) -> Arrays:
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return _named(model, _stack_instances(data))
    return _tensor_or_named(model, data)


def _inputs(model: ServedModel, data: Any) -> Arrays:
    return _tensor_or_named(model, data)


def _tensor_or_named(model: ServedModel, data: Any) -> Arrays:
    if isinstance(data, dict):
        return _named(model, data)
    if _is_tensor_model(model):
        return _one_tensor(model, data)
    if len(model.inputs) == 1:  # one named column: a bare list is that column (as MLflow does)
        return _named(model, {next(iter(model.inputs)): data})
    return _table(model, None, data)


def _stack_instances(instances: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """``[{"a": x0, "b": y0}, {"a": x1, "b": y1}]`` -> ``{"a": [x0, x1], "b": [y0, y1]}``."""
    names = list(instances[0])
    for i, item in enumerate(instances):
        if set(item) != set(names):
            raise RequestError(f"instance {i} has the fields {sorted(item)}, instance 0 has {sorted(names)}; "
                               "every instance needs a value for every input")
    return {name: [item[name] for item in instances] for name in names}


def _named(model: ServedModel, data: dict[str, Any]) -> Arrays:
    specs = model.inputs
    arrays = {}
    for name, values in data.items():
        spec = specs.get(name)
        if specs and spec is None:
            raise RequestError(f"model {model.name!r} has no input {name!r}; expected {list(specs)}")
        if not isinstance(values, list):
            values = [values]  # one value for a one-row column
        if spec is None or len(spec.shape) == 1:
            arrays[name] = _column(values, spec, name)
        else:
            arrays[name] = _array(values, spec, f"input {name!r}")
    return arrays


def _one_tensor(model: ServedModel, rows: Any) -> Arrays:
    spec = next(iter(model.inputs.values()), None)
    name = spec.name if spec is not None else "input-0"
    arr = _array(rows, spec, "the rows")
    if spec is not None and arr.ndim >= 1 and arr.shape == tuple(spec.shape[1:]):
        arr = arr[None, ...]  # one row given without its batch dimension
    return {name: arr}


# ---------------------------------------------------------------- values
def _is_tensor_model(model: ServedModel) -> bool:
    return model.input_kind == "ndarray" or not model.inputs


def _array(values: Any, spec: Any, what: str) -> np.ndarray:
    dtype = DTYPES[spec.datatype] if spec is not None else None
    try:
        return np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        expected = spec.datatype if spec is not None else "numeric"
        shape = f" of shape {list(spec.shape)}" if spec is not None else ""
        raise RequestError(f"{what} must be a rectangular list of {expected} values{shape}") from None


def _column(values: list[Any], spec: Any, name: str) -> np.ndarray:
    dtype = DTYPES[spec.datatype] if spec is not None else None
    if dtype is not None and dtype.kind == "O":
        arr = np.empty(len(values), dtype=object)
        arr[:] = [v if isinstance(v, str) else str(v) for v in values]
        return arr
    try:
        return np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"column {name!r} must hold {spec.datatype if spec else 'numeric'} values") from None


_PARSERS: dict[str, Callable[[ServedModel, Any], Arrays]] = {
    "dataframe_split": _dataframe_split,
    "dataframe_records": _dataframe_records,
    "instances": _instances,
    "inputs": _inputs,
}


# ---------------------------------------------------------------- answers
def predictions_body(outputs: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    if len(outputs) == 1:
        return {"predictions": _jsonable(outputs[0][1])}
    return {"predictions": {name: _jsonable(arr) for name, arr in outputs}}


def _jsonable(arr: np.ndarray) -> Any:
    arr = _as_array(arr)
    if arr.dtype.kind == "O":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in arr.tolist()]
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return np.ascontiguousarray(arr)
