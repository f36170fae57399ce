"""One HTTP/2 request sent exactly as written, to see how a server answers what clients refuse
to send.

h2 (like curl, Go and every well-behaved client) will not send fields that HTTP/2 forbids
(`connection`, `upgrade`, a `:protocol` without the server's consent); a test of how a server
answers a client that does send them needs a client that does. `send_raw` opens one TLS
connection offering only `h2`, sends one request head with h2's outbound checks off, and
returns the answer: a response (status, fields, body) or the stream's reset code. It reads at
most `max_body` bytes of body, and every wait is bounded by the caller's timeout.
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

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


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
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        connection.initiate_connection()
        connection.send_headers(1, list(head), end_stream=True)
        writer.write(connection.data_to_send())
        answer = RawAnswer()
        while not _take(connection, await reader.read(_READ_SIZE), answer, max_body):
            writer.write(connection.data_to_send())
        return answer
    finally:
        writer.transport.abort()


def _take(
    connection: h2.connection.H2Connection, data: bytes, answer: RawAnswer, max_body: int
) -> bool:
    """Feed `data` to `connection`, note what it says in `answer`; whether the answer is whole."""
    if not data:
        raise AssertionError("the server closed the connection without answering stream 1")
    for event in connection.receive_data(data):
        if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
            for name, value in event.headers or []:
                assert isinstance(name, bytes)
                assert isinstance(value, bytes)
                if name == b":status":
                    answer.status = int(value)
                elif not name.startswith(b":"):
                    answer.headers.append((name, value))
        elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
            answer.body += event.data or b""
            if len(answer.body) > max_body:
                raise AssertionError(f"the body is over {max_body} bytes")
            connection.acknowledge_received_data(event.flow_controlled_length or 0, 1)
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
            return True
        elif (isinstance(event, h2.events.StreamReset) and event.stream_id == 1) or isinstance(
            event,
            h2.events.ConnectionTerminated,  # a GOAWAY ends stream 1 too, for its reason
        ):
            answer.reset = int(event.error_code or 0)
            return True
    return False
