"""Hostile HTTP/1.1 on the caller port after the request head, byte for byte over raw TLS.

Each case is an attack seen against the product: an agent that lies about its response's
length to write an answer into another plane's exchange, a response head that is not legal
for its request, bodies and trailers without end, a refused caller that keeps sending, a
header flood, a broken chunk, an upgrade that did not happen. The gateway must frame every
byte it writes, answer at once, and drop only the offender.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import pytest

from gateway.app import Gateway
from protocol import RequestReceived
from tests.kit.gateway_lab import PLANE_A, PLANE_B, AgentFactory, Pki
from tests.kit.waits import scaled
from tunnel import StreamResetError, TunnelStream

PROMPT = scaled(5)
"""Seconds within which "at once" must have happened (the request deadline is 10 s)."""
A = f"/planes/{PLANE_A.namespace}/{PLANE_A.name}/k8s"
B = f"/planes/{PLANE_B.namespace}/{PLANE_B.name}/k8s"
FORGED = b'HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{"forged":true}'


Response = tuple[int, dict[bytes, bytes], bytes]
"""Status, headers (lower-case names, the last of each), body."""


class Closed(Exception):
    """The gateway closed the connection (EOF or reset) before a whole response came."""


class RawCaller:
    """One TLS connection to the caller port, written and read byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_request: bool = False) -> Response:
        """The next whole response; raises Closed if the connection ends first."""
        async with asyncio.timeout(PROMPT):
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                status = int(lines[0].split(b" ")[1])
                headers = {}
                for line in lines[1:]:
                    if line:
                        key, _, value = line.partition(b":")
                        headers[key.strip().lower()] = value.strip()
                if head_request or status in (101, 204, 304):
                    return status, headers, b""
                if b"content-length" in headers:
                    body = await self.reader.readexactly(int(headers[b"content-length"]))
                elif headers.get(b"transfer-encoding") == b"chunked":
                    body = await self._chunked()
                else:
                    body = await self.reader.read()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as error:
                raise Closed(str(error)) from error
        return status, headers, body

    async def _chunked(self) -> bytes:
        body = b""
        while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
            body += await self.reader.readexactly(size)
            assert await self.reader.readexactly(2) == b"\r\n"
        assert await self.reader.readexactly(2) == b"\r\n"
        return body

    async def closed(self) -> bool:
        """True once the gateway has closed the connection (waits at most PROMPT)."""
        async with asyncio.timeout(PROMPT):
            try:
                while await self.reader.read(65536):
                    pass
            except (ConnectionError, ssl.SSLError):
                pass
        return True


class Raw(Protocol):
    """What the `raw` fixture is: a TLS connection to the callers' port, as a RawCaller."""

    def __call__(self, *, authenticated: bool = True) -> AbstractAsyncContextManager[RawCaller]: ...


@pytest.fixture
def raw(gateway: Gateway, pki: Pki) -> Raw:
    @asynccontextmanager
    async def connect(*, authenticated: bool = True) -> AsyncIterator[RawCaller]:
        context = pki.caller_ssl()
        if not authenticated:
            context = ssl.create_default_context(cadata=pki.gateway_ca.certificate_pem().decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.callers.port, ssl=context, server_hostname="localhost"
        )
        try:
            yield RawCaller(reader, writer)
        finally:
            writer.transport.abort()

    return connect


def get(path: str, *extra: bytes) -> bytes:
    return b"\r\n".join([f"GET {path} HTTP/1.1".encode(), b"Host: gw", *extra, b"", b""])


# -- finding 1: an agent must not write into the caller's next exchange -------------------------


async def _overrunning(stream: TunnelStream, request: RequestReceived) -> None:
    """Announces 2 bytes, then sends a whole forged response after them."""
    stream.respond(200, [(b"content-type", b"application/json"), (b"content-length", b"2")])
    await stream.write(b"{}")
    await stream.write(FORGED)
    stream.end()


