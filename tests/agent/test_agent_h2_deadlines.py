"""The proxy's deadlines over HTTP/2: waiting for a stream (every connection full) and for the
response head are each bounded by the response timeout, and each says which one passed. The
HTTP/2 pool is a stand-in that never answers; the gateway side is a tunnel session in memory.

Waits scale with PLANELINK_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent import AgentMetrics
from kubeproxy import ConnectionPool, Proxy, Upstream
from protocol import Connection, RequestReceived, Role
from tests.kit.waits import wait_for
from tunnel import TunnelSession, TunnelStream, memory_channel_pair

RESPONSE_TIMEOUT = 0.2
"""Short, so the tests are quick: what they assert is which deadline answered."""


class _SilentExchange:
    """A stream whose response head never comes."""

    def __init__(self) -> None:
        self.cancelled = False

    async def response_head(self) -> object:
        await asyncio.Event().wait()
        raise AssertionError

    def cancel(self, reason: str = "") -> None:
        self.cancelled = True


class _SilentPool:
    """An HTTP/2 pool whose connections are all full (`full`) or whose streams never answer."""

    protocol = "h2"

    def __init__(self, *, full: bool) -> None:
        self.full = full
        self.exchanges: list[_SilentExchange] = []

    async def request(self, *args: object, **kwargs: object) -> _SilentExchange:
        if self.full:
            await asyncio.Event().wait()
        exchange = _SilentExchange()
        self.exchanges.append(exchange)
        return exchange


@pytest.fixture
async def gateway_to(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[TunnelSession, _SilentPool]]:
    h2_pool = _SilentPool(full=request.param)
    pool = ConnectionPool(Upstream(scheme="http", host="127.0.0.1", port=1))  # unused
    proxy = Proxy(
        pool=pool,
        h2_pool=h2_pool,  # type: ignore[arg-type]
        metrics=AgentMetrics(),
        response_timeout=RESPONSE_TIMEOUT,
    )

    async def handler(stream: TunnelStream, received: RequestReceived) -> None:
        await proxy.handle(stream, received)

    gateway_end, agent_end = memory_channel_pair()
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY))
    agent = TunnelSession(agent_end, Connection(Role.AGENT), request_handler=handler)
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    yield gateway, h2_pool
    gateway.close("test over")
    await asyncio.gather(*tasks)
    pool.close()


async def _answer(gateway: TunnelSession) -> tuple[int, str]:
    stream = gateway.open_stream(method="GET", path="/api/v1/pods", end_stream=True)
    response = await wait_for(stream.response(), 10)
    body = b""
    while piece := await wait_for(stream.read(), 10):
        body += piece
    return response.status, json.loads(body)["message"]


@pytest.mark.parametrize("gateway_to", [False], indirect=True)
async def test_no_response_head_in_time_is_a_504_that_says_so(
    gateway_to: tuple[TunnelSession, _SilentPool],
) -> None:
    gateway, h2_pool = gateway_to
    status, message = await _answer(gateway)
    assert status == 504
    assert "no response from the API server within" in message
    assert [exchange.cancelled for exchange in h2_pool.exchanges] == [True]


@pytest.mark.parametrize("gateway_to", [True], indirect=True)
async def test_no_stream_in_time_is_a_504_that_says_so(
    gateway_to: tuple[TunnelSession, _SilentPool],
) -> None:
    gateway, _ = gateway_to
    status, message = await _answer(gateway)
    assert status == 504
    assert "no stream to the API server within" in message
