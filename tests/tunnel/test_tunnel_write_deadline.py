"""A peer that stops reading, or floods, is dropped: the write deadline and the flood limits at
the session level, over an in-memory channel and over a real loopback WebSocket.

Waits scale with PLANELINK_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from protocol import Connection, ErrorCode, FloodLimits, RequestReceived, Role, Settings
from protocol.frames import Ping, Request
from protocol.testing import hello
from tests.kit.waits import scaled, wait_for
from tunnel import (
    ChannelClosed,
    Heartbeat,
    MessageChannel,
    StreamResetError,
    TunnelSession,
    TunnelStream,
    WebSocketChannel,
    memory_channel_pair,
)
from tunnel.channel import MAX_WRITE_BUFFER, GuardedServerConnection

WRITE_TIMEOUT = scaled(0.5)
"""Short, so the tests are quick; what they assert is the time relative to it."""


def deadlines() -> Heartbeat:
    return Heartbeat(interval=scaled(30), timeout=scaled(60), write_timeout=WRITE_TIMEOUT)


async def peer_hello(channel: MessageChannel, role: Role, settings: Settings | None = None) -> None:
    await channel.send(hello(role, settings))


async def test_a_peer_that_stops_reading_is_dropped_at_the_write_deadline() -> None:
    gateway_end, agent_end = memory_channel_pair(max_messages=2)
    session = TunnelSession(gateway_end, Connection(Role.GATEWAY), heartbeat=deadlines())
    run = asyncio.create_task(session.run())
    await peer_hello(agent_end, Role.AGENT)  # then reads nothing: our HELLO fills its inbox
    await session.wait_ready()
    stream = session.open_stream(method="GET", path="/a", end_stream=True)
    for i in range(3):  # a few PINGs: each needs a PONG, which cannot be written
        await agent_end.send(Ping(i.to_bytes(8, "big")).encode(1))
    started = asyncio.get_running_loop().time()
    reason = await wait_for(run, 10)
    waited = asyncio.get_running_loop().time() - started
    assert session.dropped_for == "write_timeout"
    assert "read nothing" in reason
    assert waited < WRITE_TIMEOUT + scaled(2)
    with pytest.raises(StreamResetError) as raised:
        await stream.response()
    assert raised.value.code is ErrorCode.CONNECTION_LOST
    assert session.open_streams == 0


async def test_a_reading_peer_is_not_dropped_however_slow_the_writes() -> None:
    gateway_end, agent_end = memory_channel_pair(max_messages=1)
    session = TunnelSession(gateway_end, Connection(Role.GATEWAY), heartbeat=deadlines())
    run = asyncio.create_task(session.run())
    await peer_hello(agent_end, Role.AGENT)
    await session.wait_ready()
    for i in range(6):  # each PONG waits for the peer to read, but never longer than allowed
        await agent_end.send(Ping(i.to_bytes(8, "big")).encode(1))
        await asyncio.sleep(WRITE_TIMEOUT / 3)  # a slow reader, on purpose: nothing to await
        await agent_end.recv()
    assert not session.closed
    session.close("test over")
    await run
    assert session.dropped_for is None


async def test_a_ping_flood_ends_the_session_with_the_limit_named() -> None:
    gateway_end, agent_end = memory_channel_pair(max_messages=4)
    flood = FloodLimits(idle_frame_burst=200, idle_frame_rate=1.0)
    session = TunnelSession(
        gateway_end, Connection(Role.GATEWAY, flood=flood), heartbeat=deadlines()
    )
    run = asyncio.create_task(session.run())
    await peer_hello(agent_end, Role.AGENT)
    await session.wait_ready()
    burst = b"".join(Ping(i.to_bytes(8, "big")).encode(1) for i in range(100))
    with contextlib.suppress(ChannelClosed):  # the gateway may be gone before the last burst
        for _ in range(10):
            await agent_end.send(burst)
    reason = await wait_for(run, 10)
    assert session.dropped_for == "idle_frame"
    assert "PING" in reason


async def test_a_rapid_reset_flood_from_the_agent_is_refused_then_cut_off() -> None:
    gateway_end, agent_end = memory_channel_pair(max_messages=64)
    flood = FloodLimits(stream_churn_burst=50)
    session = TunnelSession(
        gateway_end,
        Connection(Role.GATEWAY, settings=Settings(max_concurrent_streams=0), flood=flood),
        heartbeat=deadlines(),
    )
    run = asyncio.create_task(session.run())
    await peer_hello(agent_end, Role.AGENT)
    await session.wait_ready()
    requests = b"".join(
        Request(sid, b"GET", b"/", end_stream=True).encode(1) for sid in range(2, 204, 2)
    )
    await agent_end.send(requests)
    reason = await wait_for(run, 10)
    assert session.dropped_for == "stream_churn"
    assert "refused" in reason


async def test_a_peer_that_talks_but_never_reads_is_dropped_by_the_heartbeat() -> None:
    # Room for everything we send: no write ever waits, so only the unanswered PINGs tell.
    gateway_end, agent_end = memory_channel_pair(max_messages=10_000)
    heartbeat = Heartbeat(interval=scaled(0.05), timeout=scaled(0.3), write_timeout=scaled(30))
    session = TunnelSession(gateway_end, Connection(Role.GATEWAY), heartbeat=heartbeat)
    run = asyncio.create_task(session.run())
    await peer_hello(agent_end, Role.AGENT)
    await session.wait_ready()

    async def chatter() -> None:
        with contextlib.suppress(ChannelClosed):
            for i in range(10_000):  # never silent, never reading
                await agent_end.send(Ping(i.to_bytes(8, "big")).encode(1))
                await asyncio.sleep(heartbeat.interval / 2)  # a steady talker, on purpose

    talking = asyncio.create_task(chatter())
    reason = await wait_for(run, 10)
    talking.cancel()
    assert session.dropped_for == "heartbeat_timeout"
    assert "no answer to a PING" in reason


# -- a real WebSocket over loopback whose reader is paused -------------------------------------


async def endless_body(stream: TunnelStream, request: RequestReceived) -> None:
    stream.respond(200, [])
    chunk = b"z" * 65_536
    while True:
        await stream.write(chunk)


@pytest.fixture
async def agent_server() -> AsyncIterator[tuple[int, asyncio.Future[TunnelSession]]]:
    """An agent-side session behind a WebSocket server that answers with an endless body."""
    served: asyncio.Future[TunnelSession] = asyncio.get_running_loop().create_future()

    async def handler(websocket: ServerConnection) -> None:
        session = TunnelSession(
            WebSocketChannel(websocket),
            Connection(Role.AGENT),
            heartbeat=deadlines(),
            request_handler=endless_body,
        )
        served.set_result(session)
        await session.run()

    async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield port, served


async def test_a_websocket_peer_with_a_paused_reader_is_dropped(
    agent_server: tuple[int, asyncio.Future[TunnelSession]],
) -> None:
    port, served = agent_server
    big = Settings(
        initial_stream_window=2**31 - 1, connection_window=2**31 - 1, max_message_size=2**31 - 1
    )
    url = f"ws://127.0.0.1:{port}"
    async with connect(url, max_size=None, compression=None) as websocket:
        sock = websocket.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)
        await websocket.send(hello(Role.GATEWAY, big))
        await websocket.send(Request(1, b"GET", b"/logs", end_stream=True).encode(1))
        websocket.transport.pause_reading()  # the caller's side stops reading from here on
        session = await wait_for(served, 5)
        started = asyncio.get_running_loop().time()
        await wait_for(session.wait_closed(), 20)
        waited = asyncio.get_running_loop().time() - started
        assert session.dropped_for == "write_timeout", session.close_reason
        assert "read nothing" in session.close_reason
        assert waited < WRITE_TIMEOUT + scaled(5)
        assert session.open_streams == 0
        websocket.transport.abort()  # paused, it would not even notice the server is gone


# -- WebSocket PINGs: the library answers them by itself -------------------------------------


async def test_a_websocket_ping_flood_without_reading_is_dropped_at_the_buffer_bound() -> None:
    accepted: asyncio.Future[GuardedServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(websocket: ServerConnection) -> None:
        assert isinstance(websocket, GuardedServerConnection)
        accepted.set_result(websocket)
        await websocket.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, compression=None, create_connection=GuardedServerConnection
    ) as server:
        port = server.sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}"
        async with connect(url, compression=None, ping_interval=None) as websocket:
            served = await wait_for(accepted, 5)
            websocket.transport.pause_reading()
            pings = 0
            with contextlib.suppress(ConnectionClosed, OSError):
                # 2x the bound in PONGs: without the guard they would all sit in the buffer.
                while pings < 2 * MAX_WRITE_BUFFER // 127 and not served.transport.is_closing():
                    for _ in range(1000):
                        websocket.protocol.send_frame(Frame(Opcode.PING, b"p" * 125))
                    pings += 1000
                    websocket.send_data()
                    await websocket.drain()
                    await asyncio.sleep(0)  # let the server read what was sent
            await wait_for(served.wait_closed(), 10)
            assert served.transport.get_write_buffer_size() <= MAX_WRITE_BUFFER + 2**16
            assert pings < 2 * MAX_WRITE_BUFFER // 127
            websocket.transport.abort()
