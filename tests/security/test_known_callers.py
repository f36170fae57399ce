"""Hostile callers, byte for byte: path tricks, header injection, request smuggling.

Two stand-in agents answer for planes A and B and say which plane they are, so a test sees
where a request went. Requests are written as exact bytes on a TLS socket with the caller's
certificate (no client library normalises them first); each is checked against what a caller
can observe — the status, the Kubernetes `Status` body, whether the connection was closed, how
many responses came back — and against what each agent received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

import certs
from gateway.app import Gateway
from protocol import RequestReceived
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.waits import scaled
from tunnel import RequestHandler, StreamResetError, TunnelStream

TIMEOUT = scaled(10.0)
A = "/planes/ns-a/plane-a/k8s"
B = "/planes/ns-b/plane-b/k8s"


@dataclass
class Seen:
    """One request as an agent received it, and whether its body arrived whole."""

    path: str
    headers: dict[str, list[str]]
    body: bytes = b""
    reset: bool = False
    read: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the body has been read whole or the stream was reset."""


@dataclass
class Planes:
    """What each plane's agent received, by plane name (`plane-a`, `plane-b`)."""

    seen: dict[str, list[Seen]] = field(default_factory=lambda: {"plane-a": [], "plane-b": []})

    def reached(self) -> dict[str, list[str]]:
        return {name: [s.path for s in seen] for name, seen in self.seen.items()}


def _answering_as(plane: certs.PlaneRef, planes: Planes) -> RequestHandler:
    async def handler(stream: TunnelStream, request: RequestReceived) -> None:
        headers: dict[str, list[str]] = {}
        for key, value in request.headers:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        seen = Seen(path=request.path.decode("latin-1"), headers=headers)
        planes.seen[plane.name].append(seen)
        if request.upgrade:
            # Say which plane this is and end: no byte pipe (the caller's bytes would never end).
            stream.respond(200, [(b"x-plane", plane.name.encode()), (b"content-length", b"0")])
            stream.end()
            seen.read.set()
            return
        try:
            while chunk := await stream.read():
                seen.body += bytes(chunk)
        except StreamResetError:
            seen.reset = True
            raise
        finally:
            seen.read.set()
        body = f"{plane.name} {seen.path}".encode()
        stream.respond(
            200,
            [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                (b"x-plane", plane.name.encode()),
            ],
        )
        await stream.write(body)
        stream.end()

    return handler


@pytest.fixture
async def both_planes(connect_agent: AgentFactory, planes: PlanePair) -> AsyncIterator[Planes]:
    """An agent for each plane, each answering `<plane name> <path it received>`."""
    seen = Planes()
    plane_a, plane_b = planes
    async with (
        connect_agent(plane_a, handler=_answering_as(plane_a, seen)),
        connect_agent(plane_b, handler=_answering_as(plane_b, seen)),
    ):
        yield seen


@dataclass
class Answer:
    """Everything the gateway wrote on one connection, up to its close."""

    raw: bytes
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def responses(self) -> int:
        """How many responses the connection carried."""
        return self.raw.count(b"\r\nHTTP/1.1 ") + self.raw.startswith(b"HTTP/1.1 ")

    def assert_bad_request(self) -> None:
        """A 400 Status, alone on its connection (the gateway read nothing after it)."""
        assert self.status == 400, self.raw[:300]
        assert self.status_object()["reason"] == "BadRequest"
        assert self.responses == 1

    def status_object(self) -> dict[str, object]:
        assert self.headers.get("content-type") == "application/json", self.headers
        status: dict[str, object] = json.loads(self.body)
        assert status["kind"] == "Status"
        assert status["code"] == self.status
        return status


