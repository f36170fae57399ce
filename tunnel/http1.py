"""HTTP/1.1 messages over asyncio streams, for a reverse proxy that must stream and upgrade.

The gateway reads callers' requests with it and the agent reads the API server's responses.
Parsing is llhttp's (through httptools: the parser Node.js uses); this module turns its push
callbacks into a pull API (`next_head`, `read_body`) so that a body is read only as fast as its
consumer takes it — memory per message is one socket read, whatever the body's size.

What a proxy must not forward (RFC 9110 §7.6.1: `Connection` and the headers it names,
`Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`, `Proxy-*`, and `Upgrade` unless upgrading)
is dropped by `end_to_end_headers`; the framing of each hop (Content-Length or chunked) is
decided by the writer of that hop.

This module never interprets paths, methods or header values beyond framing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import httptools

Header = tuple[bytes, bytes]
Headers = Sequence[Header]
"""Header fields in order, duplicates kept; names as received (compare lower-cased)."""

READ_SIZE = 64 * 1024
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_HOP_BY_HOP_BUT_UPGRADE = _HOP_BY_HOP - {b"upgrade"}


class HttpError(Exception):
    """A peer sent something that is not acceptable HTTP/1.1; `status` is what to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    headers: Headers
    keep_alive: bool
    upgrade: bool
    has_body: bool


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: Headers
    keep_alive: bool
    upgrade: bool


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header `name` (lower-case), or None."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def end_to_end_headers(headers: Headers, *, keep_upgrade: bool = False) -> list[Header]:
    """`headers` without hop-by-hop ones (and those `Connection` names), as a proxy forwards."""
    named: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    # On the request path of every exchange: no new sets unless a Connection header names some.
    dropped = _HOP_BY_HOP_BUT_UPGRADE if keep_upgrade else _HOP_BY_HOP
    if named:
        dropped = (dropped | named) - ({b"upgrade"} if keep_upgrade else set())
    kept = [(key, value) for key, value in headers if key.lower() not in dropped]
    if keep_upgrade:
        kept.append((b"Connection", b"Upgrade"))
    return kept


