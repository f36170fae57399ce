"""The response framer, with bytes: what a relayed response's head and body become."""

from __future__ import annotations

import pytest

from http1.framing import FramingError, ResponseFramer, content_length
from protocol import Headers


def framer(
    status: int = 200,
    headers: Headers = (),
    *,
    method: str = "GET",
    upgrade_requested: bool = False,
    keep_alive: bool = True,
    http_1_0: bool = False,
) -> ResponseFramer:
    return ResponseFramer(
        method=method,
        status=status,
        headers=headers,
        upgrade_requested=upgrade_requested,
        keep_alive=keep_alive,
        http_1_0=http_1_0,
    )


def test_a_counted_body_is_written_as_it_comes_and_ends_exactly() -> None:
    f = framer(headers=[(b"Content-Length", b"5"), (b"Content-Type", b"text/plain")])
    assert f.head_bytes() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    )
    assert f.body(b"he") == [b"he"]
    assert f.body(b"") == []
    assert f.body(b"llo") == [b"llo"]
    assert f.end() == b""
    assert f.keep_alive


def test_no_byte_past_the_announced_length_is_returned() -> None:
    f = framer(headers=[(b"content-length", b"2")])
    with pytest.raises(FramingError, match="past its announced length"):
        f.body(b"{}HTTP/1.1 200 OK\r\n\r\n")
    g = framer(headers=[(b"content-length", b"2")])
    assert g.body(b"{}") == [b"{}"]
    with pytest.raises(FramingError):
        g.body(b"H")


def test_a_body_that_ends_short_is_an_error() -> None:
    f = framer(headers=[(b"content-length", b"10")])
    f.body(b"12345")
    with pytest.raises(FramingError, match="5 bytes short"):
        f.end()


def test_without_a_length_the_body_is_chunked_by_the_framer() -> None:
    f = framer(headers=[(b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")])
    assert f.head_bytes() == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert b"".join(f.body(b"0\r\n\r\nHTTP/1.1 200 OK")) == b"14\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"
    assert f.end() == b"0\r\n\r\n"


def test_an_http_1_0_client_gets_a_body_ended_by_the_close() -> None:
    f = framer(http_1_0=True)
    assert f.head_bytes() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    assert f.body(b"abc") == [b"abc"]
    assert f.end() == b""
    assert not f.keep_alive


def test_an_http_1_0_keep_alive_is_said_so() -> None:
    f = framer(headers=[(b"content-length", b"0")], http_1_0=True)
    assert f.head_bytes().endswith(b"Content-Length: 0\r\nConnection: keep-alive\r\n\r\n")
    assert f.keep_alive


@pytest.mark.parametrize(
    ("method", "status", "length_kept"),
    [("HEAD", 200, True), ("GET", 204, False), ("GET", 304, True)],
)
def test_responses_without_a_body_get_none(method: str, status: int, length_kept: bool) -> None:
    f = framer(status, [(b"content-length", b"7")], method=method)
    assert (b"Content-Length: 7" in f.head_bytes()) is length_kept
    assert b"Transfer-Encoding" not in f.head_bytes()
    with pytest.raises(FramingError):
        f.body(b"x")
    assert f.end() == b""


def test_a_204_without_a_length_is_not_chunked() -> None:
    f = framer(204)
    assert f.head_bytes() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert f.end() == b""


def test_not_keeping_alive_says_connection_close() -> None:
    f = framer(headers=[(b"content-length", b"0")], keep_alive=False)
    assert f.head_bytes().endswith(b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(
    "values",
    [[b"2", b"3"], [b"2, 3"], [b"-1"], [b"+2"], [b"0x10"], [b""], [b"1e3"], [b"9" * 19]],
)
def test_malformed_or_conflicting_lengths_are_refused(values: list[bytes]) -> None:
    with pytest.raises(FramingError):
        framer(headers=[(b"Content-Length", value) for value in values])


def test_repeated_equal_lengths_are_one_length() -> None:
    assert content_length([(b"Content-Length", b"4, 4"), (b"content-length", b" 4 ")]) == 4
    f = framer(headers=[(b"Content-Length", b"4, 4"), (b"content-length", b"4")])
    assert f.head_bytes().count(b"Content-Length") == 1


def test_length_and_transfer_encoding_together_are_refused() -> None:
    with pytest.raises(FramingError, match="both"):
        framer(headers=[(b"Content-Length", b"4"), (b"Transfer-Encoding", b"chunked")])


def test_a_101_answers_only_an_upgrade_request() -> None:
    with pytest.raises(FramingError, match="did not ask to upgrade"):
        framer(101, [(b"Upgrade", b"SPDY/3.1")])
    f = framer(101, [(b"Upgrade", b"SPDY/3.1")], upgrade_requested=True)
    assert f.head_bytes() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n\r\n"
    )
    assert not f.keep_alive


@pytest.mark.parametrize("status", [100, 102, 103, 99, 1000])
def test_interim_and_impossible_statuses_are_refused(status: int) -> None:
    with pytest.raises(FramingError):
        framer(status, upgrade_requested=True)


@pytest.mark.parametrize(
    "header",
    [
        (b"X-A", b"1\r\nContent-Length: 0"),
        (b"X-A", b"1\nX-B: 2"),
        (b"X-A", b"a\x00b"),
        (b"X-A\r\nX-B", b"1"),
        (b"X A", b"1"),
        (b"", b"1"),
    ],
)
def test_header_injection_is_refused(header: tuple[bytes, bytes]) -> None:
    with pytest.raises(FramingError):
        framer(headers=[header, (b"content-length", b"0")])


def test_hop_by_hop_headers_of_the_agent_are_not_relayed() -> None:
    f = framer(
        headers=[
            (b"Connection", b"X-Secret, close"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Content-Length", b"0"),
        ]
    )
    assert f.head_bytes() == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_an_unframed_body_is_counted_but_never_chunk_coded() -> None:
    def unframed(headers: Headers) -> ResponseFramer:
        return ResponseFramer(
            method="GET",
            status=200,
            headers=headers,
            upgrade_requested=False,
            keep_alive=False,
            unframed=True,
        )

    f = unframed([(b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")])
    assert f.headers == [(b"X-A", b"1")]
    assert f.body(b"0\r\n\r\n") == [b"0\r\n\r\n"]
    assert f.end() == b""
    g = unframed([(b"Content-Length", b"2")])
    assert g.headers == [(b"Content-Length", b"2")]
    with pytest.raises(FramingError, match="past its announced length"):
        g.body(b"abc")
