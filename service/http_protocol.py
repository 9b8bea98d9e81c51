"""uvicorn's h11 protocol with the gateway's answers where the app never sees the request.

Two gaps of the HTTP server itself (hardening round 3):
- a request the HTTP parser refuses (a malformed request line or header, a duplicate or
  negative Content-Length, headers over GLIMPSE_MAX_HEADER_BYTES) got uvicorn's plain-text
  400; it gets the API's JSON error shape, `{"error": ...}`, as every other refusal;
- uvicorn starts no timer before a request's headers have arrived: a connection that sends
  nothing, or stalls inside its headers, held one of GLIMPSE_MAX_CONNECTIONS for as long as
  the client liked. Here the request line and headers must arrive within
  GLIMPSE_HEADER_TIMEOUT_S of the connection opening (on a keep-alive connection, of the next
  request's first byte); otherwise 408 and the connection is closed. A body that stalls is
  the gateway middleware's (GLIMPSE_BODY_TIMEOUT_S between chunks).

What only a proxy in front can do (docs/reliability.md): refuse a 32 MB header without
reading it (this server reads up to the limit, answers, and drops the rest for LINGER_S before
closing; a client still writing after that sees a reset), rate-limit connections per client,
and bound a whole request's duration.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 2.0  # after a 400, how long what the client still sends is read and dropped
_INVALID = (
    "Invalid HTTP request: a malformed request line or header, a duplicate or negative"
    " Content-Length, or headers over the limit"
)


def _raw_answer(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer, written directly: h11 cannot answer a request whose headers
    it has not finished reading."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GatewayH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0  # set per server by `protocol_class`
    _headers_timer: asyncio.TimerHandle | None = None
    _lingering = False  # answered a 400: what the client still sends is dropped

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_cycle = self.cycle  # a new cycle object: a request's headers arrived
        self._arm_headers_timer()

    def _arm_headers_timer(self) -> None:
        self._cancel_headers_timer()
        self._waiting_cycle = self.cycle
        self._headers_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_headers_timer(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # answered and closing: what the client still sends is dropped
        between = self.cycle is not None and self.cycle.response_complete
        if self._headers_timer is None and between:
            # The next request on a keep-alive connection has begun: its headers have the
            # same time. (An idle keep-alive connection is uvicorn's keep-alive timer's to
            # close, silently: an unasked-for 408 could be read as the next request's answer.)
            self._arm_headers_timer()
        super().data_received(data)
        if self.cycle is not self._waiting_cycle:  # this request's headers are in
            self._cancel_headers_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_headers_timer()
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._headers_timer = None
        if self.transport.is_closing() or self.cycle is not self._waiting_cycle:
            return
        message = f"the request's headers did not arrive within {self.header_timeout_s:g} s"
        self.transport.write(_raw_answer(408, "Request Timeout", message))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """The answer, then a lingering close: the client may still be sending (headers past
        the limit), and closing a socket with unread data resets the connection, which can
        destroy the answer before the client reads it. So the write side is shut (the client
        reads the answer, then EOF) and what still arrives is read and dropped for up to
        LINGER_S before the socket closes (nginx's lingering close)."""
        self._cancel_headers_timer()
        if self.transport.is_closing():
            return
        self.transport.write(_raw_answer(400, "Bad Request", _INVALID))
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def protocol_class(header_timeout_s: float) -> type[GatewayH11Protocol]:
    """The protocol for one server's settings (uvicorn takes a class, not an instance)."""
    return type("GatewayH11", (GatewayH11Protocol,), {"header_timeout_s": header_timeout_s})
