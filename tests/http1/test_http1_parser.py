"""The pure HTTP/1.1 parser, with bytes and no event loop: heads, bodies, upgrades, bounds."""

from __future__ import annotations

import pytest

from http1.parser import HttpError, MessageParser


def test_a_head_fed_in_pieces_then_a_chunked_body_piece_by_piece() -> None:
    parser = MessageParser("request")
    head_done = []
    parser.feed(b"POST /api/v1/pods HTTP/1.1\r\nHost: gw\r\nTransfer-")
    head_done.append(parser.head_done)
    parser.feed(b"Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    head_done.append(parser.head_done)
    assert head_done == [False, True]
    head = parser.request_head()
    assert (head.method, head.target, head.has_body, head.upgrade) == (
        "POST",
        "/api/v1/pods",
        True,
        False,
    )
    assert list(head.headers) == [(b"Host", b"gw"), (b"Transfer-Encoding", b"chunked")]
    assert parser.body_piece(eof=False) == b"abc"
    assert parser.body_piece(eof=False) is None  # more is needed
    parser.feed(b"0\r\n\r\n")
    assert parser.body_piece(eof=False) == b""


def test_a_body_cut_short_is_400_only_once_the_input_ends() -> None:
    parser = MessageParser("request")
    parser.feed(b"PUT / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nab")
    parser.request_head()
    assert parser.body_piece(eof=False) == b"ab"
    assert parser.body_piece(eof=False) is None
    with pytest.raises(HttpError, match="middle of a message body") as cut:
        parser.body_piece(eof=True)
    assert cut.value.status == 400


def test_a_response_without_length_ends_with_the_connection() -> None:
    parser = MessageParser("response")
    parser.feed(b"HTTP/1.1 200 OK\r\n\r\nstreamed")
    assert parser.response_head(head_request=False).status == 200
    assert parser.body_piece(eof=False) == b"streamed"
    assert parser.body_piece(eof=True) == b""


def test_an_upgrade_keeps_the_bytes_past_its_head() -> None:
    parser = MessageParser("response")
    parser.feed(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\nraw"
    )
    head = parser.response_head(head_request=False)
    assert (head.status, head.upgrade, parser.upgraded) == (101, True, True)
    assert parser.take_upgrade_tail() == b"raw"
    assert parser.take_upgrade_tail() == b""


def test_a_second_message_in_the_same_bytes_is_refused() -> None:
    parser = MessageParser("request")
    with pytest.raises(HttpError, match="pipelined") as refused:
        parser.feed(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert refused.value.status == 400


def test_messages_one_after_another_each_on_a_fresh_parser() -> None:
    parser = MessageParser("request")
    parser.feed(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert parser.request_head().target == "/a"
    assert parser.body_piece(eof=False) == b""
    parser.begin()
    assert not parser.head_done
    parser.feed(b"GET /b HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert parser.request_head().target == "/b"


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 200 + b"\r\n\r\n"],  # a whole head, too large
        [b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 40, b"y" * 40, b"y" * 40],  # one never ending
    ],
)
def test_a_head_past_its_bound_is_431(pieces: list[bytes]) -> None:
    parser = MessageParser("request", max_head_bytes=128)
    *first, last = pieces
    for piece in first:
        parser.feed(piece)  # within the bound so far
    with pytest.raises(HttpError, match="larger than 128 bytes") as refused:
        parser.feed(last)
    assert refused.value.status == 431


def test_a_head_request_has_no_body_whatever_it_announces() -> None:
    parser = MessageParser("response")
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    head = parser.response_head(head_request=True)
    assert not head.keep_alive
    assert parser.body_piece(eof=False) == b""
