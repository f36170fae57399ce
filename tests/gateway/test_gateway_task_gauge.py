"""The gateway exports its asyncio task count, and it returns to its level after load."""

from __future__ import annotations

import aiohttp

from gateway.app import Gateway
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.waits import eventually

A = "/planes/ns-a/plane-a/k8s"
GAUGE = "planelink_gateway_asyncio_tasks"


def _tasks(gateway: Gateway) -> float:
    value = gateway.metrics.registry.get_sample_value(GAUGE)
    assert value is not None, f"{GAUGE} is not exported"
    return value


async def test_the_task_gauge_follows_streams_and_returns_to_its_level(
    gateway: Gateway,
    connect_agent: AgentFactory,
    pki: Pki,
    caller: aiohttp.ClientSession,
    planes: PlanePair,
) -> None:
    async with connect_agent(planes[0]):
        async with caller.post(f"{A}/echo", data=b"warm") as answer:
            assert await answer.read() == b"warm"
        before = _tasks(gateway)
        watches = [await caller.get(f"{A}/forever?watch=1") for _ in range(5)]
        for watch in watches:
            assert await watch.content.readline() == b'{"type":"ADDED"}\n'
        assert _tasks(gateway) >= before + 5  # at least one task per open request
        for watch in watches:
            watch.close()
        await caller.close()
        # Tasks end as the gateway notices the closed connections: no event says when.
        await eventually(
            lambda: _tasks(gateway) <= before,
            within=10,
            message=f"the gateway's tasks never fell back to {before}",
        )
