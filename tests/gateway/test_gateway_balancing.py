"""Several agents of one plane, and deadlines."""

from __future__ import annotations

import asyncio
from asyncio import FIRST_COMPLETED

import aiohttp

from gateway.app import Gateway
from protocol import RequestReceived
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.waits import wait_for, within
from tunnel import TunnelStream

A = "/planes/ns-a/plane-a/k8s"


async def test_streams_are_balanced_and_a_lost_replica_fails_only_its_own(
    gateway: Gateway,
    connect_agent: AgentFactory,
    pki: Pki,
    caller: aiohttp.ClientSession,
    planes: PlanePair,
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
        # The gateway lets go of the stopped agent. (Awaited directly, not through wait_for or
        # a task: the change may come before a task's first step, and it would wait for the next.)
        async with within(10):
            while len(gateway.agents.agents(plane)) > 1:
                await gateway.agents.wait_for_change()
        # Its three streams are cut: those reads fail. The other three stay open, waiting for
        # events that never come: their reads are still pending once the three cuts came.
        pending = {asyncio.ensure_future(watch.content.read(1)) for watch in watches}
        cut: set[asyncio.Future[bytes]] = set()
        try:
            async with within(10):
                while len(cut) < 3:
                    done, pending = await asyncio.wait(pending, return_when=FIRST_COMPLETED)
                    cut |= done
            for read in cut:
                assert isinstance(read.exception(), aiohttp.ClientPayloadError), read
            assert len(pending) == 3
            assert second.session.running_handlers == 3
            # New requests go to the replica that is left...
            async with caller.post(f"{A}/echo", data=b"still here") as answer:
                assert await answer.read() == b"still here"
            # ...and all the while the survivors stayed open.
            assert not any(read.done() for read in pending)
            assert second.session.running_handlers == 3
        finally:
            for read in pending:
                read.cancel()
            for watch in watches:
                watch.close()


async def test_a_request_past_its_deadline_is_504(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    gateway.callers._settings = type(gateway.callers._settings)(
        host="127.0.0.1", port=0, request_timeout=0.5
    )
    stalled = asyncio.Event()

    async def never_answer(stream: TunnelStream, request: RequestReceived) -> None:
        stalled.set()
        await asyncio.Event().wait()

    async with connect_agent(planes[0], handler=never_answer) as agent:
        async with caller.get(f"{A}/api/v1/pods") as answer:
            assert answer.status == 504
            status = await answer.json()
        assert status["reason"] == "Timeout"
        assert stalled.is_set()
        # The agent was told: its handler is cancelled, its stream gone.
        await wait_for(agent.session.wait_idle(), 5)