async def _honest(stream: TunnelStream, request: RequestReceived) -> None:
    body = b'{"plane":"b"}'
    stream.respond(200, [(b"content-length", str(len(body)).encode())])
    await stream.write(body)
    stream.end()


async def test_an_agent_cannot_answer_the_next_request_of_another_plane(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with (
        connect_agent(PLANE_A, handler=_overrunning),
        connect_agent(PLANE_B, handler=_honest),
        raw() as caller,
    ):
        await caller.send(get(f"{A}/api/v1/namespaces"))
        answers = []
        try:
            answers.append(await caller.response())
            await caller.send(get(f"{B}/api/v1/namespaces"))
            answers.append(await caller.response())
        except Closed:
            pass  # the connection was cut: the caller knows the answer is broken
        assert all(b"forged" not in body for _, _, body in answers)
        if len(answers) == 2:
            assert answers[1][2] == b'{"plane":"b"}'


async def _underrunning(stream: TunnelStream, request: RequestReceived) -> None:
    stream.respond(200, [(b"content-length", b"10")])
    await stream.write(b"12345")
    stream.end()


async def test_a_body_shorter_than_announced_cuts_the_connection(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A, handler=_underrunning), raw() as caller:
        await caller.send(get(f"{A}/api"))
        with pytest.raises(Closed):
            await caller.response()


async def _switching(stream: TunnelStream, request: RequestReceived) -> None:
    stream.respond(101, [(b"upgrade", b"SPDY/3.1")])
    await stream.write(FORGED)
    stream.end()


@pytest.mark.parametrize(
    ("handler_headers", "status"),
    [
        ([(b"content-length", b"2"), (b"content-length", b"3")], 200),
        ([(b"content-length", b"2, 3")], 200),
        ([(b"content-length", b"-2")], 200),
        ([(b"content-length", b"2"), (b"transfer-encoding", b"chunked")], 200),
        ([], 100),
    ],
)
async def test_a_response_head_that_cannot_be_framed_is_a_502(
    raw: Raw, connect_agent: AgentFactory, handler_headers: list[tuple[bytes, bytes]], status: int
) -> None:
    async def lying(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(status, handler_headers)
        await stream.write(b"{}")
        stream.end()

    async with connect_agent(PLANE_A, handler=lying), raw() as caller:
        await caller.send(get(f"{A}/api"))
        code, headers, body = await caller.response()
        assert code == 502
        assert b'"kind":"Status"' in body
        assert headers[b"connection"] == b"close"
        assert await caller.closed()


async def test_a_101_for_a_request_that_did_not_ask_to_upgrade_is_a_502(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A, handler=_switching), raw() as caller:
        await caller.send(get(f"{A}/api"))
        code, _, body = await caller.response()
        assert code == 502
        assert b"forged" not in body
        assert await caller.closed()


async def _bodied(stream: TunnelStream, request: RequestReceived) -> None:
    status = int(request.path.decode().rsplit("/", 1)[1])
    stream.respond(status, [(b"content-type", b"text/plain")])
    await stream.write(FORGED)
    stream.end()


@pytest.mark.parametrize(("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304)])
async def test_a_response_that_has_no_body_gets_none(
    raw: Raw, connect_agent: AgentFactory, method: str, status: int
) -> None:
    async with connect_agent(PLANE_A, handler=_bodied), raw() as caller:
        await caller.send(f"{method} {A}/s/{status} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        received = await _until_closed(caller)
        assert received.startswith(f"HTTP/1.1 {status} ".encode()) or not received
        assert b"forged" not in received
        assert b"Transfer-Encoding" not in received


async def _until_closed(caller: RawCaller) -> bytes:
    received = b""
    async with asyncio.timeout(PROMPT):
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await caller.reader.read(65536):
                received += data
    return received


# -- finding 4: what a refused caller sends is never read ---------------------------------------


async def _endless(caller: RawCaller, piece: bytes) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
        while True:
            await caller.send(piece)
            # drain() does not yield while the transport takes bytes; once the gateway has cut
            # the connection, writes are dropped silently and the loop must still let the
            # connection's loss be delivered.
            await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("target", "extra", "status"),
    [
        ("/planes/ns-x/nowhere/k8s/api/v1/pods", b"", 404),
        ("/nothing/here", b"", 404),
        (f"{A}/api/v1/pods", b"Impersonate-User: admin\r\n", 403),
        (f"{B}/api/v1/pods", b"", 503),  # no agent of plane B is connected
    ],
)
async def test_a_refused_caller_is_answered_and_closed_without_its_body_read(
    raw: Raw, connect_agent: AgentFactory, target: str, extra: bytes, status: int
) -> None:
    async with connect_agent(PLANE_A), raw() as caller:
        await caller.send(
            f"POST {target} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n".encode()
            + extra
            + b"\r\n"
        )
        sending = asyncio.create_task(_endless(caller, b"10000\r\n" + b"x" * 0x10000 + b"\r\n"))
        try:
            code, headers, body = await caller.response()
            assert code == status
            assert headers[b"connection"] == b"close"
            assert b'"kind":"Status"' in body
            assert await caller.closed()
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending


async def _reads_whole_body(stream: TunnelStream, request: RequestReceived) -> None:
    try:
        while await stream.read():
            pass
    except StreamResetError:
        return
    stream.respond(200, [(b"content-length", b"2")])
    await stream.write(b"ok")
    stream.end()


async def test_an_endless_trailer_is_refused_with_431(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A, handler=_reads_whole_body), raw() as caller:
        await caller.send(
            f"POST {A}/api/v1/pods HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\n".encode()
        )
        sending = asyncio.create_task(_endless(caller, b"X-Trailer: " + b"y" * 1000 + b"\r\n"))
        try:
            code, headers, _ = await caller.response()
            assert code == 431
            assert headers[b"connection"] == b"close"
            assert await caller.closed()
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending


# -- finding 7: the request after the head -----------------------------------------------------


async def test_ten_thousand_tiny_headers_are_431_at_once(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A), raw() as caller:
        flood = b"".join(b"a%d:b\r\n" % i for i in range(10_000))
        await caller.send(get(f"{A}/echo")[:-2] + flood + b"\r\n")
        code, headers, body = await caller.response()
        assert code == 431
        assert b"fields" in body
        assert headers[b"connection"] == b"close"


async def test_a_bad_chunk_is_answered_at_once_and_the_stream_reset(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    opened, reset = asyncio.Event(), asyncio.Event()

    async def waits_for_body(stream: TunnelStream, request: RequestReceived) -> None:
        opened.set()
        try:
            while await stream.read():
                pass
        except StreamResetError:
            reset.set()
        except asyncio.CancelledError:
            reset.set()  # the session cancels the handler of a stream the gateway reset
            raise

    async with connect_agent(PLANE_A, handler=waits_for_body), raw() as caller:
        await caller.send(
            f"POST {A}/api/v1/pods HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n".encode()
        )
        async with asyncio.timeout(PROMPT):
            await opened.wait()
        await caller.send(b"ZZZ\r\n")
        code, _, body = await caller.response()  # within PROMPT, before the 10 s deadline
        assert code == 400
        assert b"chunk" in body
        async with asyncio.timeout(PROMPT):
            await reset.wait()
        assert await caller.closed()


async def test_a_bad_chunk_with_the_head_never_reaches_an_agent(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    reached = asyncio.Event()

    async def records(stream: TunnelStream, request: RequestReceived) -> None:
        reached.set()

    async with connect_agent(PLANE_A, handler=records), raw() as caller:
        await caller.send(
            f"POST {A}/api/v1/pods HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\nZZZ\r\n".encode()
        )
        code, headers, _ = await caller.response()
        assert (code, headers[b"connection"]) == (400, b"close")
        assert await caller.closed()
        assert not reached.is_set()


async def test_an_upgrade_answered_without_101_ends_the_connection(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A), raw() as caller:
        await caller.send(
            get(f"{A}/api/v1/pods/y/exec", b"Connection: Upgrade", b"Upgrade: SPDY/3.1")
        )
        code, headers, _ = await caller.response()
        assert code == 404
        assert headers[b"connection"] == b"close"
        # What the caller sends next is never read as a request (nor as the upgraded stream).
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await caller.send(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        assert await caller.closed()


async def test_a_101_still_upgrades(raw: Raw, connect_agent: AgentFactory) -> None:
    async with connect_agent(PLANE_A), raw() as caller:
        await caller.send(get(f"{A}/upgrade", b"Connection: Upgrade", b"Upgrade: SPDY/3.1"))
        code, headers, _ = await caller.response()
        assert (code, headers[b"upgrade"]) == (101, b"SPDY/3.1")
        await caller.send(b"raw bytes")
        async with asyncio.timeout(PROMPT):
            assert await caller.reader.readexactly(9) == b"RAW BYTES"


async def test_an_http_1_0_caller_gets_a_body_it_can_read(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A), raw() as caller:
        await caller.send(f"POST {A}/echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello".encode())
        code, headers, body = await caller.response()
        assert code == 200
        assert b"transfer-encoding" not in headers
        assert headers[b"connection"] == b"close"
        assert body == b"hello"


async def test_keep_alive_serves_requests_in_turn(raw: Raw, connect_agent: AgentFactory) -> None:
    async with connect_agent(PLANE_A), connect_agent(PLANE_B, handler=_honest), raw() as caller:
        for _ in range(3):
            await caller.send(
                f"POST {A}/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nhi".encode()
            )
            code, headers, body = await caller.response()
            assert (code, body, headers[b"transfer-encoding"]) == (200, b"hi", b"chunked")
            await caller.send(get(f"{B}/api"))
            assert (await caller.response())[2] == b'{"plane":"b"}'


async def _answers_at_once(stream: TunnelStream, request: RequestReceived) -> None:
    stream.respond(201, [(b"content-length", b"0")], end_stream=True)


async def test_an_answer_before_the_whole_body_ends_the_connection(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    # The rest of the body must never be read as the next request (nor the request replayed).
    async with connect_agent(PLANE_A, handler=_answers_at_once), raw() as caller:
        await caller.send(
            f"POST {A}/api/v1/pods HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n".encode()
            + get(f"{A}/api")
        )
        code, headers, _ = await caller.response()
        assert (code, headers[b"connection"]) == (201, b"close")
        assert await _until_closed(caller) == b""


# -- pipelining: refused cleanly when it comes at once, served in turn when it comes early ----


async def test_requests_pipelined_in_one_write_are_refused_cleanly(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    reached = asyncio.Event()

    async def records(stream: TunnelStream, request: RequestReceived) -> None:
        reached.set()
        await _honest(stream, request)

    async with connect_agent(PLANE_A, handler=records), raw() as caller:
        await caller.send(get(f"{A}/api") + get(f"{B}/api"))
        code, headers, body = await caller.response()
        assert (code, headers[b"connection"]) == (400, b"close")
        assert b"pipelined" in body
        assert await _until_closed(caller) == b""
        assert not reached.is_set()


async def test_a_request_sent_while_a_response_streams_is_served_after_it(
    raw: Raw, connect_agent: AgentFactory
) -> None:
    release = asyncio.Event()

    async def slow(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(200, [(b"content-type", b"text/plain")])
        await stream.write(b"first ")
        await release.wait()
        await stream.write(b"answer")
        stream.end()

    async with (
        connect_agent(PLANE_A, handler=slow),
        connect_agent(PLANE_B, handler=_honest),
        raw() as caller,
    ):
        await caller.send(get(f"{A}/api"))
        async with asyncio.timeout(PROMPT):
            await caller.reader.readuntil(b"first \r\n")  # the head and the first chunk
        await caller.send(get(f"{B}/api"))
        release.set()
        async with asyncio.timeout(PROMPT):
            assert await caller.reader.readuntil(b"0\r\n\r\n") == b"6\r\nanswer\r\n0\r\n\r\n"
        assert (await caller.response())[2] == b'{"plane":"b"}'
