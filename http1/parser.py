"""HTTP/1.1 messages parsed from bytes: heads, body pieces and the bytes past an upgrade.

Parsing is llhttp's (through httptools: the parser Node.js uses); `MessageParser` turns its push
callbacks into state a reader can pull from, and bounds what a peer can make it hold: a head by
`max_head_bytes` and `max_header_fields` (HttpError 431), and the framing of a chunked body
between two body bytes (chunk extensions, the trailer section) by `max_head_bytes`, its trailer
fields by `max_header_fields` (431). Trailer fields are counted and dropped. A second message in
the same bytes (pipelining) is refused (400) rather than mis-framed.

Pure: it is fed bytes and never reads, writes or waits (`http1.reader` does that). It never
interprets paths, methods or header values beyond framing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import httptools

from protocol.headers import Header, Headers

__all__ = [
    "MAX_HEADER_FIELDS",
    "HttpError",
    "MessageParser",
    "RequestHead",
    "ResponseHead",
]

MAX_HEADER_FIELDS = 256
"""Header fields of one message (and, apart, trailer fields) at most, by default: each field
costs a tuple and two bytes objects, so a head of thousands of tiny fields costs far more than
its bytes; kubectl sends about a dozen."""


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
    http_version: str = "1.1"
    """"1.1" or "1.0": an HTTP/1.0 client cannot read a chunked body."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    headers: Headers
    keep_alive: bool
    upgrade: bool


class _Callbacks:
    """Collects what httptools reports while one chunk of bytes is fed."""

    __slots__ = (
        "begun",
        "body",
        "body_size",
        "complete",
        "head_done",
        "head_size",
        "headers",
        "keep_alive",
        "max_fields",
        "parser",
        "pipelined",
        "too_many_fields",
        "trailer_fields",
        "url",
    )

    def __init__(self, max_fields: int) -> None:
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.max_fields = max_fields
        self.too_many_fields = False
        self.trailer_fields = 0
        self.body_size = 0
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
        # Counted, never raised from: an exception here would surface as a parser error.
        if self.head_done:
            # A trailer field: nothing is forwarded from trailers, so none is kept.
            self.trailer_fields += 1
            self.too_many_fields |= self.trailer_fields > self.max_fields
            return
        if len(self.headers) >= self.max_fields:
            self.too_many_fields = True
            return
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
            self.body_size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


class MessageParser:
    """One message of `kind` at a time, from the bytes fed to it.

    `feed` the bytes as they arrive until `head_done`; take the head (`request_head` or
    `response_head`), then `body_piece` until it returns b"". `begin` starts the next message.
    """

    def __init__(
        self,
        kind: Literal["request", "response"],
        *,
        max_head_bytes: int = 64 * 1024,
        max_header_fields: int = MAX_HEADER_FIELDS,
    ) -> None:
        self._kind = kind
        self._max_head_bytes = max_head_bytes
        self._max_header_fields = max_header_fields
        self._head_fed = 0  # bytes fed since the message began, until its head is done
        self._framing_run = 0  # bytes of body framing fed since the last body byte
        self._callbacks = _Callbacks(max_header_fields)
        self._parser = self._new_parser()
        self._tail = b""  # bytes past an upgrade head: the first bytes of the raw stream
        self._upgraded = False
        self._no_body = False

    def _new_parser(self) -> httptools.HttpRequestParser | httptools.HttpResponseParser:
        parser: httptools.HttpRequestParser | httptools.HttpResponseParser
        if self._kind == "request":
            parser = httptools.HttpRequestParser(self._callbacks)
        else:
            parser = httptools.HttpResponseParser(self._callbacks)
        self._callbacks.parser = parser
        return parser

    @property
    def head_done(self) -> bool:
        return self._callbacks.head_done

    @property
    def upgraded(self) -> bool:
        return self._upgraded

    def take_upgrade_tail(self) -> bytes:
        """Bytes fed past the head of an upgrade: the start of the raw byte stream."""
        tail, self._tail = self._tail, b""
        return tail

    def begin(self) -> None:
        """Get ready for the next message, once the current one is over."""
        if self._callbacks.complete or self._no_body:
            # A fresh parser for each message: llhttp keeps state across messages.
            self._callbacks = _Callbacks(self._max_header_fields)
            self._parser = self._new_parser()
            self._head_fed = 0
            self._framing_run = 0
            self._no_body = False

    def request_head(self) -> RequestHead:
        parser = self._parser
        assert isinstance(parser, httptools.HttpRequestParser)
        callbacks = self._callbacks
        return RequestHead(
            method=parser.get_method().decode("ascii"),
            target=callbacks.url.decode("latin-1"),
            headers=callbacks.headers,
            keep_alive=callbacks.keep_alive,
            upgrade=self._upgraded,
            has_body=_declares_body(callbacks.headers),
            http_version=parser.get_http_version(),
        )

    def response_head(self, *, head_request: bool) -> ResponseHead:
        """The response's head; `head_request` says it answers a HEAD (so has no body)."""
        parser = self._parser
        assert isinstance(parser, httptools.HttpResponseParser)
        self._no_body = head_request
        return ResponseHead(
            status=parser.get_status_code(),
            headers=self._callbacks.headers,
            # After a HEAD the parser would wait for the announced body: never reuse it.
            keep_alive=self._callbacks.keep_alive and not head_request,
            upgrade=self._upgraded,
        )

    def body_piece(self, *, eof: bool) -> bytes | None:
        """The next piece of the body; b"" once it is complete; None until more is fed.
        `eof` says nothing more will be: a body cut short is then HttpError 400."""
        callbacks = self._callbacks
        if callbacks.body:
            return callbacks.body.popleft()
        if callbacks.complete or self._upgraded or self._no_body:
            return b""
        if not eof:
            return None
        if self._kind == "response" and not _declares_body(callbacks.headers):
            callbacks.complete = True  # a body delimited by the connection's close
            return b""
        raise HttpError(400, "the connection closed in the middle of a message body")

    def feed(self, data: bytes) -> None:
        """Parse `data`; raises HttpError when the peer broke HTTP/1.1 or a bound."""
        callbacks = self._callbacks
        in_head = not callbacks.head_done
        in_body = not in_head and not callbacks.complete
        body_before = callbacks.body_size
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
        if callbacks.too_many_fields:
            raise HttpError(431, f"the message has more than {self._max_header_fields} fields")
        if in_head:
            self._check_head(len(data))
        elif in_body:
            self._check_framing_run(len(data), body=callbacks.body_size > body_before)

    def _check_head(self, size: int) -> None:
        self._head_fed += size
        callbacks = self._callbacks
        if callbacks.head_done:
            too_large = callbacks.head_size > self._max_head_bytes
        else:
            too_large = self._head_fed > self._max_head_bytes
        if too_large:
            raise HttpError(431, f"the message head is larger than {self._max_head_bytes} bytes")

    def _check_framing_run(self, size: int, *, body: bool) -> None:
        # Per feed, not per byte: a feed with body bytes in it ends the run. What is bounded
        # is what can grow without the consumer taking anything — an endless chunk extension
        # or trailer section.
        self._framing_run = 0 if body else self._framing_run + size
        if self._framing_run > self._max_head_bytes:
            raise HttpError(
                431,
                f"chunk extensions or trailer fields run past {self._max_head_bytes} bytes",
            )


def _declares_body(headers: Headers) -> bool:
    for key, value in headers:
        lowered = key.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length":
            return value.strip() != b"0"
    return False
