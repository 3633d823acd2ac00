"""Open Inference Protocol (V2) tensors <-> numpy arrays, JSON and binary.

Decoding is strict: a tensor whose data does not fit its shape, whose values do
not fit its datatype, or whose binary part has the wrong size raises
:class:`TensorError`, which the server answers with 400. Nothing here trusts the
client: sizes are checked before any allocation that depends on them.

The binary tensor data extension (Triton, KServe) is supported both ways: an
input with ``parameters.binary_data_size`` takes its bytes from the part of the
body after the JSON header, little-endian, row-major; BYTES elements are each
prefixed by a 4-byte little-endian length.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Iterable, Mapping

import numpy as np
import orjson

__all__ = [
    "TensorError",
    "DTYPES",
    "datatype_of",
    "decode_tensor",
    "encode_tensor",
    "split_binary_body",
    "bytes_elements",
    "to_output_arrays",
]

#: V2 datatype -> numpy dtype (little-endian, as the binary extension mandates).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_NUMPY = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64",
}
# Which numpy kinds a JSON list may arrive as, per datatype family (JSON ints are fine for floats).
_JSON_KINDS = {"b": "b", "u": "iub", "i": "iub", "f": "iubf"}
#: Refuse tensors larger than this many elements before allocating anything.
MAX_ELEMENTS = 1 << 28
_LEN = struct.Struct("<I")


class TensorError(ValueError):
    """A tensor in a request is malformed; the message says what was expected."""


_BY_DTYPE = {np.dtype(k): v for k, v in _BY_NUMPY.items()}


def datatype_of(dtype: np.dtype) -> str:
    """V2 datatype of a numpy dtype (strings, bytes and objects are BYTES)."""
    name = _BY_DTYPE.get(dtype)  # hashing a dtype is much cheaper than dtype.name
    if name is not None:
        return name
    name = _BY_NUMPY.get(dtype.name)
    if name is not None:
        return name
    if dtype.kind in "USO":
        return "BYTES"
    raise TensorError(f"numpy dtype {dtype} has no V2 datatype")


def _shape(raw: Any, name: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(type(d) is int and d >= 0 for d in raw):
        raise TensorError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {raw!r}"[:300])
    if len(raw) > 32:
        raise TensorError(f"input {name!r}: shape has {len(raw)} dimensions (at most 32)")
    return tuple(raw)


def _count(shape: tuple[int, ...], name: str) -> int:
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise TensorError(f"input {name!r}: shape {list(shape)} has {n} elements (at most {MAX_ELEMENTS})")
    return n


def bytes_elements(buf: memoryview, count: int, name: str) -> list[Any]:
    """Split length-prefixed BYTES elements; valid UTF-8 becomes ``str`` (as from JSON), other data stays bytes."""
    out: list[Any] = []
    pos, end = 0, len(buf)
    if count * 4 > end:  # every element needs its 4-byte length: refuse before looping
        raise TensorError(f"input {name!r}: {end} binary bytes cannot hold {count} BYTES elements")
    for _ in range(count):
        if pos + 4 > end:
            raise TensorError(f"input {name!r}: binary BYTES data ends before element {len(out)} of {count}")
        (size,) = _LEN.unpack_from(buf, pos)
        pos += 4
        if pos + size > end:
            raise TensorError(f"input {name!r}: BYTES element {len(out)} of {size} bytes overruns the binary data")
        raw = bytes(buf[pos:pos + size])
        pos += size
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(raw)
    if pos != end:
        raise TensorError(f"input {name!r}: {end - pos} bytes left over after {count} BYTES elements")
    return out


def _flatten_strings(data: Any, name: str, count: int) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 33:
                    raise TensorError(f"input {name!r}: data is nested too deeply")
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise TensorError(f"input {name!r}: BYTES data must be strings, got {type(item).__name__}")
            flat.append(item)
            if len(flat) > count:
                raise TensorError(f"input {name!r}: data has more than the {count} elements its shape says")
        else:
            stack.pop()
    return flat


def _object_array(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr.reshape(shape)


def decode_tensor(tensor: Any, binary: memoryview | None = None) -> tuple[str, str, np.ndarray]:
    """Decode one request input to ``(name, datatype, array)``.

    ``binary`` is this input's slice of the binary part, when it declared
    ``parameters.binary_data_size``; otherwise ``data`` is read from the JSON.
    """
    if not isinstance(tensor, dict):
        raise TensorError("every input must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise TensorError("every input needs a non-empty string 'name'")
    datatype = tensor.get("datatype")
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise TensorError(f"input {name!r}: unknown datatype {datatype!r}; expected one of {', '.join(DTYPES)}"[:300])
    shape = _shape(tensor.get("shape"), name)
    count = _count(shape, name)

    if binary is not None:
        if datatype == "BYTES":
            return name, datatype, _object_array(bytes_elements(binary, count, name), shape)
        expected = count * dtype.itemsize
        if len(binary) != expected:
            raise TensorError(f"input {name!r}: binary data has {len(binary)} bytes, "
                              f"shape {list(shape)} of {datatype} needs {expected}")
        # Copy: the model may write into its input, and the request body is read-only.
        arr = np.frombuffer(binary, dtype=dtype).reshape(shape).copy()
        if datatype == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
            raise TensorError(f"input {name!r}: BOOL binary data must be bytes 0 or 1")
        return name, datatype, arr

    if "data" not in tensor:
        raise TensorError(f"input {name!r} has no 'data' (nor parameters.binary_data_size)")
    data = tensor["data"]
    if not isinstance(data, list):
        data = [data]  # a bare scalar for a one-element tensor
    if datatype == "BYTES":
        return name, datatype, _object_array(_check_count(_flatten_strings(data, name, count), count, shape, name), shape)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise TensorError(f"input {name!r}: data is not a regular (rectangular) list of numbers") from None
    kind = arr.dtype.kind
    if dtype.kind in "iu" and kind in "fO" and arr.size:
        # numpy turns a mix of int64 and uint64-range ints into floats (or objects): re-read exactly.
        arr, kind = _exact_ints(data, dtype, name), dtype.kind
    if arr.size and kind not in _JSON_KINDS[dtype.kind]:
        what = "booleans" if dtype.kind == "b" else ("integers" if dtype.kind in "iu" else "numbers")
        raise TensorError(f"input {name!r}: {datatype} data must be {what}, got {_describe(arr)}")
    if arr.size != count:
        raise TensorError(f"input {name!r}: data has {arr.size} elements, shape {list(shape)} needs {count}")
    if dtype.kind in "iu" and arr.size and kind in "iu":
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise TensorError(f"input {name!r}: values out of range for {datatype} ({info.min}..{info.max})")
    if dtype.kind == "f" and arr.size and kind == "f" and dtype.itemsize < 8:
        finite = np.isfinite(arr)
        with np.errstate(over="ignore"):
            cast = arr.astype(dtype)
        if not np.array_equal(np.isfinite(cast), finite):
            raise TensorError(f"input {name!r}: values out of range for {datatype}")
        return name, datatype, cast.reshape(shape)
    return name, datatype, arr.astype(dtype, copy=False).reshape(shape)


def _exact_ints(data: list, dtype: np.dtype, name: str) -> np.ndarray:
    stack = [data]
    while stack:
        for item in stack.pop():
            if isinstance(item, list):
                stack.append(item)
            elif type(item) is not int:
                raise TensorError(f"input {name!r}: {datatype_of(dtype)} data must be integers, "
                                  f"got {type(item).__name__}")
    try:
        return np.asarray(data, dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        info = np.iinfo(dtype)
        raise TensorError(f"input {name!r}: values out of range for {datatype_of(dtype)} "
                          f"({info.min}..{info.max}), or not a regular list") from None


def _check_count(items: list[Any], count: int, shape: tuple[int, ...], name: str) -> list[Any]:
    if len(items) != count:
        raise TensorError(f"input {name!r}: data has {len(items)} elements, shape {list(shape)} needs {count}")
    return items


def _describe(arr: np.ndarray) -> str:
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "strings"}.get(
        arr.dtype.kind, "mixed values")


def split_binary_body(body: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """Split a request with the binary extension into (JSON header, binary part)."""
    try:
        n = int(header_length)
    except ValueError:
        raise TensorError(f"Inference-Header-Content-Length must be an integer, got {header_length!r}"[:200]) from None
    if n < 0 or n > len(body):
        raise TensorError(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


# ---------------------------------------------------------------- outputs
def to_output_arrays(result: Any, names: Iterable[str]) -> list[tuple[str, np.ndarray]]:
    """Turn whatever ``predict`` returned into named arrays.

    A dict gives one output per key; a tuple or list of arrays gives one output
    each; a DataFrame gives one output per column; anything else is one output.
    ``names`` are the signature's output names, used in order.
    """
    names = list(names)

    def name(i: int) -> str:
        return names[i] if i < len(names) else f"output-{i}"

    if isinstance(result, Mapping):
        return [(str(k), _as_array(v)) for k, v in result.items()]
    if type(result).__name__ == "DataFrame" and hasattr(result, "columns"):
        if len(names) == len(result.columns) and len(names) > 1:
            return [(str(c), _as_array(result[c])) for c in result.columns]
        return [(name(0), _as_array(result))]
    if isinstance(result, tuple) and result and all(hasattr(r, "__len__") for r in result):
        return [(name(i), _as_array(r)) for i, r in enumerate(result)]
    return [(name(0), _as_array(result))]


def _as_array(value: Any) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype.kind in "biuf" and value.dtype.isnative:
        return value  # the common case, checked first
    if isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "to_numpy"):
        arr = value.to_numpy()
    else:
        arr = np.asarray(value)
    if arr.dtype.kind == "O" and arr.size:
        # A list of Python numbers returned as objects: give it its numeric dtype if it has one.
        sample = arr.flat[0]
        if not isinstance(sample, (str, bytes)):
            try:
                arr = np.asarray(arr.tolist())
            except (ValueError, TypeError):
                pass
    if arr.dtype.kind == "U" or arr.dtype.kind == "S":
        arr = arr.astype(object)
    if arr.dtype.kind not in "biufO":
        raise TensorError(f"model returned an array of dtype {arr.dtype}, which has no V2 datatype")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def _bytes_of(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    return str(item).encode("utf-8")


def encode_tensor(name: str, arr: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """(JSON tensor object, binary bytes or None) for one output array."""
    datatype = datatype_of(arr.dtype)
    shape = list(arr.shape)
    if binary:
        if datatype == "BYTES":
            parts = []
            for item in arr.ravel():
                raw = _bytes_of(item)
                parts.append(_LEN.pack(len(raw)))
                parts.append(raw)
            payload = b"".join(parts)
        else:
            payload = np.ascontiguousarray(arr).tobytes()
        return {"name": name, "datatype": datatype, "shape": shape,
                "parameters": {"binary_data_size": len(payload)}}, payload
    if datatype == "BYTES":
        data: Any = [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in arr.ravel()]
    elif datatype == "FP16":
        data = arr.astype(np.float32).ravel()  # orjson writes float32 faithfully; float16 widens exactly
    else:
        data = np.ascontiguousarray(arr).ravel()
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}, None


def dumps(obj: Any) -> bytes:
    """JSON bytes; numpy arrays are written natively (non-finite floats become null)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
