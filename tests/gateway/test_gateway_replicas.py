"""The agent listener names its replica in HELLO and tells listening agents the live replicas.

Two in-process `Gateway`s share presence by hand (`peers.replace_peers` with each other's
`local()`), as the Leases or presence files would; a stand-in agent records every frame the
gateway sends it, so "nothing new on the wire" is checked on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

import certs
from agent import Agent, AgentSettings
from gateway.app import Gateway, GatewaySettings
from protocol import CAPABILITY_REPLICAS, Connection, Role
from protocol.frames import FrameType, Replicas, split_message
from tests.kit.gateway_lab import Pki
from tests.kit.round_robin import RoundRobin
from tests.kit.waits import eventually, scaled, wait_for, within
from tunnel import Heartbeat, MessageChannel, TunnelSession, WebSocketChannel
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

PLANE = certs.plane_ref("ns-a", "plane-a")


class _Recording:
    """A channel that remembers the type of every frame received."""

    def __init__(self, inner: MessageChannel) -> None:
        self._inner = inner
        self.received: list[FrameType] = []
        self.replicas: list[frozenset[str]] = []

    async def send(self, message: bytes) -> None:
        await self._inner.send(message)

    async def recv(self) -> bytes:
        message = await self._inner.recv()
        view = memoryview(message)
        for _, ftype, flags, stream_id, start, end in split_message(view, 1 << 24):
            self.received.append(FrameType(ftype))
            if ftype == FrameType.REPLICAS:
                frame = Replicas.decode(flags, stream_id, view, start, end)
                self.replicas.append(frozenset(rid.decode() for rid in frame.ids))
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.close(code, reason)

    def abort(self) -> None:
        self._inner.abort()


@dataclass
class _Agent:
    session: TunnelSession
    wire: _Recording
    task: asyncio.Task[str]
    sets: list[frozenset[str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _agent(
    gateway: Gateway, pki: Pki, *, capabilities: tuple[str, ...] = (CAPABILITY_REPLICAS,)
) -> AsyncIterator[_Agent]:
    url = f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={PLANE}"
    websocket = await connect(
        url,
        ssl=pki.agent_ssl(pki.agent_cert(PLANE)),
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        ping_interval=None,
    )
    wire = _Recording(WebSocketChannel(websocket))
    sets: list[frozenset[str]] = []
    session = TunnelSession(
        wire,
        Connection(
            Role.AGENT,
            identity={IDENTITY_PLANE: str(PLANE), IDENTITY_AGENT_ID: "agent-1"},
            capabilities=capabilities,
        ),
        heartbeat=Heartbeat(1, 5),
        replicas_handler=sets.append,
    )
    task = asyncio.create_task(session.run())
    agent = _Agent(session, wire, task, sets)
    try:
        async with within(10):
            await session.wait_ready()
            while not gateway.agents.agents(PLANE):
                await gateway.agents.wait_for_change()
        yield agent
    finally:
        session.close("test over")
        await task


@pytest.fixture
async def second_gateway(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> AsyncIterator[Gateway]:
    gateway = Gateway(loopback_gateway_settings(pki.directory))
    await gateway.start()
    yield gateway
    await gateway.stop()


async def _next_ping(agent: _Agent) -> None:
    """Wait for the gateway's next heartbeat PING (one a second): whatever the gateway queued
    before it (control frames go out in order) has arrived by then."""
    before = agent.wire.received.count(FrameType.PING)
    await eventually(
        lambda: agent.wire.received.count(FrameType.PING) > before,
        within=10,
        message="no PING from the gateway",
    )


async def test_the_hello_names_the_replica(gateway: Gateway, pki: Pki) -> None:
    async with _agent(gateway, pki) as agent:
        assert agent.session.peer is not None
        assert agent.session.peer.identity["gateway-id"] == gateway.replica_id


async def test_with_one_replica_nothing_new_is_on_the_wire(gateway: Gateway, pki: Pki) -> None:
    async with _agent(gateway, pki) as agent:
        await _next_ping(agent)  # a heartbeat PING came after the HELLO
        assert FrameType.REPLICAS not in agent.wire.received
        assert agent.session.replicas is None
        told = gateway.agent_listener.replica_news.told(_gateway_session(gateway))
        assert told == frozenset({gateway.replica_id})


async def test_agents_hear_of_every_live_replica_and_of_one_leaving(
    gateway: Gateway, second_gateway: Gateway, pki: Pki
) -> None:
    ids = frozenset({gateway.replica_id, second_gateway.replica_id})
    async with _agent(gateway, pki) as agent:
        gateway.peers.replace_peers([second_gateway.peers.local()])
        second_gateway.peers.replace_peers([gateway.peers.local()])
        await eventually(lambda: agent.sets == [ids], within=10, message="no REPLICAS")
        assert agent.session.replicas == ids
        # The same set again (a Lease renewed) is not news.
        gateway.peers.replace_peers([second_gateway.peers.local()])
        # The second replica leaves.
        gateway.peers.replace_peers([])
        one = frozenset({gateway.replica_id})
        await eventually(lambda: agent.sets == [ids, one], within=10, message="never told it left")
        assert agent.wire.replicas == [ids, one]


async def test_a_new_agent_is_told_at_once(
    gateway: Gateway, second_gateway: Gateway, pki: Pki
) -> None:
    gateway.peers.replace_peers([second_gateway.peers.local()])
    ids = frozenset({gateway.replica_id, second_gateway.replica_id})
    async with _agent(gateway, pki) as agent:
        await eventually(lambda: agent.sets == [ids], within=10, message="no REPLICAS")


async def test_an_agent_without_the_capability_is_never_told(
    gateway: Gateway, second_gateway: Gateway, pki: Pki
) -> None:
    async with _agent(gateway, pki, capabilities=("upgrade",)) as agent:
        gateway.peers.replace_peers([second_gateway.peers.local()])
        await _next_ping(agent)
        gateway.peers.replace_peers([])
        await _next_ping(agent)
        assert FrameType.REPLICAS not in agent.wire.received
        assert not agent.session.closed
        assert gateway.agent_listener.replica_news.told(_gateway_session(gateway)) is None


def _gateway_session(gateway: Gateway) -> TunnelSession:
    [connected] = gateway.agents.agents(PLANE)
    return connected.session


def _agent_files(pki: Pki, folder: Path) -> Path:
    """The agent's TLS folder (as the mounted Secret) and an unused kubeconfig beside it."""
    folder.mkdir()
    bundle = pki.agent_cert(PLANE)
    (folder / "tls.crt").write_bytes(bundle.chain_pem())
    (folder / "tls.key").write_bytes(bundle.private_key_pem())
    (folder / "ca.crt").write_bytes(pki.gateway_ca.certificate_pem())
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: unused}}]\n"
    )
    return folder


