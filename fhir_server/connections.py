"""HTTP/1.1 connections with header and body timeouts (uvicorn's httptools protocol, timed).

uvicorn closes idle keep-alive connections, but a connection that sends nothing, or sends
headers a byte at a time, or stops in the middle of its body, is held forever (slowloris).
This protocol gives each request a clock: `header_timeout` from the connection (or the first
byte of a next request) to the end of its headers, then `body_timeout` to the end of its body.
When it runs out the connection is closed (after a 408 if the request's headers were begun).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n"
                   b"connection: close\r\n\r\n")


class TimedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock: asyncio.TimerHandle | None = None
        self._in_headers = False  # the clock runs for headers (else for a body)
        self._begun = False  # some byte of the current request arrived

    @classmethod
    def with_timeouts(cls, header_timeout: float, body_timeout: float) -> type[TimedHttpToolsProtocol]:
        return type("TimedHttpToolsProtocol", (cls,), {"header_timeout": header_timeout,
                                                       "body_timeout": body_timeout})

    def _start(self, seconds: float, *, headers: bool) -> None:
        self._stop()
        self._in_headers = headers
        self._clock = self.loop.call_later(seconds, self._expired)

    def _stop(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None

    def _expired(self) -> None:
        self._clock = None
        if self.transport.is_closing():
            return
        if self._in_headers and self._begun:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    # ------------------------------------------------------------------ protocol events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start(self.header_timeout, headers=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._clock is None and (self.cycle is None or self.cycle.response_complete):
            # The first byte of a next request on a kept-alive connection.
            self._start(self.header_timeout, headers=True)
        self._begun = True
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._start(self.body_timeout, headers=False)

    def on_message_complete(self) -> None:
        self._stop()
        self._begun = False
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop()  # the websocket protocol takes the connection over
        super().handle_websocket_upgrade()
