"""`http1.service.SmallHttpServer` with a handler of the test's own: what the handler is given,
and what a client gets when the handler fails."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from http1.service import TEXT, Answer, Request, SmallHttpServer
from tests.kit.waits import scaled


async def ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        async with asyncio.timeout(scaled(10)):
            return await reader.read()
    finally:
        writer.close()


@pytest.fixture
async def seen() -> AsyncIterator[tuple[list[Request], SmallHttpServer]]:
    requests: list[Request] = []

    async def handler(request: Request) -> Answer:
        requests.append(request)
        if request.path == "/fail":
            raise RuntimeError("a bug")
        return Answer(200, TEXT, b"fine\n", ((b"X-Extra", b"1"),))

    server = SmallHttpServer(handler, host="127.0.0.1", port=0)
    await server.start()
    yield requests, server
    await server.stop()


async def test_the_handler_gets_the_path_without_query_and_the_peer(
    seen: tuple[list[Request], SmallHttpServer],
) -> None:
    requests, server = seen
    answer = await ask(
        server.port, b"GET /a/b?c=d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nX-Extra: 1\r\n" in answer
    assert b"\r\nContent-Length: 5\r\n" in answer
    assert answer.endswith(b"\r\n\r\nfine\n")
    (request,) = requests
    assert (request.path, request.head.target, request.peer) == ("/a/b", "/a/b?c=d", "127.0.0.1")


async def test_a_failing_handler_answers_500_and_ends_the_connection(
    seen: tuple[list[Request], SmallHttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    _, server = seen
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        answer = await ask(server.port, b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert any("GET /fail failed" in record.getMessage() for record in caplog.records)
