"""HTTP/1.1 reading over asyncio streams: framing, keep-alive, upgrades, limits."""

from __future__ import annotations

import asyncio

import pytest

from http1.parser import HttpError
from http1.reader import MessageReader


def _reader(*chunks: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return reader


async def _body(http: MessageReader) -> bytes:
    data = b""
    while chunk := await http.read_body():
        data += chunk
    return data


async def test_a_small_response_read_at_once_keeps_the_connection_alive() -> None:
    http = MessageReader(_reader(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), "response")
    head = await http.next_response()
    assert head.status == 200
    assert head.keep_alive
    assert await _body(http) == b"ok"


async def test_connection_close_is_seen() -> None:
    http = MessageReader(
        _reader(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), "response"
    )
    assert not (await http.next_response()).keep_alive


async def test_requests_one_after_another_on_one_connection() -> None:
    first = (
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    second = b"GET /b?c=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    reader = asyncio.StreamReader()
    http = MessageReader(reader, "request")
    reader.feed_data(first)
    head = await http.next_request()
    assert head is not None
    assert (head.method, head.target, head.has_body, head.keep_alive) == ("POST", "/a", True, True)
    assert await _body(http) == b"abc"
    reader.feed_data(second)
    reader.feed_eof()
    head = await http.next_request()
    assert head is not None
    assert (head.method, head.target, head.has_body) == ("GET", "/b?c=1", False)
    assert await _body(http) == b""
    assert await http.next_request() is None


async def test_pipelining_is_refused() -> None:
    both = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    http = MessageReader(_reader(both), "request")
    with pytest.raises(HttpError, match="pipelined"):
        await http.next_request()


async def test_upgrade_keeps_the_bytes_after_the_head() -> None:
    http = MessageReader(
        _reader(b"GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\nRAW", b"MORE"),
        "request",
    )
    head = await http.next_request()
    assert head is not None
    assert head.upgrade
    raw = b""
    while chunk := await http.read_raw():
        raw += chunk
    assert raw == b"RAWMORE"


async def test_oversized_head_is_431() -> None:
    http = MessageReader(
        _reader(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"),
        "request",
        max_head_bytes=1024,
    )
    with pytest.raises(HttpError) as refused:
        await http.next_request()
    assert refused.value.status == 431


async def test_malformed_input_is_400() -> None:
    http = MessageReader(_reader(b"NOT HTTP AT ALL\r\n\r\n"), "request")
    with pytest.raises(HttpError) as refused:
        await http.next_request()
    assert refused.value.status == 400


async def test_body_until_close() -> None:
    http = MessageReader(_reader(b"HTTP/1.1 200 OK\r\n\r\nstreamed", b" until close"), "response")
    await http.next_response()
    assert await _body(http) == b"streamed until close"


async def test_too_many_header_fields_are_431_whatever_their_size() -> None:
    fields = b"".join(b"a%d:b\r\n" % i for i in range(300))
    http = MessageReader(_reader(b"GET / HTTP/1.1\r\n" + fields + b"\r\n"), "request")
    with pytest.raises(HttpError, match="more than 256 fields") as refused:
        await http.next_request()
    assert refused.value.status == 431


async def test_the_field_limit_is_a_setting() -> None:
    head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert await MessageReader(_reader(head), "request", max_header_fields=3).next_request()
    with pytest.raises(HttpError, match="more than 2 fields"):
        await MessageReader(_reader(head), "request", max_header_fields=2).next_request()


_CHUNKED_POST = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_trailer_fields_are_read_and_dropped() -> None:
    http = MessageReader(
        _reader(_CHUNKED_POST + b"3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"), "request"
    )
    head = await http.next_request()
    assert head is not None
    assert await _body(http) == b"abc"
    assert head.headers == [(b"Transfer-Encoding", b"chunked")]


async def test_too_many_trailer_fields_are_431() -> None:
    trailer = b"".join(b"t%d:x\r\n" % i for i in range(20))
    reader = asyncio.StreamReader()
    http = MessageReader(reader, "request", max_header_fields=10)
    reader.feed_data(_CHUNKED_POST)
    assert await http.next_request()
    reader.feed_data(b"3\r\nabc\r\n0\r\n" + trailer + b"\r\n")
    with pytest.raises(HttpError, match="more than 10 fields") as refused:
        await _body(http)
    assert refused.value.status == 431


@pytest.mark.parametrize(
    "framing",
    [
        b"0\r\nX-T: " + b"y" * 5000,  # one endless trailer field
        b"3;" + b"e" * 5000,  # one endless chunk extension
    ],
)
async def test_endless_chunk_framing_is_431_after_a_head_s_worth(framing: bytes) -> None:
    reader = asyncio.StreamReader()
    http = MessageReader(reader, "request", max_head_bytes=1024)
    reader.feed_data(_CHUNKED_POST + b"3\r\nabc\r\n")
    assert await http.next_request()
    assert await http.read_body() == b"abc"
    for start in range(0, len(framing), 100):  # as a slow sender would: many small reads
        reader.feed_data(framing[start : start + 100])
    with pytest.raises(HttpError, match="run past 1024 bytes") as refused:
        await http.read_body()
    assert refused.value.status == 431


async def test_many_small_chunks_are_not_framing_without_end() -> None:
    chunks = b"1\r\nx\r\n" * 2000
    body = _reader(_CHUNKED_POST + chunks + b"0\r\n\r\n")
    http = MessageReader(body, "request", max_head_bytes=1024)
    assert await http.next_request()
    assert await _body(http) == b"x" * 2000


async def test_the_http_version_is_told() -> None:
    http = MessageReader(_reader(b"GET / HTTP/1.0\r\n\r\n"), "request")
    head = await http.next_request()
    assert head is not None
    assert (head.http_version, head.keep_alive) == ("1.0", False)
    http = MessageReader(_reader(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), "request")
    head = await http.next_request()
    assert head is not None
    assert (head.http_version, head.keep_alive) == ("1.0", True)


async def test_discarding_reads_to_the_end_without_parsing() -> None:
    reader = asyncio.StreamReader()
    http = MessageReader(reader, "request")
    reader.feed_data(b"GET / HTTP/1.1\r\n\r\n")
    assert await http.next_request()
    reader.feed_data(b"\x00garbage" * 100000)
    reader.feed_eof()
    await http.discard_until_close()
    assert await http.next_request() is None
