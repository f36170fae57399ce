"""Several agents of one plane, and deadlines."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway.app import Gateway

A = "/planes/ns-a/plane-a/k8s"


async def test_streams_are_balanced_and_a_lost_replica_fails_only_its_own(
    gateway: Gateway, connect_agent, pki, caller: aiohttp.ClientSession, planes
) -> None:
    plane = planes[0]
    async with connect_agent(plane) as first, connect_agent(plane) as second:
        assert len(gateway.agents.agents(plane)) == 2
        watches = [await caller.get(f"{A}/forever?watch=1") for _ in range(6)]
        for watch in watches:
            assert await watch.content.readline() == b'{"type":"ADDED"}\n'
        # Least-loaded first: the six long requests are spread evenly.
        assert first.session.running_handlers == 3
        assert second.session.running_handlers == 3

        await first.stop()
        survivors = 0
        for watch in watches:
            try:
                await asyncio.wait_for(watch.content.read(1), timeout=0.5)
            except TimeoutError:
                survivors += 1  # still open, waiting for events that never come
            except aiohttp.ClientPayloadError:
                pass  # cut with its agent
            watch.close()
        assert survivors == 3
        # New requests go to the replica that is left.
        async with caller.post(f"{A}/echo", data=b"still here") as answer:
            assert await answer.read() == b"still here"


async def test_a_request_past_its_deadline_is_504(
    gateway: Gateway, connect_agent, caller: aiohttp.ClientSession, planes
) -> None:
    gateway.callers._settings = type(gateway.callers._settings)(
        host="127.0.0.1", port=0, request_timeout=0.5
    )
    stalled = asyncio.Event()

    async def never_answer(stream, request) -> None:
        stalled.set()
        await asyncio.Event().wait()

    async with connect_agent(planes[0], handler=never_answer) as agent:
        async with caller.get(f"{A}/api/v1/pods") as answer:
            assert answer.status == 504
            status = await answer.json()
        assert status["reason"] == "Timeout"
        assert stalled.is_set()
        # The agent was told: its handler is cancelled, its stream gone.
        await asyncio.wait_for(agent.session.wait_idle(), timeout=5)
