"""REPLICAS through a session pair: the gateway's session sends, the agent's reports each set."""

from __future__ import annotations

import asyncio

import pytest

from protocol import CAPABILITY_REPLICAS, Connection, LocalProtocolError, Role
from tests.kit.waits import wait_for
from tunnel import SessionClosed, TunnelSession, memory_channel_pair


async def _pair(
    *capabilities: str,
) -> tuple[TunnelSession, TunnelSession, asyncio.Queue[frozenset[str]], list[asyncio.Task[str]]]:
    gateway_end, agent_end = memory_channel_pair()
    heard: asyncio.Queue[frozenset[str]] = asyncio.Queue()
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY, identity={"gateway-id": "gw-0"}))
    agent = TunnelSession(
        agent_end,
        Connection(Role.AGENT, capabilities=capabilities),
        replicas_handler=heard.put_nowait,
    )
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await wait_for(gateway.wait_ready())
    await wait_for(agent.wait_ready())
    return gateway, agent, heard, tasks


async def test_each_set_the_gateway_sends_reaches_the_agents_handler() -> None:
    gateway, agent, heard, tasks = await _pair(CAPABILITY_REPLICAS)
    before = agent.replicas
    assert before is None  # nothing yet: the set is the gateway's own id
    gateway.send_replicas(frozenset({"gw-0", "gw-1"}))
    assert await wait_for(heard.get()) == {"gw-0", "gw-1"}
    gateway.send_replicas(frozenset({"gw-1"}))
    assert await wait_for(heard.get()) == {"gw-1"}
    assert agent.replicas == frozenset({"gw-1"})
    gateway.close("test over")
    await asyncio.gather(*tasks)
    with pytest.raises(SessionClosed):
        gateway.send_replicas(frozenset({"gw-0"}))


async def test_an_agent_that_did_not_ask_is_never_sent_a_set() -> None:
    gateway, agent, _, tasks = await _pair("upgrade")
    with pytest.raises(LocalProtocolError, match="did not offer 'replicas'"):
        gateway.send_replicas(frozenset({"gw-0", "gw-1"}))
    assert not gateway.closed
    assert not agent.closed
    gateway.close("test over")
    await asyncio.gather(*tasks)