async def test_a_real_agent_behind_a_load_balancer_holds_a_tunnel_to_each_replica(
    gateway: Gateway, second_gateway: Gateway, pki: Pki, tmp_path: Path
) -> None:
    gateway.peers.replace_peers([second_gateway.peers.local()])
    second_gateway.peers.replace_peers([gateway.peers.local()])
    balancer = RoundRobin([("127.0.0.1", g.agent_listener.port) for g in (gateway, second_gateway)])
    await balancer.start()
    folder = _agent_files(pki, tmp_path / "agent")
    agent = Agent(
        AgentSettings(
            gateway_url=balancer.url,
            plane=str(PLANE),
            agent_id="the-agent",
            tls_dir=folder,
            kubeconfig=folder / "kubeconfig",
            health_address="127.0.0.1:0",
            backoff_base=0.02,
            backoff_cap=0.2,
            heartbeat_interval=2.0,
            heartbeat_timeout=scaled(30.0),
            drain_grace=scaled(5.0),
        ),
        environ={},
    )
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        both = frozenset({gateway.replica_id, second_gateway.replica_id})
        await eventually(
            lambda: (
                agent.tunnels.held_ids() == both
                and all(
                    [a.agent_id for a in g.agents.agents(PLANE)] == ["the-agent"]
                    for g in (gateway, second_gateway)
                )
            ),
            within=20,
            message="the agent never held a tunnel to each replica",
        )
        assert balancer.landed[:2] == [0, 1]
        assert agent.metrics.sample("planelink_agent_duplicate_dials_total") == 0
        # Each replica's presence now names the agent: status counts one agent, not two.
        gateway.peers.replace_peers([second_gateway.peers.local()])
        assert gateway.peers.holdings(PLANE) == {"the-agent": sorted(both)}
    finally:
        stop.set()
        await wait_for(running, seconds=30)
        await balancer.close()
    for g in (gateway, second_gateway):
        await eventually(
            lambda g=g: not g.agents.agents(PLANE), within=10, message="the tunnel stayed"
        )
