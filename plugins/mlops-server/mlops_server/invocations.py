"""MLflow's scoring protocol (``POST /invocations``), so MLflow clients keep working.

Accepted JSON bodies (as ``mlflow models serve`` does): ``{"dataframe_split":
{"columns": [...], "data": [[...]]}}``, ``{"dataframe_records": [{...}]}``,
``{"instances": [...]}`` and ``{"inputs": [...] | {...}}``; also ``text/csv``
with a header row. The answer is ``{"predictions": ...}``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from .codec import DTYPES, _as_array
from .models import RequestError, ServedModel

__all__ = ["parse_invocation", "predictions_body"]


def _column(values: list[Any], spec: Any, name: str) -> np.ndarray:
    dtype = DTYPES[spec.datatype] if spec is not None else None
    if dtype is not None and dtype.kind == "O":
        arr = np.empty(len(values), dtype=object)
        arr[:] = [v if isinstance(v, str) else str(v) for v in values]
        return arr
    try:
        arr = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"column {name!r} must hold {spec.datatype if spec else 'numeric'} values") from None
    return arr


def _rows_to_arrays(model: ServedModel, columns: list[str] | None, rows: list[Any]) -> dict[str, np.ndarray]:
    if not isinstance(rows, list):
        raise RequestError("the data must be a list of rows")
    specs = model.inputs
    if model.input_kind == "ndarray" or not specs:
        spec = next(iter(specs.values()), None)
        name = spec.name if spec is not None else "input-0"
        dtype = DTYPES[spec.datatype] if spec is not None else None
        try:
            arr = np.asarray(rows, dtype=dtype)
        except (ValueError, TypeError, OverflowError):
            raise RequestError("the rows must be a rectangular list of "
                               f"{spec.datatype if spec else 'numeric'} values") from None
        if spec is not None and arr.ndim == len(spec.shape) - 1 and arr.ndim >= 1 and arr.shape == tuple(
                d for d in spec.shape[1:]):
            arr = arr[None, ...]  # one row given without its batch dimension
        return {name: arr}
    # dataframe or dict: one column per input
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


def parse_invocation(model: ServedModel, body: bytes, content_type: str) -> dict[str, np.ndarray]:
    """Decode an ``/invocations`` body to input arrays for ``model``."""
    if content_type.startswith("text/csv"):
        try:
            reader = csv.reader(io.StringIO(body.decode("utf-8")))
            table = [row for row in reader if row]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise RequestError(f"cannot read the CSV body: {exc}") from None
        if not table:
            raise RequestError("the CSV body is empty")
        header, rows = table[0], table[1:]
        if model.input_kind == "ndarray" or not model.inputs:
            try:
                return _rows_to_arrays(model, header, [[float(v) for v in r] for r in rows])
            except ValueError:
                raise RequestError("CSV values must be numbers for this model") from None
        return _rows_to_arrays(model, header, rows)
    import orjson

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError("the body must be a JSON object with one of dataframe_split, dataframe_records, "
                           "instances or inputs")
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if not isinstance(split, dict) or "data" not in split:
            raise RequestError("dataframe_split must be {\"columns\": [...], \"data\": [[...]]}")
        cols = split.get("columns")
        return _rows_to_arrays(model, [str(c) for c in cols] if isinstance(cols, list) else None, split["data"])
    if "dataframe_records" in payload:
        records = payload["dataframe_records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise RequestError("dataframe_records must be a list of objects")
        columns = list(records[0]) if records else list(model.inputs)
        if model.input_kind == "ndarray" and model.inputs:
            return _rows_to_arrays(model, None, [[r.get(c) for c in columns] for r in records])
        return _rows_to_arrays(model, columns, [[r.get(c) for c in columns] for r in records])
    for key in ("instances", "inputs"):
        if key in payload:
            data = payload[key]
            if isinstance(data, dict):
                specs = model.inputs
                arrays = {}
                for name, values in data.items():
                    spec = specs.get(name)
                    if specs and spec is None:
                        raise RequestError(f"model {model.name!r} has no input {name!r}; expected {list(specs)}")
                    if not isinstance(values, list):
                        raise RequestError(f"input {name!r} must be a list of values")
                    if spec is None or len(spec.shape) == 1:
                        arrays[name] = _column(values, spec, name)
                        continue
                    try:
                        arrays[name] = np.asarray(values, dtype=DTYPES[spec.datatype])
                    except (ValueError, TypeError, OverflowError):
                        raise RequestError(f"input {name!r} must be a regular list of {spec.datatype} values "
                                           f"of shape {list(spec.shape)}") from None
                return arrays
            if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
                columns = list(data[0])
                if model.input_kind == "ndarray" and model.inputs:
                    return _rows_to_arrays(model, None, [[r.get(c) for c in columns] for r in data])
                return _rows_to_arrays(model, columns, [[r.get(c) for c in columns] for r in data])
            return _rows_to_arrays(model, None, data)
    raise RequestError("the body must have one of dataframe_split, dataframe_records, instances or inputs")


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