async def exchange(gateway: Gateway, pki: Pki, request: bytes) -> Answer:
    """Write `request` as is and read until the gateway closes the connection (a request that
    should keep it open says `Connection: close`). A gateway that never closes fails the test."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.callers.port, ssl=pki.caller_ssl(), server_hostname="127.0.0.1"
    )
    try:
        writer.write(request)
        async with asyncio.timeout(TIMEOUT):
            raw = b""
            while chunk := await reader.read(65536):
                raw += chunk
    finally:
        writer.close()
    return _parse(raw)


def _parse(raw: bytes) -> Answer:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = rest[: int(headers["content-length"])]
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
    else:
        body = rest
    return Answer(raw=raw, status=int(lines[0].split()[1]), headers=headers, body=body)


def _get(target: str | bytes, *extra: bytes) -> bytes:
    target = target.encode() if isinstance(target, str) else target
    return b"\r\n".join(
        [b"GET " + target + b" HTTP/1.1", b"Host: gateway", *extra, b"Connection: close", b"", b""]
    )


# -- path tricks ---------------------------------------------------------------------------------

_LONG = "x" * 100_000

PATH_TRICKS: dict[str, tuple[bytes, str | None]] = {
    # target: the plane it must reach (by the literal first segments), or None for a refusal
    "dot-segments-out-of-a": (f"{A}/../../ns-b/plane-b/k8s/api".encode(), "plane-a"),
    "dot-segments-out-of-b": (f"{B}/../../../../planes/ns-a/plane-a/k8s/api".encode(), "plane-b"),
    "dot-segments-before-k8s": (b"/planes/ns-a/plane-a/../../ns-b/plane-b/k8s/api", None),
    "dot-segments-as-plane": (b"/planes/ns-a/../ns-b/plane-b/k8s/api", None),
    "encoded-dots-after-k8s": (f"{A}/%2e%2e/%2e%2e/ns-b/plane-b/k8s/api".encode(), "plane-a"),
    "encoded-dots-as-namespace": (b"/planes/%2e%2e/ns-b/plane-b/k8s/api", None),
    "encoded-slash-in-plane": (b"/planes/ns-b%2fplane-b/x/k8s/api", None),
    "encoded-slash-in-name": (b"/planes/ns-a/plane-a%2F..%2F..%2Fns-b%2Fplane-b/k8s/api", None),
    "encoded-slash-after-k8s": (f"{A}/..%2f..%2fns-b%2fplane-b%2fk8s/api".encode(), "plane-a"),
    "encoded-prefix": (b"/%70lanes/ns-b/plane-b/k8s/api", None),
    "double-slash-first": (b"//planes/ns-b/plane-b/k8s/api", None),
    "double-slash-in-plane": (b"/planes//ns-b/plane-b/k8s/api", None),
    "double-slash-after-k8s": (f"{A}//api//v1".encode(), "plane-a"),
    "semicolon-in-namespace": (b"/planes/ns-a;ns-b/plane-b/k8s/api", None),
    "semicolon-in-name": (b"/planes/ns-a/plane-a;/k8s/api", None),
    "semicolon-after-k8s-segment": (b"/planes/ns-a/plane-a/k8s;/../ns-b/plane-b/k8s/api", None),
    "fragment": (f"{A}/api#/../../../ns-b/plane-b/k8s/api".encode(), "plane-a"),
    "query-naming-b": (f"{A}/api?x={B}/api".encode(), "plane-a"),
    "absolute-form": (f"https://127.0.0.1{B}/api".encode(), None),
    "absolute-form-http": (f"http://gateway{B}/api".encode(), None),
    "backslashes": (b"/planes\\ns-b\\plane-b\\k8s\\api", None),
    "backslash-after-k8s": (f"{A}\\..\\..\\ns-b\\plane-b\\k8s\\api".encode(), None),
    "upper-case": (b"/planes/NS-B/PLANE-B/k8s/api", None),
    "non-ascii-plane": ("/planes/ns-b/plane-\u0431/k8s/api".encode(), None),
    "non-ascii-after-k8s": (f"{A}/api/\u00e9".encode(), None),
    "overlong": (f"{B}/{_LONG}".encode(), None),
}


@pytest.mark.parametrize("case", sorted(PATH_TRICKS))
async def test_path_tricks_reach_only_the_literal_plane(
    gateway: Gateway, pki: Pki, both_planes: Planes, case: str
) -> None:
    target, plane = PATH_TRICKS[case]
    answer = await exchange(gateway, pki, _get(target))
    reached = both_planes.reached()
    if plane is None:
        assert answer.status in (400, 404, 414, 431), answer.raw[:300]
        assert answer.status_object()["reason"]
        assert reached == {"plane-a": [], "plane-b": []}
    else:
        assert answer.status == 200, answer.raw[:300]
        assert answer.headers["x-plane"] == plane
        assert [name for name, paths in reached.items() if paths] == [plane]
        assert answer.responses == 1


async def test_each_plane_answers_its_own_callers(
    gateway: Gateway, pki: Pki, both_planes: Planes
) -> None:
    for prefix, plane in ((A, "plane-a"), (B, "plane-b")):
        answer = await exchange(gateway, pki, _get(f"{prefix}/api/v1/namespaces"))
        assert (answer.status, answer.body) == (200, f"{plane} /api/v1/namespaces".encode())
    assert both_planes.reached() == {
        "plane-a": ["/api/v1/namespaces"],
        "plane-b": ["/api/v1/namespaces"],
    }


@pytest.mark.parametrize("target", [b"127.0.0.1:443", b"ns-b.plane-b:443", b"[::1]:6443"])
async def test_an_authority_form_connect_is_refused(
    gateway: Gateway, pki: Pki, both_planes: Planes, target: bytes
) -> None:
    answer = await exchange(
        gateway, pki, b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"
    )
    # 405 from the gateway, or 400 where llhttp already refuses the request line.
    assert answer.status in (400, 405), answer.raw[:300]
    assert answer.status_object()["reason"]
    assert answer.responses == 1
    assert both_planes.reached() == {"plane-a": [], "plane-b": []}


async def test_a_connect_to_a_plane_path_is_405(
    gateway: Gateway, pki: Pki, both_planes: Planes
) -> None:
    request = f"CONNECT {B}/api HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"
    answer = await exchange(gateway, pki, request.encode())
    assert answer.responses == 1
    assert answer.status == 405, answer.raw[:300]
    assert answer.status_object()["reason"] == "MethodNotAllowed"
    assert both_planes.reached() == {"plane-a": [], "plane-b": []}


@pytest.mark.parametrize(
    "hosts",
    [
        [b"Host: ns-b.plane-b", b"X-Forwarded-Host: ns-b.plane-b"],
        [b"Host: 127.0.0.1" + B.encode()],
        [b"Host: gateway", b"Host: ns-b.plane-b"],
        [],
    ],
    ids=["other-plane", "path-in-host", "two-hosts", "no-host"],
)
async def test_host_does_not_route_and_is_not_forwarded(
    gateway: Gateway, pki: Pki, both_planes: Planes, hosts: list[bytes]
) -> None:
    request = b"\r\n".join(
        [f"GET {A}/api HTTP/1.1".encode(), *hosts, b"Connection: close", b"", b""]
    )
    answer = await exchange(gateway, pki, request)
    assert both_planes.seen["plane-b"] == []
    if sum(h.startswith(b"Host:") for h in hosts) != 1:  # RFC 9112 §3.2: exactly one Host
        assert answer.status == 400, answer.raw[:300]
        assert both_planes.seen["plane-a"] == []
        return
    assert answer.headers["x-plane"] == "plane-a"
    (seen,) = both_planes.seen["plane-a"]
    assert "host" not in seen.headers


# -- header injection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"Impersonate-User: system:admin",
        b"Impersonate-Group: system:masters",
        b"Impersonate-Uid: 0",
        b"Impersonate-Extra-Scopes: cluster-admin",
        b"impersonate-user: system:admin",
        b"IMPERSONATE-GROUP: system:masters",
    ],
)
async def test_impersonation_from_a_caller_is_403(
    gateway: Gateway, pki: Pki, both_planes: Planes, header: bytes
) -> None:
    # Not a discovery path: those are refused in plain text, for kubectl's sake.
    answer = await exchange(gateway, pki, _get(f"{A}/api/v1/namespaces", header))
    assert answer.status == 403
    status = answer.status_object()
    assert status["reason"] == "Forbidden"
    # Named as HTTP/1.1 spells it, whatever case the caller used.
    assert header.split(b":")[0].decode().title() in str(status["message"])
    assert both_planes.reached() == {"plane-a": [], "plane-b": []}


async def test_credentials_never_reach_the_agent(
    gateway: Gateway, pki: Pki, both_planes: Planes
) -> None:
    answer = await exchange(
        gateway,
        pki,
        _get(
            f"{A}/api",
            b"Authorization: Bearer one",
            b"authorization: Basic dHdvOnR3bw==",
            b"Proxy-Authorization: Bearer three",
            b"X-Kept: yes",
        ),
    )
    assert answer.status == 200
    (seen,) = both_planes.seen["plane-a"]
    assert "authorization" not in seen.headers
    assert "proxy-authorization" not in seen.headers
    assert seen.headers["x-kept"] == ["yes"]


# -- malformed heads and request smuggling -------------------------------------------------------

_SMUGGLED = f"GET {B}/api/v1/secrets HTTP/1.1\r\nHost: gateway\r\n\r\n".encode()

REFUSED_HEADS: dict[str, tuple[bytes, bytes]] = {
    # case: (header lines of a POST to plane A, what follows the head)
    "cr-in-value": (b"X-A: one\rImpersonate-User: system:admin", b""),
    "lf-in-value": (b"X-A: one\nImpersonate-User: system:admin", b""),
    "nul-in-value": (b"X-A: one\x00two", b""),
    "obs-fold": (b"X-A: one\r\n  Impersonate-User: system:admin", b""),
    "space-before-colon": (b"Impersonate-User : system:admin", b""),
    "tab-before-colon": (b"X-A\t: one", b""),
    "space-in-name": (b"X A: one", b""),
    "no-colon": (b"X-A one", b""),
    "empty-name": (b": one", b""),
    # Two framings of one body: a front end and the gateway could disagree on where the
    # next request starts, so none of these may be relayed at all.
    "content-length-and-chunked": (
        b"Content-Length: 5\r\nTransfer-Encoding: chunked",
        b"0\r\n\r\n" + _SMUGGLED,
    ),
    "chunked-and-content-length": (
        b"Transfer-Encoding: chunked\r\nContent-Length: 5",
        b"0\r\n\r\n" + _SMUGGLED,
    ),
    "two-content-lengths": (b"Content-Length: 5\r\nContent-Length: 60", b"hello" + _SMUGGLED),
    "content-length-list": (b"Content-Length: 5, 60", b"hello" + _SMUGGLED),
    "chunked-then-identity": (b"Transfer-Encoding: chunked, identity", b"0\r\n\r\n" + _SMUGGLED),
    "xchunked": (b"Transfer-Encoding: xchunked", b"0\r\n\r\n" + _SMUGGLED),
    "chunked-twice": (
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        b"0\r\n\r\n" + _SMUGGLED,
    ),
    "negative-length": (b"Content-Length: -1", _SMUGGLED),
    "plus-length": (b"Content-Length: +5", b"hello" + _SMUGGLED),
    "hex-length": (b"Content-Length: 0x5", b"hello" + _SMUGGLED),
    "space-in-length": (b"Content-Length: 5 0", b"hello" + _SMUGGLED),
}


@pytest.mark.parametrize("case", sorted(REFUSED_HEADS))
async def test_a_malformed_or_ambiguous_head_is_400_and_close(
    gateway: Gateway, pki: Pki, both_planes: Planes, case: str
) -> None:
    # No `Connection: close`: the gateway must close by itself after refusing.
    headers, rest = REFUSED_HEADS[case]
    request = f"POST {A}/api HTTP/1.1\r\nHost: gateway\r\n".encode() + headers + b"\r\n\r\n" + rest
    answer = await exchange(gateway, pki, request)
    answer.assert_bad_request()
    assert both_planes.reached() == {"plane-a": [], "plane-b": []}


BAD_CHUNKS = {
    "size-with-junk": b"5x\r\nhello\r\n0\r\n\r\n",
    "size-overflow": b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "negative-size": b"-5\r\nhello\r\n0\r\n\r\n",
    "data-longer-than-size": b"3\r\nhello\r\n0\r\n\r\n",
    "no-crlf-after-data": b"5\r\nhelloXX0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(BAD_CHUNKS))
async def test_a_bad_chunk_is_400_and_close_and_the_agent_sees_no_whole_body(
    gateway: Gateway, pki: Pki, both_planes: Planes, case: str
) -> None:
    request = (
        f"POST {A}/api HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + BAD_CHUNKS[case]
        + _SMUGGLED
    )
    answer = await exchange(gateway, pki, request)
    answer.assert_bad_request()
    # The head may have been relayed before the body went wrong; then its stream is reset,
    # never ended as if the body were whole, and nothing after it reaches any plane.
    assert both_planes.seen["plane-b"] == []
    for seen in both_planes.seen["plane-a"]:
        assert seen.path == "/api"
    assert len(both_planes.seen["plane-a"]) <= 1
    for seen in both_planes.seen["plane-a"]:
        async with asyncio.timeout(TIMEOUT):
            await seen.read.wait()
        assert seen.reset, seen
