"""HTTP answers of the ASGI app: the error type every handler raises, and the one way to send a body."""

from __future__ import annotations

from typing import Awaitable, Callable

import orjson

__all__ = ["HttpError", "Send", "respond", "error_body"]

Send = Callable[[dict], Awaitable[None]]


class HttpError(Exception):
    """Answer with this status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def respond(send: Send, status: int, body: bytes, *, content_type: bytes = b"application/json",
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
