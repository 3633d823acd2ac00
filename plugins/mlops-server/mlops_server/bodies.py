"""Reading request bodies: size limits, Content-Encoding, and a budget for large bodies in flight.

A body of :data:`LARGE_BODY` bytes or more first reserves its declared size in the
budget of ``max_inflight_body_bytes`` (503 + Retry-After when it does not fit) and is
read into one buffer of that size, never joined from parts, so a large request costs
its size once while it is read. Small bodies are read as they come and never counted.
"""

from __future__ import annotations

from typing import Any, Callable

from .metrics import ServerMetrics
from .responses import HttpError

__all__ = ["BodyReader", "LARGE_BODY"]

#: Bodies of at least this many bytes count against max_inflight_body_bytes and are decoded off the loop.
LARGE_BODY = 1 << 20


class BodyBudget:
    """Bytes of large request bodies being read or decoded at once, against a limit (loop thread only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> bool:
        # One body larger than the whole budget still runs when nothing else is in flight.
        if self.used and self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class BodyReader:
    """Reads the bodies of one app's requests (ASGI ``receive``), within its limits."""

    def __init__(self, max_body: int, max_inflight: int, metrics: ServerMetrics) -> None:
        self.max_body = max_body
        self.budget = BodyBudget(max_inflight)
        self.metrics = metrics

    def release(self, reserved: int) -> None:
        """Give back what :meth:`read` reserved, once the request is answered."""
        self.budget.release(reserved)

    async def read(self, scope: dict, receive: Callable) -> tuple[Any, dict[bytes, bytes], int]:
        """(body, headers, bytes reserved in the in-flight budget); :meth:`release` them when done."""
        headers = dict(scope["headers"])
        declared = self._declared_length(headers)
        reserved = 0
        if declared is not None and declared >= LARGE_BODY:
            reserved = self._reserve(declared)
        try:
            if declared is not None and declared >= LARGE_BODY:
                body: Any = await self._receive_into(receive, declared)
            else:
                body, more = await self._receive_parts(receive, declared)
                reserved += more
            encoding = headers.get(b"content-encoding")
            if encoding is not None and encoding not in (b"identity", b""):
                body = self._decompress(body, encoding)
                if len(body) >= LARGE_BODY and len(body) > reserved:  # a small upload that inflated
                    reserved += self._reserve(len(body) - reserved)
        except BaseException:
            self.budget.release(reserved)
            raise
        return body, headers, reserved

    def _declared_length(self, headers: dict[bytes, bytes]) -> int | None:
        length = headers.get(b"content-length")
        if length is None:
            return None
        try:
            declared = int(length)
        except ValueError:
            raise HttpError(400, "invalid Content-Length") from None
        if declared > self.max_body:
            self.metrics.too_large += 1
            raise HttpError(413, f"request body of {declared} bytes exceeds the limit of {self.max_body} bytes")
        return declared

    def _reserve(self, size: int) -> int:
        if not self.budget.reserve(size):
            self.metrics.shed += 1
            raise HttpError(503, f"server busy: {self.budget.used} bytes of large request bodies in flight "
                                 f"(limit {self.budget.limit}); retry later", [(b"retry-after", b"1")])
        return size

    async def _receive_into(self, receive: Callable, size: int) -> bytearray:
        buf = bytearray(size)
        view = memoryview(buf)
        pos = 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                end = pos + len(chunk)
                if end > size:
                    raise HttpError(400, f"the body is longer than its Content-Length of {size} bytes")
                view[pos:end] = chunk
                pos = end
                if not message.get("more_body"):
                    break
        finally:
            view.release()
        if pos != size:
            raise HttpError(400, f"the body has {pos} bytes, its Content-Length says {size}")
        return buf

    async def _receive_parts(self, receive: Callable, declared: int | None) -> tuple[bytes, int]:
        """A small or chunked body; a chunked one reserves in the budget once it grows large."""
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > self.max_body:
                self.metrics.too_large += 1
                raise HttpError(413, f"request body exceeds the limit of {self.max_body} bytes")
            return body, 0
        parts = [body]
        size = len(body)
        reserved = 0
        try:
            while message.get("more_body"):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    self.metrics.too_large += 1
                    raise HttpError(413, f"request body exceeds the limit of {self.max_body} bytes")
                if size >= LARGE_BODY and size > reserved:
                    reserved += self._reserve(max(size - reserved, LARGE_BODY))
                parts.append(chunk)
        except BaseException:
            self.budget.release(reserved)
            raise
        return b"".join(parts), reserved

    def _decompress(self, body: bytes, encoding: bytes) -> bytes:
        import zlib

        if encoding == b"gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == b"deflate":
            inflater = zlib.decompressobj()
        else:
            raise HttpError(415, f"unsupported Content-Encoding {encoding.decode('latin-1')!r}; use gzip or deflate")
        try:
            out = inflater.decompress(body, self.max_body + 1)
        except zlib.error as exc:
            raise HttpError(400, f"the {encoding.decode()} body cannot be decompressed: {exc}") from None
        if len(out) > self.max_body or inflater.unconsumed_tail:
            self.metrics.too_large += 1
            raise HttpError(413, f"decompressed request body exceeds the limit of {self.max_body} bytes")
        return out

