"""The kit's raw HTTP/2 exchange, against h2's own server side, in bytes: it sends the fields
h2 would refuse to, and reads a response or a reset as the answer."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from tests.kit.h2_request import RawExchange

HEAD = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example"),
    (b":path", b"/exec"),
    (b"connection", b"Upgrade"),
    (b"upgrade", b"websocket"),
]


def _server() -> h2.connection.H2Connection:
    # The server does not check what it receives either: the test reads what arrived.
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
    )
    server.initiate_connection()
    return server


def test_the_forbidden_fields_are_sent_as_written() -> None:
    exchange, server = RawExchange(HEAD), _server()
    events = server.receive_data(exchange.data_to_send())
    [request] = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert request.stream_id == 1
    assert list(request.headers or []) == HEAD


def test_a_response_is_read_whole() -> None:
    exchange, server = RawExchange(HEAD), _server()
    server.receive_data(exchange.data_to_send())
    server.send_headers(1, [(b":status", b"400"), (b"content-type", b"text/plain")])
    server.send_data(1, b'request header "Connection" is not valid in HTTP/2\n')
    exchange.receive(server.data_to_send())
    assert (exchange.done, exchange.answer.status) == (False, 400)  # not ended yet
    server.end_stream(1)
    exchange.receive(server.data_to_send())
    assert exchange.done
    answer = exchange.answer
    assert (answer.status, answer.reset) == (400, None)
    assert answer.headers == [(b"content-type", b"text/plain")]
    assert answer.body == b'request header "Connection" is not valid in HTTP/2\n'


def test_a_reset_is_the_answer() -> None:
    exchange, server = RawExchange(HEAD), _server()
    server.receive_data(exchange.data_to_send())
    server.reset_stream(1, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    exchange.receive(server.data_to_send())
    assert exchange.done
    assert (exchange.answer.status, exchange.answer.reset) == (None, 1)


def test_a_goaway_is_the_answer_too() -> None:
    exchange, server = RawExchange(HEAD), _server()
    server.receive_data(exchange.data_to_send())
    server.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
    exchange.receive(server.data_to_send())
    assert exchange.done
    assert exchange.answer.reset == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_a_body_over_its_bound_and_a_silent_close_fail() -> None:
    exchange, server = RawExchange(HEAD, max_body=4), _server()
    server.receive_data(exchange.data_to_send())
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"12345")
    with pytest.raises(AssertionError, match="over 4 bytes"):
        exchange.receive(server.data_to_send())
    with pytest.raises(AssertionError, match="closed the connection"):
        RawExchange(HEAD).receive(b"")
