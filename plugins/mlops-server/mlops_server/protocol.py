"""The HTTP/1.1 connection protocol: uvicorn's httptools protocol with limits against hostile clients.

uvicorn's httptools protocol has no header-size limit and no timer before the first
response: a client that opens a connection and sends nothing, dribbles its headers
one byte at a time, or declares a body and never sends it, holds a connection (and
its memory) forever. This subclass adds, per connection:

=====================  ===================  ==========================================================
limit                  default              what happens
=====================  ===================  ==========================================================
``max_header_bytes``   64 KiB               request line + headers above it: ``431``, connection closed
``header_timeout``     10 s                 headers not complete this long after the connection opened
                                            or the request's first byte arrived: ``408``, closed
``body_timeout``       60 s                 body not complete this long after its headers: ``408``, closed
``keep_alive``         5 s                  idle between two requests: closed (uvicorn's own timer)
``max_connections``    file limit - 128     the first request of a connection beyond it: ``503`` +
                                            Retry-After, closed; connections already served go on
=====================  ===================  ==========================================================

At the process's file-descriptor limit the kernel refuses ``accept``; uvloop (libuv)
then accepts and at once closes the waiting connection with a reserved descriptor,
so the loop neither crashes nor spins, and the connections already open keep working.

Header and body deadlines are checked once a second, so a limit of N seconds acts
after N to N + 1 seconds.

Shutdown is kinder to idle keep-alive connections than uvicorn's (see
:meth:`DrainingHttpToolsProtocol.shutdown`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["http_protocol_class", "ConnectionLimits", "DRAIN_IDLE_S"]

#: On shutdown, an idle keep-alive connection stays open this long for a request already on its way.
DRAIN_IDLE_S = 1.0
#: After refusing a connection (431, 408, 503), input still arriving is read and dropped this long.
LINGER_S = 2.0


class ConnectionLimits:
    """The per-connection limits the protocol enforces (set once per server process)."""

    def __init__(self, *, max_header_bytes: int = 64 << 10, header_timeout: float = 10.0,
                 body_timeout: float = 60.0, max_connections: int | None = None) -> None:
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections


def _raw_response(status: int, reason: str, message: str, extra: bytes = b"") -> bytes:
    body = ('{"error":"%s"}' % message).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n").encode() + extra + b"\r\n" + body


def _sweep(loop: Any, connections: set, every: float) -> None:
    """Refuse the connections whose header or body deadline passed; runs every ``every`` seconds."""
    now = loop.time()
    for conn in list(connections):
        deadline = getattr(conn, "_deadline", None)
        if deadline is not None and now >= deadline:
            conn._expire()
    loop.call_later(every, _sweep, loop, connections, every)


def http_protocol_class(limits: ConnectionLimits) -> type:
    """uvicorn's httptools protocol class with ``limits`` and the draining shutdown.

    Header and body time limits are deadlines (one float per connection) checked by one
    sweep per second over all connections, not a timer per request: arming and cancelling
    two timers per request measurably cost small-request throughput.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    header_msg = f"request headers not received within {limits.header_timeout:g} s"
    body_msg = f"request body not received within {limits.body_timeout:g} s"
    head_msg = f"request line and headers exceed {limits.max_header_bytes} bytes"
    busy_msg = f"too many connections (limit {limits.max_connections}); retry later"
    max_head = limits.max_header_bytes
    max_conns = limits.max_connections
    header_timeout = limits.header_timeout
    body_timeout = limits.body_timeout
    sweeping: set[int] = set()  # id() of the connection sets (one per server) already swept

    class DrainingHttpToolsProtocol(HttpToolsProtocol):
        _draining = False
        _head_bytes = 0  # bytes received while a request head is awaited
        _awaiting_head = True
        _deadline: float | None = None
        _in_body = False
        _linger: Any = None
        _refused = False

        # ---------------------------------------------------- deadlines
        def _expire(self) -> None:
            self._deadline = None
            self._refuse(408, "Request Timeout", body_msg if self._in_body else header_msg, in_body=self._in_body)

        def _refuse(self, status: int, reason: str, message: str, extra: bytes = b"", *,
                    in_body: bool = False) -> None:
            """Answer with ``status`` when nothing else is being answered on this connection, and close it.

            The app of a request whose body timed out is woken by the disconnect (its
            ``receive`` returns ``http.disconnect``) and its answer is dropped by uvicorn.
            """
            if self._refused or self.transport.is_closing():
                return
            self._refused = True
            self._deadline = None
            self.flow.resume_reading()  # keep draining the client's input during the lingering close
            cycle = self.cycle
            if in_body:
                answer = cycle is not None and not cycle.response_started
            else:  # between requests: only when the previous answer is complete (pipelining)
                answer = cycle is None or cycle.response_complete
            if answer:
                self.transport.write(_raw_response(status, reason, message, extra))
            if answer and self.transport.can_write_eof():
                # Lingering close: a socket closed with unread input resets the connection, and the
                # client may lose the answer. Half-close instead, drop what still arrives, and close
                # when the client does (or after LINGER_S).
                self.transport.write_eof()
                self._linger = self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # a refusal already answered and closed; the parser error is ours
                super().send_400_response(msg)

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # A connection that never sends a whole request head is closed after header_timeout.
            self._deadline = self.loop.time() + header_timeout
            key = id(self.connections)
            if key not in sweeping:
                sweeping.add(key)
                self.loop.call_later(1.0, _sweep, self.loop, self.connections, 1.0)

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline = None
            if self._linger is not None:
                self._linger.cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # lingering close: input is dropped
            if self._awaiting_head:
                # httptools buffers an unfinished header line itself, so count what arrives.
                self._head_bytes += len(data)
                super().data_received(data)
                if self._awaiting_head and self._head_bytes > max_head:
                    self._refuse(431, "Request Header Fields Too Large", head_msg)
                return
            super().data_received(data)

        # ---------------------------------------------------- parser callbacks
        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # a keep-alive connection's next request starts its header clock
                self._deadline = self.loop.time() + header_timeout

        def on_headers_complete(self) -> None:
            self._awaiting_head = False
            if self._head_bytes > max_head and self._exact_head_bytes() > max_head:
                # the whole head came in one piece (data_received saw it complete at once)
                self._refuse(431, "Request Header Fields Too Large", head_msg)
                raise _Refused()  # stop the parser: nothing more is read from this connection
            self._head_bytes = 0
            if max_conns is not None and self.cycle is None and len(self.connections) > max_conns:
                # only a connection's first request: the ones already being served keep their service
                self._refuse(503, "Service Unavailable", busy_msg, b"retry-after: 1\r\n")
                raise _Refused()
            super().on_headers_complete()
            self._in_body = True
            self._deadline = self.loop.time() + body_timeout
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False  # answer, then close: "Connection: close"

        def _exact_head_bytes(self) -> int:
            return len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)

        def on_message_complete(self) -> None:
            self._deadline = None
            self._in_body = False
            self._awaiting_head = True  # what arrives next is the next request's head
            super().on_message_complete()

        # ---------------------------------------------------- shutdown
        def shutdown(self) -> None:
            """An idle keep-alive connection gets ``DRAIN_IDLE_S`` for a request already on its way.

            uvicorn closes a keep-alive connection at once when it is between two requests,
            so a request the client sent in that instant is lost (a read error for the
            client; it may not retry a POST). Such a connection is answered with
            ``Connection: close`` instead; only one that stays idle is closed. Busy
            connections answer their current request with ``Connection: close`` as before.
            """
            idle = self.cycle is None or self.cycle.response_complete
            if not idle or not hasattr(self, "timeout_keep_alive_task"):
                super().shutdown()
                return
            self._draining = True
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = self.loop.call_later(DRAIN_IDLE_S, self.timeout_keep_alive_handler)

    return DrainingHttpToolsProtocol


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a connection that was answered and closed."""
