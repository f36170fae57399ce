"""How a relayed response is framed for an HTTP/1.1 client: the head, then every body byte.

A response that arrives through the tunnel is a status, headers and a stream of unframed bytes
from a peer that is not trusted to keep its word. A proxy that passes the peer's
`Content-Length` along and then writes whatever bytes come lets that peer end the response
early and write a whole second response into the client's connection, which the client takes
as the answer to its *next* request — possibly one for somebody else. So the framer decides
the framing itself and counts: a body never runs past the length the head announced, a body
that ends short is an error, a response that must not have a body gets none, an interim (1xx)
answer is never passed on as a final one and a 101 only answers a request that asked to
upgrade. Header names and values are checked once more before they are written, so nothing the
peer sends can start a new line on the client's connection.

`ResponseFramer` is pure: it takes a head and body pieces and hands back bytes to write. It
never writes, reads or waits; the relay around it does.
"""

from __future__ import annotations

import re

from http1.forwarding import TO_CALLER, header_value
from http1.writer import LAST_CHUNK, reason_phrase, response_head_bytes
from protocol.headers import Header, HeaderBlockError, Headers, check_token, check_value

__all__ = ["FramingError", "ResponseFramer", "content_length"]

_DIGITS = re.compile(rb"[0-9]{1,18}")
_NO_BODY_STATUSES = frozenset({204, 304})
_CRLF = b"\r\n"


class FramingError(Exception):
    """The peer's response cannot be framed honestly: refuse it (502) or cut the connection."""


def content_length(headers: Headers) -> int | None:
    """The one length `Content-Length` fields declare (repeats must agree), or None if absent.

    Raises FramingError for a value that is not a decimal number or for conflicting values.
    """
    found: int | None = None
    for key, value in headers:
        if key.lower() != b"content-length":
            continue
        for item in value.split(b","):
            digits = item.strip(b" \t")
            if _DIGITS.fullmatch(digits) is None:
                raise FramingError(f"Content-Length {value[:40]!r} is not a decimal length")
            length = int(digits)
            if found is not None and found != length:
                raise FramingError("conflicting Content-Length values")
            found = length
    return found


class ResponseFramer:
    """The framing of one response to one request, and the count of its body bytes.

    Construct it from the peer's head (raises FramingError if the head is unacceptable), write
    `head_bytes()`, then `body(piece)` for each piece received and `end()` when the peer ends.
    `body` raises FramingError before returning any byte past the announced length; `end`
    raises it if the body came up short. After either error the client's connection must be
    closed: what it received is not a whole response.
    """

    __slots__ = ("_headers", "chunked", "keep_alive", "remaining", "status")

    def __init__(
        self,
        *,
        method: str,
        status: int,
        headers: Headers,
        upgrade_requested: bool,
        keep_alive: bool,
        http_1_0: bool = False,
        unframed: bool = False,
        own: Headers = (),
    ) -> None:
        """`own`: the proxy's own fields, added to those TO_CALLER passes on. `unframed`: the
        client's protocol frames the body itself (HTTP/2: DATA frames, END_STREAM), so pieces
        are counted but never chunk-coded, and no framing or connection field is added."""
        _check_head(status, headers, upgrade_requested=upgrade_requested)
        declared = content_length(headers)
        if declared is not None and header_value(headers, b"transfer-encoding") is not None:
            raise FramingError("the response has both Content-Length and Transfer-Encoding")
        self.status = status
        self.chunked = False
        self.keep_alive = keep_alive and status != 101
        self.remaining: int | None = declared
        kept = [*TO_CALLER.apply(headers, upgrade=status == 101), *own]
        if method == "HEAD" or status in _NO_BODY_STATUSES or status == 101:
            self.remaining = 0
            # A HEAD or 304 answer may state the length a GET would have had; a 204 may not.
            if declared is not None and status not in (101, 204):
                kept.append((b"Content-Length", b"%d" % declared))
        elif declared is not None:
            kept.append((b"Content-Length", b"%d" % declared))
        elif unframed:
            pass
        elif http_1_0:
            # No chunked coding in HTTP/1.0: the body ends where the connection does.
            self.keep_alive = False
        else:
            self.chunked = True
            kept.append((b"Transfer-Encoding", b"chunked"))
        if status != 101 and not unframed:
            if not self.keep_alive:
                kept.append((b"Connection", b"close"))
            elif http_1_0:
                kept.append((b"Connection", b"keep-alive"))
        self._headers = kept

    @property
    def headers(self) -> list[Header]:
        """The headers written to the client, framing headers included."""
        return self._headers

    def head_bytes(self) -> bytes:
        return response_head_bytes(self.status, reason_phrase(self.status), self._headers)

    def body(self, piece: bytes | memoryview) -> list[bytes | memoryview]:
        """The bytes that carry `piece` to the client (empty for an empty piece)."""
        size = len(piece)
        if not size:
            return []
        if self.remaining is not None:
            if size > self.remaining:
                raise FramingError(
                    f"the body runs {size - self.remaining} bytes past its announced length"
                )
            self.remaining -= size
            return [piece]
        if self.chunked:
            return [b"%x\r\n" % size, piece, _CRLF]
        return [piece]

    def end(self) -> bytes:
        """The bytes that end the body; raises FramingError if it fell short of its length."""
        if self.remaining:
            raise FramingError(f"the body ended {self.remaining} bytes short of its length")
        return LAST_CHUNK if self.chunked else b""


def _check_head(status: int, headers: Headers, *, upgrade_requested: bool) -> None:
    if not 100 <= status <= 999:
        raise FramingError(f"status {status} is not a three-digit code")
    if status == 101 and not upgrade_requested:
        raise FramingError("status 101 answers a request that did not ask to upgrade")
    if 100 <= status < 200 and status != 101:
        raise FramingError(f"interim status {status} cannot be relayed as the final response")
    for key, value in headers:
        try:
            check_token("header name", key)
            check_value("header value", value)
        except HeaderBlockError as error:
            raise FramingError(str(error)) from error
