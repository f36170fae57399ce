"""A verified agent that breaks the tunnel protocol, or reaches past its own plane.

Each hostile agent here passed every admission check (its plane's certificate, its plane's
URL, a proper HELLO): what it sends afterwards must cost it its own connection and nothing
else. The bytes come from the protocol's own encoder (`protocol.frames`; the malformed ones are
`bench.hostile_known.MALFORMED_FRAMES`, which the benchmark sends too), sent over the agent's
real WebSocket; the checks are what a peer can observe — the GOAWAY code that ends the tunnel,
how soon the socket closes, the gateway's registry of agents, and callers' answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import certs
from bench.hostile_known import MALFORMED_FRAMES
from gateway.app import Gateway
from protocol import (
    Connection,
    ConnectionTerminated,
    ErrorCode,
    RequestReceived,
    Role,
)
from protocol.frames import Data, Reset, WindowUpdate
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.waits import scaled
from tunnel import StreamResetError, TunnelStream
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

DROP_BUDGET = scaled(2.0)
"""Seconds within which a hostile agent is cut off (the issue measured ~10 ms unloaded)."""
TIMEOUT = scaled(10.0)
_HOSTILE_IDS = itertools.count(1)


@dataclass
class HostileAgent:
    """A verified agent speaking the protocol by hand: HELLOs exchanged, registered."""

    agent_id: str
    websocket: ClientConnection
    connection: Connection
    """Our side of the protocol, to decode what the gateway sends back."""

    @property
    def version(self) -> int:
        peer = self.connection.peer
        assert peer is not None
        return peer.version

    async def send(self, message: bytes) -> None:
        await self.websocket.send(message)

    async def terminated(self) -> tuple[ConnectionTerminated | None, float]:
        """Read until the gateway closes the socket: how the tunnel ended (from the GOAWAY,
        if one came) and how many seconds that took."""
        started = time.monotonic()
        ending: ConnectionTerminated | None = None
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    message = await self.websocket.recv()
                except ConnectionClosed:
                    break
                assert isinstance(message, bytes)
                self.connection.receive_data(message)
                for event in self.connection.events_received():
                    if isinstance(event, ConnectionTerminated) and ending is None:
                        ending = event
        return ending, time.monotonic() - started


@contextlib.asynccontextmanager
async def hostile_agent(
    gateway: Gateway, pki: Pki, plane: certs.PlaneRef, *, agent_id: str | None = None
) -> AsyncIterator[HostileAgent]:
    agent_id = agent_id or f"hostile-{next(_HOSTILE_IDS)}"
    url = f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={plane}"
    websocket = await connect(
        url,
        ssl=pki.agent_ssl(pki.agent_cert(plane)),
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        ping_interval=None,
    )
    try:
        connection = Connection(
            Role.AGENT, identity={IDENTITY_PLANE: str(plane), IDENTITY_AGENT_ID: agent_id}
        )
        for message in connection.data_to_send():
            await websocket.send(message)
        async with asyncio.timeout(TIMEOUT):
            while connection.peer is None:
                received = await websocket.recv()
                assert isinstance(received, bytes)
                connection.receive_data(received)
            while not _registered(gateway, plane, agent_id):
                await gateway.agents.wait_for_change()
        connection.events_received()
        yield HostileAgent(agent_id, websocket, connection)
    finally:
        await websocket.close()


def _registered(gateway: Gateway, plane: certs.PlaneRef, agent_id: str) -> bool:
    return any(agent.agent_id == agent_id for agent in gateway.agents.agents(plane))


async def _wait_unregistered(gateway: Gateway, plane: certs.PlaneRef, agent_id: str) -> None:
    async with asyncio.timeout(DROP_BUDGET):
        while _registered(gateway, plane, agent_id):
            await gateway.agents.wait_for_change()


@pytest.mark.parametrize("case", sorted(MALFORMED_FRAMES))
async def test_a_malformed_frame_drops_only_that_agent(
    gateway: Gateway,
    pki: Pki,
    connect_agent: AgentFactory,
    caller: aiohttp.ClientSession,
    planes: PlanePair,
    *,
    case: str,
) -> None:
    plane_a, plane_b = planes
    encode, code = MALFORMED_FRAMES[case]
    async with (
        connect_agent(plane_a) as sibling,
        connect_agent(plane_b),
        hostile_agent(gateway, pki, plane_a) as hostile,
    ):
        await hostile.send(encode(hostile.version))
        ending, took = await hostile.terminated()
        await _wait_unregistered(gateway, plane_a, hostile.agent_id)
        assert ending is not None, "the gateway closed without a GOAWAY"
        assert ending.error_code is code, ending
        assert took < DROP_BUDGET
        # Nothing else was touched: the other agent of the plane is still there and serving,
        # and so is the other plane.
        assert not sibling.session.closed
        assert len(gateway.agents.agents(plane_a)) == 1
        for plane in planes:
            async with caller.post(f"/planes/{plane}/k8s/echo", data=b"still here") as answer:
                assert answer.status == 200
                assert await answer.read() == b"still here"


async def test_a_hostile_agent_cannot_touch_another_planes_stream(
    gateway: Gateway,
    pki: Pki,
    connect_agent: AgentFactory,
    caller: aiohttp.ClientSession,
    planes: PlanePair,
) -> None:
    """Stream ids are per tunnel: the ids of plane B's open streams mean nothing on plane A's
    tunnel, so an agent of A that names them only ends its own tunnel."""
    plane_a, plane_b = planes
    more = asyncio.Event()
    opened: list[int] = []

    async def watch(stream: TunnelStream, request: RequestReceived) -> None:
        opened.append(stream.stream_id)
        stream.respond(200, [(b"content-type", b"application/json")])
        await stream.write(b'{"type":"ADDED"}\n')
        await more.wait()
        await stream.write(b'{"type":"MODIFIED"}\n')
        stream.end()

    async with (
        connect_agent(plane_b, handler=watch) as agent_b,
        caller.get(f"/planes/{plane_b}/k8s/api/v1/pods?watch=1") as response,
    ):
        assert await response.content.readline() == b'{"type":"ADDED"}\n'
        (b_stream,) = opened  # the id plane B's watch has on B's tunnel
        async with hostile_agent(gateway, pki, plane_a) as hostile:
            version = hostile.version
            await hostile.send(
                b"".join(
                    [
                        WindowUpdate(b_stream, 1).encode(version),
                        Reset(b_stream, ErrorCode.CANCEL, "").encode(version),
                        Data(b_stream, b'{"type":"DELETED"}\n', end_stream=True).encode(version),
                    ]
                )
            )
            ending, _ = await hostile.terminated()
            assert ending is not None
            assert ending.error_code is ErrorCode.PROTOCOL_ERROR
        more.set()
        async with asyncio.timeout(TIMEOUT):
            rest = await response.content.read()
        assert rest == b'{"type":"MODIFIED"}\n'
        assert not agent_b.session.closed


async def test_the_gateway_serves_no_requests_from_agents(
    gateway: Gateway, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    """An agent may open a stream (the protocol allows even ids), but the gateway answers none:
    each is refused, the agent stays connected, and no other plane sees a thing."""
    plane_a, plane_b = planes
    reached: list[RequestReceived] = []

    async def record(stream: TunnelStream, request: RequestReceived) -> None:
        reached.append(request)
        stream.respond(200, [(b"content-length", b"0")], end_stream=True)

    async with connect_agent(plane_b, handler=record), connect_agent(plane_a) as agent_a:
        for path in (f"/planes/{plane_b}/k8s/api", "/api/v1/secrets", "/metrics"):
            stream = agent_a.session.open_stream(method="GET", path=path, end_stream=True)
            with pytest.raises(StreamResetError) as refused:
                async with asyncio.timeout(TIMEOUT):
                    await stream.response()
            assert refused.value.code is ErrorCode.REFUSED_STREAM
        assert not agent_a.session.closed
        assert len(gateway.agents.agents(plane_a)) == 1
    assert reached == []


async def test_an_agent_claiming_another_agents_id_displaces_nobody(
    gateway: Gateway,
    pki: Pki,
    connect_agent: AgentFactory,
    caller: aiohttp.ClientSession,
    planes: PlanePair,
) -> None:
    """The agent id in a HELLO is a label, not an identity: an agent of either plane that
    claims a connected agent's id joins beside it, and leaving takes only itself away."""
    plane_a, plane_b = planes
    async with connect_agent(plane_a) as legit:
        (registered,) = gateway.agents.agents(plane_a)
        taken = registered.agent_id
        async with (
            hostile_agent(gateway, pki, plane_a, agent_id=taken),
            hostile_agent(gateway, pki, plane_b, agent_id=taken),
        ):
            assert [a.agent_id for a in gateway.agents.agents(plane_a)] == [taken, taken]
            assert [a.agent_id for a in gateway.agents.agents(plane_b)] == [taken]
            assert not legit.session.closed
        async with asyncio.timeout(TIMEOUT):
            while len(gateway.agents.agents(plane_a)) > 1 or gateway.agents.agents(plane_b):
                await gateway.agents.wait_for_change()
        assert gateway.agents.agents(plane_a) == [registered]
        async with caller.post(f"/planes/{plane_a}/k8s/echo", data=b"mine") as answer:
            assert (answer.status, await answer.read()) == (200, b"mine")
