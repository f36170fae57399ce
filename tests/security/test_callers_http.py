"""Hostile HTTP/1.1 on the caller port after the request head, byte for byte over raw TLS.

Each case is an attack seen against the product: an agent that lies about its response's
length to write an answer into another plane's exchange, a response head that is not legal
for its request, bodies and trailers without end, a refused caller that keeps sending, a
header flood, a broken chunk, an upgrade that did not happen. The gateway must frame every
byte it writes, answer at once, and drop only the offender.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from gateway.app import Gateway
from protocol import RequestReceived
from tests.gateway.conftest import PLANE_A, PLANE_B, AgentFactory, Pki
from tunnel import TunnelStream

FACTOR = float(os.environ.get("PLANELINK_TEST_TIMEOUT_FACTOR", "1"))
PROMPT = 5 * FACTOR
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


Raw = Callable[..., AbstractAsyncContextManager[RawCaller]]


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
