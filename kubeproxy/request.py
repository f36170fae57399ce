"""What may go upstream, and how: the proxy's plan for one request, decided before any I/O.

A request must name a path on the configured API server (origin-form: `/...`); an absolute
URL, an authority or `*` is refused, and so is any target but the default upstream. The
headers that reach the API server are those `http1.TO_UPSTREAM` passes on, plus the proxy's
own `Host` and credentials and the body's framing (`Content-Length` as declared, else chunked).
`Impersonate-*` headers pass as received: the gateway polices them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from http1 import TO_UPSTREAM, Policy, request_head_bytes
from protocol import Header, RequestReceived

# Origin-form: a path (and query) starting with "/", no spaces or control characters.
_ORIGIN_FORM = re.compile(rb"/[^\x00-\x20\x7f]*")


class BadRequest(Exception):
    """The request cannot be forwarded as it is; the caller gets a 400 with this message."""


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """How one request goes upstream."""

    method: str
    target: str
    headers: list[Header]
    length: int | None
    """The body's Content-Length, when the caller declared one."""
    upgrade: bool

    def head(
        self, *, chunked: bool, authorization: bytes | None, host: bytes, base_path: str = ""
    ) -> bytes:
        """The request head for the API server, with the proxy's Host and credentials.

        `base_path` is the path of the server's URL (a Rancher-style
        `https://host/k8s/clusters/c-1`): every request target is below it."""
        headers = [(b"Host", host), *self.headers]
        if authorization is not None:
            headers.append((b"Authorization", authorization))
        if self.length is not None and not self.upgrade:
            headers.append((b"Content-Length", str(self.length).encode()))
        elif chunked:
            headers.append((b"Transfer-Encoding", b"chunked"))
        return request_head_bytes(self.method, base_path + self.target, headers)


_CONTENT_LENGTH_SIZE = len(b"content-length")


def plan_request(request: RequestReceived, *, policy: Policy = TO_UPSTREAM) -> RequestPlan:
    """The plan for `request`, or BadRequest saying why it cannot be forwarded; `policy`: the
    fields passed on (a peer replica's upstream: `http1.TO_PEER`)."""
    if request.target:
        raise BadRequest(
            f"unknown upstream target {request.target.decode('latin-1')!r}: "
            "only the plane's API server can be reached"
        )
    if _ORIGIN_FORM.fullmatch(request.path) is None:
        raise BadRequest("the request target must be a path (origin-form, starting with /)")
    # The length test first: it spares lowering every other name of every request.
    lengths = {
        value.strip()
        for name, value in request.headers
        if len(name) == _CONTENT_LENGTH_SIZE and name.lower() == b"content-length"
    }
    if len(lengths) > 1 or not all(value.isdigit() for value in lengths):
        raise BadRequest("invalid Content-Length")
    return RequestPlan(
        method=request.method.decode("ascii"),
        target=request.path.decode("latin-1"),
        headers=policy.apply(request.headers, upgrade=request.upgrade),
        length=int(lengths.pop()) if lengths else None,
        upgrade=request.upgrade,
    )
