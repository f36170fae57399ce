"""The agent's health port, with raw HTTP/1.1: what probes and scrapes get, and what a peer that
sends nonsense, stalls or floods the port gets."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from agent import health
from agent.health import HealthServer, TunnelState
from agent.metrics import AgentMetrics
from tests.kit.waits import scaled


@pytest.fixture
async def server() -> AsyncIterator[tuple[HealthServer, TunnelState]]:
    state = TunnelState()
    served = HealthServer(state=state, metrics=AgentMetrics(), host="127.0.0.1", port=0)
    await served.start()
    yield served, state
    await served.stop()


async def ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        async with asyncio.timeout(scaled(10)):
            answer = await reader.read()  # to the close
    except ConnectionResetError:
        answer = b""  # closed with our bytes unread
    writer.close()
    return answer


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n".encode()


async def test_the_three_endpoints(server: tuple[HealthServer, TunnelState]) -> None:
    served, state = server
    assert (await ask(served.port, get("/healthz"))).endswith(b"\r\n\r\nok\n")
    not_ready = await ask(served.port, get("/readyz"))
    assert not_ready.startswith(b"HTTP/1.1 503 ")
    assert not_ready.endswith(b"not ready: not connected yet\n")
    state.set_up()
    assert (await ask(served.port, get("/readyz"))).endswith(b"ok: tunnel up\n")
    metrics = await ask(served.port, get("/metrics?x=1"))
    assert b"Content-Type: text/plain; version=" in metrics
    assert b"\n# HELP planelink_agent_" in metrics
    head = await ask(served.port, get("/healthz", "HEAD"))
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: 3\r\n" in head
    assert head.endswith(b"\r\n\r\n")  # no body for a HEAD


async def test_keep_alive_serves_several_requests_on_one_connection(
    server: tuple[HealthServer, TunnelState],
) -> None:
    served, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    for _ in range(3):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        async with asyncio.timeout(scaled(10)):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(3) == b"ok\n"
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (get("/nope"), b"404"),
        (get("/healthz", "DELETE"), b"405"),
        (b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", b"405"),
    ],
)
async def test_what_is_not_served(
    server: tuple[HealthServer, TunnelState], request_bytes: bytes, status: bytes
) -> None:
    served, _ = server
    answer = await ask(served.port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status)


async def test_garbage_and_oversized_heads_end_the_connection(
    server: tuple[HealthServer, TunnelState],
) -> None:
    served, _ = server
    assert await ask(served.port, b"\x16\x03\x01 not http\r\n\r\n") == b""
    huge = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
    assert await ask(served.port, huge) == b""
    assert (await ask(served.port, get("/healthz"))).endswith(b"ok\n")


async def test_a_slow_head_is_cut_and_connections_are_bounded() -> None:
    limits = dataclasses.replace(health.LIMITS, head_timeout=scaled(0.5))
    served = HealthServer(
        state=TunnelState(), metrics=AgentMetrics(), host="127.0.0.1", port=0, limits=limits
    )
    await served.start()
    try:
        await _slow_head_and_bound(served)
    finally:
        await served.stop()


async def _slow_head_and_bound(served: HealthServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
    async with asyncio.timeout(scaled(10)):
        assert await reader.read() == b""
    writer.close()
    # Past the bound, a connection is closed unanswered; the ones held keep their place.
    held = [
        await asyncio.open_connection("127.0.0.1", served.port)
        for _ in range(health.LIMITS.max_connections)
    ]
    for _, held_writer in held:
        held_writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    for held_reader, _ in held:
        async with asyncio.timeout(scaled(10)):
            await held_reader.readuntil(b"ok\n")
    assert await ask(served.port, get("/healthz")) == b""
    for _, held_writer in held:
        held_writer.close()
