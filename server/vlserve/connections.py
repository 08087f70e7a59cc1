"""Connection limits uvicorn does not have: a deadline for a request's headers, and a cap
on open connections.

uvicorn closes idle keep-alive connections, but any byte a client sends cancels that
timer, and nothing bounds how long headers may take: a client sending one byte every few
seconds holds a connection (and its file descriptor) forever. Here each request's
headers must be complete within `header_timeout_s` of the connection opening or of the
previous response; a connection over `max_connections` is closed as it opens. (The body's
own deadline is the app's: api/middleware.py.)
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
BUSY_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n"
                 b"content-length: 0\r\n\r\n")


class LimitedH11Protocol(H11Protocol):
    header_timeout_s: float = 10.0
    max_connections: int = 1024

    @classmethod
    def with_limits(cls, header_timeout_s: float, max_connections: int) -> type["LimitedH11Protocol"]:
        return type(cls.__name__, (cls,), {"header_timeout_s": header_timeout_s, "max_connections": max_connections})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(BUSY_RESPONSE)
            transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in: the app's deadlines take over
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request's headers have their own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # some of a request arrived: tell the client why
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()
