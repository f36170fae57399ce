"""HTTP/1.1 messages as bytes to write: heads, status lines and chunked-body framing.

Pure: it builds bytes and never writes them. It does not check header names or values (the
framer does, for what a peer sent) and never decides a message's framing (its caller does).
"""

from __future__ import annotations

from http import HTTPStatus

from protocol.headers import Headers

__all__ = ["LAST_CHUNK", "chunk", "reason_phrase", "request_head_bytes", "response_head_bytes"]

LAST_CHUNK = b"0\r\n\r\n"
"""The end of a chunked body (no trailer fields: none are ever forwarded)."""


def request_head_bytes(method: str, target: str, headers: Headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1")]
    lines += [key + b": " + value for key, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def response_head_bytes(status: int, reason: str, headers: Headers) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}".encode("latin-1")]
    lines += [key + b": " + value for key, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def reason_phrase(status: int) -> str:
    """The reason phrase written on a status line ("Unknown" for codes without one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (never the last one: that is `LAST_CHUNK`)."""
    return b"%x\r\n%b\r\n" % (len(data), data)
