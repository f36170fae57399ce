"""One HTTP/2 request sent exactly as written, to see how a server answers what clients refuse
to send.

h2 (like curl, Go and every well-behaved client) will not send fields that HTTP/2 forbids
(`connection`, `upgrade`, a `:protocol` the server never allowed); a test of how a server
answers a client that does send them needs a client that does. `RawExchange` is that client's
one exchange, sans-I/O: the bytes of the preface and of one request head (h2's outbound checks
off) on stream 1, then the server's bytes in, until the answer is whole: a response (status,
fields, body) or the stream's reset. `send_raw` runs it over a new TLS connection offering only
`h2`; every wait is bounded by the caller's timeout, the body by `max_body`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

Header = tuple[bytes, bytes]
_READ_SIZE = 64 * 1024
_STREAM = 1


@dataclass
class RawAnswer:
    """What the server did with the request: answered it (`status`) or reset it (`reset`)."""

    status: int | None = None
    headers: list[Header] = field(default_factory=list)
    """Lower-case names, no pseudo-fields."""
    body: bytes = b""
    reset: int | None = None
    """The RST_STREAM error code (1 is PROTOCOL_ERROR), or the GOAWAY's if the connection
    ended instead."""


class RawExchange:
    """One request head, sent unchecked on stream 1, and the answer to it."""

    def __init__(self, head: Sequence[Header], *, max_body: int = 64 * 1024) -> None:
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self._h2.initiate_connection()
        self._h2.send_headers(_STREAM, list(head), end_stream=True)
        self._max_body = max_body
        self.answer = RawAnswer()
        self.done = False
        """The answer is whole (the response ended, or the stream or connection was reset)."""

    def data_to_send(self) -> bytes:
        return self._h2.data_to_send()

    def receive(self, data: bytes) -> None:
        """Take the server's bytes (b"" when it closed the connection)."""
        if not data:
            raise AssertionError("the server closed the connection without answering")
        for event in self._h2.receive_data(data):
            self._take(event)

    def _take(self, event: h2.events.Event) -> None:
        answer = self.answer
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == _STREAM:
            for name, value in event.headers or []:
                assert isinstance(name, bytes)
                assert isinstance(value, bytes)
                if name == b":status":
                    answer.status = int(value)
                elif not name.startswith(b":"):
                    answer.headers.append((name, value))
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == _STREAM:
            answer.body += event.data or b""
            if len(answer.body) > self._max_body:
                raise AssertionError(f"the body is over {self._max_body} bytes")
            self._h2.acknowledge_received_data(event.flow_controlled_length or 0, _STREAM)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == _STREAM:
            self.done = True
        elif (isinstance(event, h2.events.StreamReset) and event.stream_id == _STREAM) or (
            isinstance(event, h2.events.ConnectionTerminated)  # a GOAWAY ends stream 1 too
        ):
            answer.reset = int(event.error_code or 0)
            self.done = True


async def send_raw(
    host: str,
    port: int,
    context: ssl.SSLContext,
    head: Sequence[Header],
    *,
    max_body: int = 64 * 1024,
) -> RawAnswer:
    """Send `head` (pseudo-fields first, as given, unchecked) with END_STREAM on stream 1 of a
    new connection and return what came back. `context` is used with ALPN `h2` only."""
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        picked = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if picked != "h2":
            raise AssertionError(f"{host}:{port} picked {picked!r}, not h2, in ALPN")
        exchange = RawExchange(head, max_body=max_body)
        while not exchange.done:
            writer.write(exchange.data_to_send())
            exchange.receive(await reader.read(_READ_SIZE))
        return exchange.answer
    finally:
        writer.transport.abort()
