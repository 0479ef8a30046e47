"""uvicorn's httptools protocol with the two bounds it lacks: the time a request's line and
headers may take to arrive (a slow-loris client otherwise holds a connection forever), and
their size (httptools buffers headers without limit).

A per-request timer would cost more than a small request's handling, so one sweep per event
loop, every quarter of the timeout while connections are open, closes the connections whose
headers are overdue. Nothing runs while no connection is open.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 << 10


def timed_protocol(header_timeout_s: float, max_header_bytes: int = MAX_HEADER_BYTES):
    """A HttpToolsProtocol subclass for uvicorn.Config(http=...)."""

    class TimedHttpToolsProtocol(HttpToolsProtocol):
        _sweeping = False  # per class: one sweep for all connections of this server

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_since = self.loop.time()  # the first request must arrive too
            self._header_bytes = 0
            cls = type(self)
            if not cls._sweeping:
                cls._sweeping = True
                self.loop.call_later(header_timeout_s / 4, self._sweep, self.loop, self.connections)

        def data_received(self, data: bytes) -> None:
            reading_head = self._header_since is not None
            super().data_received(data)
            # Counted after parsing: a read that completes the headers may carry body bytes too.
            if reading_head and self._header_since is not None and self.transport is not None:
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._refuse(b"431 Request Header Fields Too Large", b"request headers over %d bytes"
                                 % max_header_bytes)

        def on_message_begin(self) -> None:
            if self._header_since is None:
                self._header_since = self.loop.time()
                self._header_bytes = 0
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._header_since = None
            super().on_headers_complete()

        def _refuse(self, status: bytes, message: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                                     b"content-length: %d\r\n\r\n" % len(message) + message)
                self.transport.close()

        @classmethod
        def _sweep(cls, loop, connections) -> None:
            now = loop.time()
            for conn in list(connections):
                since = getattr(conn, "_header_since", None)
                if since is not None and now - since > header_timeout_s and conn.transport is not None:
                    conn._refuse(b"408 Request Timeout", b"the request line and headers took too long")
            if connections:
                loop.call_later(header_timeout_s / 4, cls._sweep, loop, connections)
            else:
                cls._sweeping = False

    return TimedHttpToolsProtocol
