"""A valid agent that floods PINGs and stops reading its socket (issue #10, finding 2).

Before: every PING queued a PONG with no limit, nothing noticed that the agent no longer read,
and the gateway grew by hundreds of MiB and stayed there. Now answers to PINGs are merged into
one queued PONG, frames without data are rate-limited (`FloodLimits`), and an agent that stops
reading is dropped by the write deadline. These tests drive a real gateway over TLS with a
stand-in agent that holds a valid certificate of plane A, while a caller of plane B keeps
working.

Waits scale with PLANELINK_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

import certs
from gateway.app import Gateway, GatewaySettings
from protocol import Role, Settings
from protocol.frames import Ping
from protocol.hello import build_hello
from tests.kit.gateway_lab import AgentFactory, Pki
from tests.kit.waits import scaled, wait_for
from tunnel import Heartbeat
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

MIB = 1 << 20
B = "/planes/ns-b/plane-b/k8s"
WRITE_TIMEOUT = scaled(2.0)
PINGS_PER_MESSAGE = 50_000
"""20 bytes each: a message of about 1 MiB, the default MAX_MESSAGE_SIZE."""


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def loopback_gateway_settings(
    loopback_gateway_settings: Callable[[Path], GatewaySettings],
) -> Callable[[Path], GatewaySettings]:
    """The lab's gateway, with a write deadline short enough for a test, and a silence
    timeout long enough that only the write deadline can drop the deaf agent."""

    def settings(directory: Path) -> GatewaySettings:
        base = loopback_gateway_settings(directory)
        beat = Heartbeat(interval=1, timeout=scaled(60), write_timeout=WRITE_TIMEOUT)
        return dataclasses.replace(base, agents=dataclasses.replace(base.agents, heartbeat=beat))

    return settings


@contextlib.asynccontextmanager
async def hostile_agent(
    gateway: Gateway,
    pki: Pki,
    plane: certs.PlaneRef,
    agent_id: str,
    *,
    settings: Settings | None = None,
) -> AsyncIterator[ClientConnection]:
    """A registered agent of `plane` with a valid certificate, driven byte by byte."""
    url = f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={plane}"
    async with connect(
        url,
        ssl=pki.agent_ssl(pki.agent_cert(plane)),
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        ping_interval=None,
        compression=None,
        max_size=None,
        close_timeout=0.1,
    ) as websocket:
        hello = build_hello(
            role=Role.AGENT,
            versions=(1,),
            settings=settings or Settings(),
            identity={IDENTITY_PLANE: str(plane), IDENTITY_AGENT_ID: agent_id},
            capabilities=(),
        )
        await websocket.send(hello)
        while not any(a.agent_id == agent_id for a in gateway.agents.agents(plane)):
            await wait_for(gateway.agents.wait_for_change(), 10)
        try:
            yield websocket
        finally:
            websocket.transport.abort()


async def wait_gone(gateway: Gateway, plane: certs.PlaneRef, agent_id: str) -> float:
    """Seconds until `agent_id` is no longer registered for `plane`."""
    started = time.monotonic()
    while any(a.agent_id == agent_id for a in gateway.agents.agents(plane)):
        await wait_for(gateway.agents.wait_for_change(), 30)
    return time.monotonic() - started


async def flood(websocket: ClientConnection, message: bytes, stop: asyncio.Event) -> int:
    """Send `message` until the gateway hangs up or `stop` is set; returns messages sent."""
    sent = 0
    with contextlib.suppress(ConnectionClosed, OSError):
        while not stop.is_set():
            await websocket.send(message)
            sent += 1
            # send() does not yield while the transport takes bytes, and once the gateway has
            # cut the connection its writes are dropped silently: without this the loop would
            # starve the event loop the gateway under test runs on.
            await asyncio.sleep(0)
    return sent


async def small_gets(caller: aiohttp.ClientSession, stop: asyncio.Event) -> list[float]:
    """GETs on plane B until `stop`; every one must be answered 404 by plane B's agent."""
    latencies: list[float] = []
    while not stop.is_set():
        started = time.monotonic()
        async with caller.get(f"{B}/api/v1/nothing") as response:
            await response.read()
            assert response.status == 404, response.status
        latencies.append(time.monotonic() - started)
    return latencies


def drops(gateway: Gateway, limit: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "planelink_gateway_agent_drops_total", {"plane": "ns-a/plane-a", "limit": limit}
    )
    return value or 0.0


async def test_a_ping_flood_without_reading_drops_the_agent_and_spares_plane_b(
    gateway: Gateway,
    pki: Pki,
    connect_agent: AgentFactory,
    caller: aiohttp.ClientSession,
    planes: tuple[certs.PlaneRef, certs.PlaneRef],
) -> None:
    plane_a, plane_b = planes
    pings = b"".join(Ping(i.to_bytes(8, "big")).encode(1) for i in range(PINGS_PER_MESSAGE))
    async with connect_agent(plane_b):
        stop = asyncio.Event()
        for _ in range(20):  # warm up plane B's path before measuring
            async with caller.get(f"{B}/api/v1/nothing") as response:
                await response.read()
        before = rss()
        async with hostile_agent(gateway, pki, plane_a, "flooder") as websocket:
            websocket.transport.pause_reading()  # from here on it reads nothing
            gets = asyncio.create_task(small_gets(caller, stop))
            flooding = asyncio.create_task(flood(websocket, pings, stop))
            dropped_after = await wait_gone(gateway, plane_a, "flooder")
            during = rss()
            stop.set()
            sent = await flooding
            latencies = await gets
    assert dropped_after < scaled(5)
    assert sent >= 1
    assert drops(gateway, "idle_frame") == 1
    assert during - before < 16 * MIB, f"grew {(during - before) / MIB:.1f} MiB"
    assert latencies, "plane B answered nothing during the flood"


async def test_an_agent_that_stops_reading_is_dropped_at_the_write_deadline(
    gateway: Gateway,
    pki: Pki,
    caller: aiohttp.ClientSession,
    planes: tuple[certs.PlaneRef, certs.PlaneRef],
) -> None:
    plane_a, _ = planes
    # Windows wide open: the gateway may send all it has, so its writes, not the flow
    # control, are what stop.
    wide = Settings(
        initial_stream_window=2**31 - 1, connection_window=2**31 - 1, max_message_size=2**31 - 1
    )
    async with hostile_agent(gateway, pki, plane_a, "deaf", settings=wide) as websocket:
        websocket.transport.pause_reading()
        body = os.urandom(MIB)
        uploads = [
            asyncio.create_task(caller.post(f"/planes/ns-a/plane-a/k8s/api/x{i}", data=body))
            for i in range(48)
        ]
        dropped_after = await wait_gone(gateway, plane_a, "deaf")
        answers = await asyncio.gather(*uploads, return_exceptions=True)
    assert dropped_after < WRITE_TIMEOUT + scaled(10)
    assert drops(gateway, "write_timeout") == 1
    for answer in answers:
        assert isinstance(answer, aiohttp.ClientResponse), answer
        assert answer.status in {502, 503}, answer.status
        answer.release()