class _Callbacks:
    """Collects what httptools reports while one chunk of bytes is fed."""

    __slots__ = (
        "begun",
        "body",
        "complete",
        "head_done",
        "head_size",
        "headers",
        "keep_alive",
        "parser",
        "pipelined",
        "url",
    )

    def __init__(self) -> None:
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.keep_alive = False
        self.url = b""
        self.head_size = 0
        self.headers: list[Header] = []
        self.begun = False
        self.head_done = False
        self.body: deque[bytes] = deque()
        self.complete = False
        self.pipelined = False

    def on_message_begin(self) -> None:
        # One parser (and one of these) serves one message: a second one in the same bytes
        # means the peer pipelined, which this proxy refuses rather than mis-frames.
        self.pipelined = self.begun
        self.begun = True

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.head_done = True
        # Asked now: llhttp forgets a message's flags once the message completes, which for a
        # small message happens within the same feed.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if body:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class MessageReader:
    """Reads HTTP/1.1 messages of one kind from a stream, one head and body at a time.

    Pipelining is refused (HttpError 400): a peer must wait for a response before it sends
    the next request, as HTTP/1.1 clients in practice (Go's, kubectl's) do.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        kind: Literal["request", "response"],
        *,
        max_head_bytes: int = 64 * 1024,
    ) -> None:
        self._reader = reader
        self._kind = kind
        self._max_head_bytes = max_head_bytes
        self._callbacks = _Callbacks()
        self._parser = self._new_parser()
        self._tail = b""  # bytes past an upgrade head: the first bytes of the raw stream
        self._upgraded = False
        self._eof = False
        self._no_body = False
        self._unread = b""  # bytes read by `watch_for_close` that belong to a later message

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        parser: httptools.HttpRequestParser | httptools.HttpResponseParser
        if self._kind == "request":
            parser = httptools.HttpRequestParser(self._callbacks)
        else:
            parser = httptools.HttpResponseParser(self._callbacks)
        self._callbacks.parser = parser
        return parser

    @property
    def upgraded(self) -> bool:
        return self._upgraded

    def take_upgrade_tail(self) -> bytes:
        """Bytes read past the head of an upgrade: the start of the raw byte stream."""
        tail, self._tail = self._tail, b""
        return tail

    async def wait_for_message(self) -> bool:
        """Wait, between messages, for the first bytes of the next one (kept for
        `next_request`); False if the peer closed instead. Lets a server time the idle wait
        apart from the head."""
        if self._unread:
            return True
        if self._eof:
            return False
        data = await self._reader.read(READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._unread = data
        return True

    async def next_request(self) -> RequestHead | None:
        """The next request's head, or None when the peer closed between requests."""
        if not await self._read_head():
            return None
        parser = self._parser
        assert isinstance(parser, httptools.HttpRequestParser)
        callbacks = self._callbacks
        has_body = _declares_body(callbacks.headers)
        return RequestHead(
            method=parser.get_method().decode("ascii"),
            target=callbacks.url.decode("latin-1"),
            headers=callbacks.headers,
            keep_alive=callbacks.keep_alive,
            upgrade=self._upgraded,
            has_body=has_body,
        )

    async def next_response(self, *, head_request: bool = False) -> ResponseHead:
        """The next response's head; `head_request` says it answers a HEAD (so has no body)."""
        if not await self._read_head():
            raise HttpError(502, "the upstream closed the connection before responding")
        parser = self._parser
        assert isinstance(parser, httptools.HttpResponseParser)
        status = parser.get_status_code()
        self._no_body = head_request
        return ResponseHead(
            status=status,
            headers=self._callbacks.headers,
            # After a HEAD the parser would wait for the announced body: never reuse it.
            keep_alive=self._callbacks.keep_alive and not head_request,
            upgrade=self._upgraded,
        )

    async def read_body(self) -> bytes:
        """The next piece of the current message's body; b"" once the body is complete."""
        callbacks = self._callbacks
        while True:
            if callbacks.body:
                return callbacks.body.popleft()
            if callbacks.complete or self._upgraded or self._no_body:
                return b""
            if self._eof:
                if self._kind == "response" and not _declares_body(callbacks.headers):
                    callbacks.complete = True  # a body delimited by the connection's close
                    return b""
                raise HttpError(400, "the connection closed in the middle of a message body")
            await self._feed_more()

    async def _read_head(self) -> bool:
        callbacks = self._callbacks
        if callbacks.complete or self._no_body:
            # Start the next message on a fresh parser; llhttp keeps state across messages.
            self._callbacks = callbacks = _Callbacks()
            self._parser = self._new_parser()
            self._no_body = False
        fed = 0
        while not callbacks.head_done:
            if self._eof and not self._unread:
                if fed == 0:
                    return False
                raise HttpError(400, "the connection closed in the middle of a message head")
            fed += await self._feed_more()
            if not callbacks.head_done and fed > self._max_head_bytes:
                break
        if not callbacks.head_done or callbacks.head_size > self._max_head_bytes:
            raise HttpError(431, f"the message head is larger than {self._max_head_bytes} bytes")
        return True

    async def read_raw(self) -> bytes:
        """After an upgrade: the next bytes of the raw stream (b"" at its end)."""
        if not self._upgraded:
            raise RuntimeError("read_raw() is only for upgraded connections")
        tail = self.take_upgrade_tail()
        return tail or await self._reader.read(READ_SIZE)

    async def watch_for_close(self) -> None:
        """Return when the peer closes its side; for a caller that has sent its whole request
        and waits for a long response (a watch), this is how its departure is noticed.

        Bytes that arrive meanwhile (the next request, sent early) are kept for `next_request`.
        """
        while not self._eof:
            if len(self._unread) >= self._max_head_bytes:
                # The peer sent a whole head's worth without waiting: stop reading, and let
                # TCP push back on it until this response is done.
                await asyncio.Event().wait()
            data = await self._reader.read(READ_SIZE)
            if not data:
                self._eof = True
            self._unread += data

    async def _feed_more(self) -> int:
        if self._unread:
            data, self._unread = self._unread, b""
        else:
            data = await self._reader.read(READ_SIZE)
        if not data:
            self._eof = True
            return 0
        self._feed(data)
        return len(data)

    def _feed(self, data: bytes) -> None:
        callbacks = self._callbacks
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            self._upgraded = True
            self._tail = data[offset:]
        except httptools.HttpParserError as error:
            raise HttpError(400, f"malformed HTTP/1.1: {error}") from error
        if callbacks.pipelined:
            raise HttpError(400, "pipelined HTTP/1.1 requests are not supported")


def _declares_body(headers: Headers) -> bool:
    for key, value in headers:
        lowered = key.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length":
            return value.strip() != b"0"
    return False


def request_head_bytes(method: str, target: str, headers: Headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    lines += [key + b": " + value for key, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def response_head_bytes(status: int, reason: str, headers: Headers) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}".encode("latin-1")]
    lines += [key + b": " + value for key, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never the last one: that is `LAST_CHUNK`)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
