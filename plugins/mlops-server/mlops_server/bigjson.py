"""Large JSON requests decoded straight into numpy, without a Python object per number.

``orjson.loads`` of a 62 MiB V2 request makes a Python float (24 bytes) and a list slot
(8 bytes) per number, and ``np.asarray`` then copies them: the server peaked at 20x the
body size. For a large body, this module *lifts* each long run of numbers out of the
JSON text before parsing it:

1. :func:`lift_numeric_arrays` finds every array literal of at least ``min_bytes`` that
   holds only numbers, commas, brackets and whitespace, and replaces it by a short
   placeholder string; what is left (the "skeleton": names, shapes, datatypes,
   parameters) is small and parsed by orjson as usual. A run that was inside a JSON
   string leaves a skeleton that is not valid JSON, so the caller falls back to the
   plain parse: nothing is ever read differently from ``orjson.loads``.
2. :func:`parse_numbers` reads one lifted array into a preallocated array of the
   tensor's dtype, a few MiB at a time (each piece is checked against JSON's number
   grammar, then converted by numpy's C parser).

Peak memory for the body is then about the body itself plus the decoded tensor, plus
one piece. The nesting of a lifted array is not checked, only its element count
against the declared shape (V2 allows flat or nested data in row-major order).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["MIN_LIFT_BYTES", "PLACEHOLDER", "Lifted", "lift_numeric_arrays", "parse_numbers"]

#: Only number arrays at least this long are lifted (shorter ones cost little as Python objects).
MIN_LIFT_BYTES = 64 << 10
#: The placeholder strings start with this (a NUL cannot appear unescaped in a client's JSON string).
PLACEHOLDER = "\x00mlops-lifted:"
_PIECE = 512 << 10  # small enough that one piece holds the GIL only briefly
_RUN_CHARS = rb"[0-9eE.+\-, \t\n\r\[\]]"  # what a JSON array of numbers is made of (JSON whitespace only)
_RUN = re.compile(rb"\[%s{%d,}" % (_RUN_CHARS, MIN_LIFT_BYTES - 1))
_TRAILER = b" \t\n\r,"


class Lifted:
    """A body with its long number arrays cut out: the skeleton to parse, and where each array was."""

    def __init__(self, body: Any, skeleton: bytes, spans: list[tuple[int, int]]) -> None:
        self.body = body
        self.skeleton = skeleton
        self.spans = spans

    def span_of(self, value: Any) -> tuple[int, int] | None:
        """The (start, end) of the lifted array a placeholder stands for, or None for any other value."""
        if isinstance(value, str) and value.startswith(PLACEHOLDER):
            try:
                return self.spans[int(value[len(PLACEHOLDER):])]
            except (ValueError, IndexError):
                return None
        return None


def _array_end(body: Any, start: int, run_end: int) -> int | None:
    """End of the array that opens at ``start``, if the run is one array (with brackets in balance)."""
    end = run_end
    while end > start and body[end - 1] in _TRAILER:
        end -= 1
    if body[end - 1] != 0x5D or body.count(b"[", start, end) != body.count(b"]", start, end):
        return None  # e.g. the tail of an enclosing array: leave it to the plain parse
    return end


def lift_numeric_arrays(body: Any, min_bytes: int = MIN_LIFT_BYTES) -> Lifted | None:
    """Cut every number array of ``min_bytes`` or more out of ``body``; None if there is none."""
    pattern = _RUN if min_bytes == MIN_LIFT_BYTES else re.compile(rb"\[%s{%d,}" % (_RUN_CHARS, min_bytes - 1))
    pieces: list[bytes] = []
    spans: list[tuple[int, int]] = []
    last = 0
    for match in pattern.finditer(body):
        start, run_end = match.span()
        end = _array_end(body, start, run_end)
        if end is None or end - start < min_bytes:
            continue
        pieces.append(bytes(body[last:start]))
        pieces.append(b'"\\u0000mlops-lifted:%d"' % len(spans))
        spans.append((start, end))
        last = end
    if not spans:
        return None
    pieces.append(bytes(body[last:]))
    return Lifted(body, b"".join(pieces), spans)


class NotLiftable(ValueError):
    """The lifted array is not the plain case (for example floats for an INT32 tensor, or partial nesting).

    The caller parses the body the ordinary way, which reads it exactly or says precisely what is wrong.
    """


def _next_cut(body: Any, pos: int, end: int, nested: bool) -> int:
    """A position after ``pos + _PIECE`` just before a comma between two top-level elements, or ``end``."""
    if end - pos <= _PIECE:
        return end
    sep = b"]," if nested else b","
    probe = pos + _PIECE
    depth = 1
    counted = pos
    while True:
        hit = body.find(sep, probe, end)
        if hit < 0:
            return end
        cut = hit + len(sep) - 1  # the comma
        depth += body.count(b"[", counted, cut) - body.count(b"]", counted, cut)
        counted = cut
        if depth == 1:
            return cut
        probe = hit + 1


def parse_numbers(body: Any, span: tuple[int, int], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """The numbers of the JSON array ``body[span]`` as an array of ``dtype`` and ``shape``.

    The array is read a few MiB at a time, each piece a run of whole top-level elements
    parsed by orjson (so JSON's grammar is checked exactly) and converted by numpy.
    Raises :class:`NotLiftable` for what the plain parse should handle, ``ValueError``
    for data that does not fit ``shape`` or ``dtype``.
    """
    import orjson

    start, end = span
    count = int(np.prod(shape))
    out = np.empty(count, dtype=dtype)
    inner_start = start + 1
    while inner_start < end and body[inner_start] in b" \t\n\r":
        inner_start += 1
    nested = body[inner_start] == 0x5B
    filled = 0
    pos = start + 1  # just after the opening bracket
    inner_end = end - 1  # the closing bracket
    while pos < inner_end:
        cut = _next_cut(body, pos, inner_end, nested)
        try:
            values = orjson.loads(b"[" + bytes(body[pos:cut]) + b"]")
        except orjson.JSONDecodeError:
            raise NotLiftable("not a plain JSON array") from None
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError, OverflowError):
            raise ValueError("data is not a regular (rectangular) list of numbers") from None
        if nested and (arr.ndim != len(shape) or arr.shape[1:] != tuple(shape[1:])):
            raise NotLiftable("nested differently from the shape")
        _store(out, filled, arr.reshape(-1), dtype, count)
        filled += arr.size
        pos = cut + 1
    if filled != count:
        raise ValueError(f"data has {filled} elements, shape {list(shape)} needs {count}")
    return out.reshape(shape)


def _store(out: np.ndarray, at: int, values: np.ndarray, dtype: np.dtype, count: int) -> None:
    if at + values.size > count:
        raise ValueError(f"data has more than the {count} elements its shape says")
    kind = values.dtype.kind
    if values.size == 0:
        return
    if kind not in ("iu" if dtype.kind in "iu" else "iuf"):
        raise NotLiftable(f"{values.dtype} values for a {dtype} tensor")
    target = out[at:at + values.size]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise ValueError(f"values out of range for {dtype} ({info.min}..{info.max})")
        target[:] = values
    elif dtype.kind == "f":
        with np.errstate(over="ignore"):
            target[:] = values
        if dtype.itemsize < 8 and not np.isfinite(target).all():
            raise ValueError(f"values out of range for {dtype}")
    else:
        raise NotLiftable(f"{dtype} tensors are not lifted")
