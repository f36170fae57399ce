"""What may go upstream, and how: the proxy's policy for one request, decided before any I/O.

A request must name a path on the configured API server (origin-form: `/...`); an absolute
URL, an authority or `*` is refused, and so is any target but the default upstream. The
headers that reach the API server are the caller's end-to-end headers minus those the proxy
replaces: `Host` (its own upstream's), `Authorization` (its own credentials), the body's
framing (`Content-Length` as declared, else chunked) and `Expect` (the proxy does not do
100-continue). `Impersonate-*` headers pass as received: the gateway polices them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol import RequestReceived
from tunnel import http1

# Origin-form: a path (and query) starting with "/", no spaces or control characters.
_ORIGIN_FORM = re.compile(rb"/[^\x00-\x20\x7f]*")
_REPLACED = frozenset({b"host", b"authorization", b"content-length", b"expect"})


class BadRequest(Exception):
    """The request cannot be forwarded as it is; the caller gets a 400 with this message."""


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """How one request goes upstream."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    length: int | None
    """The body's Content-Length, when the caller declared one."""
    upgrade: bool

    def head(self, *, chunked: bool, authorization: bytes | None, host: bytes) -> bytes:
        """The request head for the API server, with the proxy's Host and credentials."""
        headers = [(b"Host", host), *self.headers]
        if authorization is not None:
            headers.append((b"Authorization", authorization))
        if self.length is not None and not self.upgrade:
            headers.append((b"Content-Length", str(self.length).encode()))
        elif chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        return http1.request_head_bytes(self.method, self.target, headers)


def plan_request(request: RequestReceived) -> RequestPlan:
    """The plan for `request`, or BadRequest saying why it cannot be forwarded."""
    if request.target:
        raise BadRequest(
            f"unknown upstream target {request.target.decode('latin-1')!r}: "
            "only the plane's API server can be reached"
        )
    if _ORIGIN_FORM.fullmatch(request.path) is None:
        raise BadRequest("the request target must be a path (origin-form, starting with /)")
    lengths = {
        value.strip() for name, value in request.headers if name.lower() == b"content-length"
    }
    if len(lengths) > 1 or not all(value.isdigit() for value in lengths):
        raise BadRequest("invalid Content-Length")
    kept = http1.end_to_end_headers(list(request.headers), keep_upgrade=request.upgrade)
    return RequestPlan(
        method=request.method.decode("ascii"),
        target=request.path.decode("latin-1"),
        headers=[(name, value) for name, value in kept if name.lower() not in _REPLACED],
        length=int(lengths.pop()) if lengths else None,
        upgrade=request.upgrade,
    )
