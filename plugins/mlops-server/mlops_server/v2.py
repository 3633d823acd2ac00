"""The V2 inference request and response bodies: JSON, the binary tensor extension, and large JSON.

:func:`decode_request` turns a request body into the request object and ``name ->
array`` inputs checked against a model; :func:`encode_response` builds the answer,
with the outputs the request asked for, each as JSON or binary data. Large JSON
bodies have their long number arrays read straight into numpy (:mod:`.bigjson`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from . import bigjson, codec
from .codec import TensorError
from .models import RequestError, ServedModel
from .responses import HttpError

__all__ = ["decode_request", "encode_response", "LIFT_FROM_BYTES"]

#: JSON bodies at least this large have their long number arrays lifted out before parsing.
LIFT_FROM_BYTES = 1 << 20


def decode_request(model: ServedModel, body: Any, header_length: bytes | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(request object, inputs checked against ``model``) of a V2 infer body; HttpError 400 if malformed."""
    decoded = None
    request = None
    if header_length is None and len(body) >= LIFT_FROM_BYTES:
        lifted = bigjson.lift_numeric_arrays(body)
        if lifted is not None:
            request, decoded = _decode_lifted(lifted)
    if decoded is None:
        request, binary = _parse_request(body, header_length)
        decoded = _decode_inputs(request, binary)
    try:
        return request, model.check_inputs(decoded)  # type: ignore[return-value]
    except RequestError as exc:
        raise HttpError(400, str(exc)) from None


# ------------------------------------------------------------------ plain JSON and binary
def _parse_request(body: Any, header_length: bytes | None) -> tuple[dict, memoryview | None]:
    binary = None
    try:
        if header_length is not None:
            head, binary = codec.split_binary_body(body, header_length.decode("latin-1"))
        else:
            head = body
        request = orjson.loads(head)
    except TensorError as exc:
        raise HttpError(400, str(exc)) from None
    except orjson.JSONDecodeError as exc:
        hint = ""
        if header_length is None and "after document" in str(exc):
            hint = " (bytes after the JSON need the Inference-Header-Content-Length header of the binary extension)"
        raise HttpError(400, f"the request body is not valid JSON: {exc}"[:500] + hint) from None
    _check_envelope(request)
    return request, binary


def _check_envelope(request: Any) -> None:
    if not isinstance(request, dict):
        raise HttpError(400, "the request body must be a JSON object with an 'inputs' list")
    if "id" in request and not isinstance(request["id"], str):
        raise HttpError(400, "the request 'id' must be a string")
    if "parameters" in request and not isinstance(request["parameters"], dict):
        raise HttpError(400, "the request 'parameters' must be an object")


def _inputs_of(request: dict) -> list:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise HttpError(400, "the request needs a non-empty 'inputs' list")
    return inputs


def _decode_inputs(request: dict, binary: memoryview | None) -> list[tuple[str, str, np.ndarray]]:
    decoded = []
    offset = 0
    try:
        for tensor in _inputs_of(request):
            size = _binary_size(tensor)
            if size is not None:
                if binary is None:
                    raise TensorError("an input declares binary_data_size but the request has no "
                                      "Inference-Header-Content-Length header")
                if type(size) is not int or size < 0 or offset + size > len(binary):
                    raise TensorError(f"binary_data_size {size!r} does not fit the {len(binary) - offset} "
                                      "binary bytes left"[:300])
                decoded.append(codec.decode_tensor(tensor, binary[offset:offset + size]))
                offset += size
            else:
                decoded.append(codec.decode_tensor(tensor))
    except TensorError as exc:
        raise HttpError(400, str(exc)) from None
    if binary is not None and offset != len(binary):
        raise HttpError(400, f"{len(binary) - offset} binary bytes after the JSON are not claimed by any input")
    return decoded


def _binary_size(tensor: Any) -> Any:
    params = tensor.get("parameters") if isinstance(tensor, dict) else None
    if params is not None and not isinstance(params, dict):
        raise TensorError("an input's 'parameters' must be an object")
    return params.get("binary_data_size") if params else None


# ------------------------------------------------------------------ large JSON
def _decode_lifted(lifted: bigjson.Lifted) -> tuple[Any, Any]:
    """Decode with the long number arrays read straight into numpy; (None, None) to use the plain parse.

    Any doubt (a skeleton that is not JSON, a placeholder anywhere but an input's
    ``data``, a datatype or value kind the fast reader does not handle) falls back to
    the plain parse, which gives exactly the usual answer and error messages.
    """
    try:
        request = orjson.loads(lifted.skeleton)
    except orjson.JSONDecodeError:
        return None, None
    try:
        _check_envelope(request)
        decoded = []
        used = set()
        for tensor in _inputs_of(request):
            span = lifted.span_of(tensor.get("data")) if isinstance(tensor, dict) else None
            if span is None:
                if _binary_size(tensor) is not None:
                    return None, None
                decoded.append(codec.decode_tensor(tensor))
                continue
            if span in used:
                return None, None
            used.add(span)
            decoded.append(_lifted_tensor(lifted, tensor, span))
    except (HttpError, ValueError):  # NotLiftable, TensorError, data that does not fit its shape...
        return None, None  # the plain parse says what is wrong, with its usual message
    if len(used) != len(lifted.spans):
        return None, None  # a long number array outside an input's data (parameters...): parse it all
    return request, decoded


def _lifted_tensor(lifted: bigjson.Lifted, tensor: dict, span: tuple[int, int]) -> tuple[str, str, np.ndarray]:
    name = tensor.get("name")
    datatype = tensor.get("datatype")
    if not isinstance(name, str) or not name or datatype not in codec.DTYPES or datatype in ("BOOL", "BYTES"):
        raise bigjson.NotLiftable("not a numeric tensor")
    shape = codec._shape(tensor.get("shape"), name)
    codec._count(shape, name)
    return name, datatype, bigjson.parse_numbers(lifted.body, span, codec.DTYPES[datatype], shape)


# ------------------------------------------------------------------ responses
def encode_response(model: ServedModel, request: dict, outputs: list) -> tuple[bytes, bool, int]:
    """(body, has binary parts, JSON header length) answering ``request`` with ``outputs``."""
    outputs, binary_names = _select_outputs(model, request, outputs)
    tensors = []
    chunks = []
    try:
        for name, arr in outputs:
            tensor, raw = codec.encode_tensor(name, arr, name in binary_names)
            tensors.append(tensor)
            if raw is not None:
                chunks.append(raw)
    except TensorError as exc:
        raise HttpError(500, f"model {model.name!r} returned an output that cannot be encoded: {exc}") from None
    response: dict[str, Any] = {"model_name": model.name}
    if model.version:
        response["model_version"] = model.version
    if "id" in request:
        response["id"] = request["id"]
    response["outputs"] = tensors
    head = codec.dumps(response)
    if chunks:
        return b"".join([head, *chunks]), True, len(head)
    return head, False, len(head)


def _select_outputs(model: ServedModel, request: dict, outputs: list) -> tuple[list, set[str]]:
    requested = request.get("outputs")
    params = request.get("parameters") or {}
    all_binary = params.get("binary_data_output") is True
    if requested is None:
        return outputs, ({name for name, _ in outputs} if all_binary else set())
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise HttpError(400, "'outputs' must be a list of objects with a 'name'")
    have = {name: arr for name, arr in outputs}
    chosen = []
    binary_names: set[str] = set()
    for o in requested:
        name = o["name"]
        if name not in have:
            raise HttpError(400, f"model {model.name!r} has no output {name!r}; its outputs are "
                                 f"{', '.join(have)}"[:500])
        p = o.get("parameters")
        flag = p.get("binary_data") if isinstance(p, dict) else None
        if flag is True or (flag is not False and all_binary):
            binary_names.add(name)
        chosen.append((name, have[name]))
    return chosen, binary_names
