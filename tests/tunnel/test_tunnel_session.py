"""Tunnel sessions back to back over in-memory channels: streams, flow, resets, loss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from protocol import Connection, ErrorCode, RequestReceived, Role, Settings
from tests.kit.waits import eventually, scaled, wait_for
from tunnel import (
    Heartbeat,
    StreamResetError,
    TunnelSession,
    TunnelStream,
    memory_channel_pair,
)


@dataclass
class Pair:
    gateway: TunnelSession
    agent: TunnelSession
    tasks: list[asyncio.Task[str]]


async def echo(stream: TunnelStream, request: RequestReceived) -> None:
    """Answers 200 and echoes the request body back, uppercased."""
    stream.respond(200, [(b"x-path", request.path)])
    while chunk := await stream.read():
        await stream.write(bytes(chunk).upper())
    stream.end()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    gateway_end, agent_end = memory_channel_pair()
    settings = Settings(initial_stream_window=65_536, connection_window=262_144)
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY, settings=settings))
    agent = TunnelSession(
        agent_end,
        Connection(Role.AGENT, settings=settings, identity={"plane": "ns/a"}),
        request_handler=echo,
    )
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    await agent.wait_ready()
    yield Pair(gateway, agent, tasks)
    gateway.close("test over")
    await asyncio.gather(*tasks)
    assert gateway.open_streams == 0
    assert agent.open_streams == 0
    assert agent.running_handlers == 0


async def _exchange(session: TunnelSession, body: bytes) -> tuple[int, bytes]:
    stream = session.open_stream(method="POST", path="/echo")

    async def send() -> None:
        await stream.write(body)
        stream.end()

    # Like any HTTP client that streams: write the request while the response is read.
    sending = asyncio.create_task(send())
    response = await stream.response()
    received = bytearray()
    while chunk := await stream.read():
        received += chunk
    await sending
    return response.status, bytes(received)


async def test_hello_carries_identity(pair: Pair) -> None:
    peer = await pair.gateway.wait_ready()
    assert peer.identity == {"plane": "ns/a"}


async def test_request_and_streamed_body(pair: Pair) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: many windows' worth
    status, received = await _exchange(pair.gateway, body)
    assert status == 200
    assert received == body.upper()
    assert pair.gateway.open_streams == 0


async def test_many_concurrent_streams(pair: Pair) -> None:
    results = await asyncio.gather(
        *(_exchange(pair.gateway, f"body-{i}".encode() * 100) for i in range(200))
    )
    assert [r[1] for r in results] == [f"BODY-{i}".encode() * 100 for i in range(200)]


async def test_reset_by_caller_cancels_the_handler(pair: Pair) -> None:
    stream = pair.gateway.open_stream(method="POST", path="/slow")
    await stream.write(b"first")
    assert (await stream.response()).status == 200
    assert await stream.read() == b"FIRST"
    assert pair.agent.running_handlers == 1
    stream.reset(ErrorCode.CANCEL, "caller went away")
    with pytest.raises(StreamResetError):
        await stream.read()
    # The agent hears of it and its handler is cancelled: wait for that, no sleep.
    await wait_for(pair.agent.wait_idle(), 5)
    assert pair.agent.running_handlers == 0


async def test_connection_loss_fails_open_streams_at_once(pair: Pair) -> None:
    stream = pair.gateway.open_stream(method="POST", path="/slow")
    await stream.write(b"x")
    await stream.response()
    assert await stream.read() == b"X"
    pair.agent.close("agent killed")
    with pytest.raises(StreamResetError) as raised:
        await wait_for(stream.read(), 5)
    assert raised.value.code is ErrorCode.CONNECTION_LOST


async def test_silent_peer_is_detected() -> None:
    gateway_end, _silent = memory_channel_pair()
    session = TunnelSession(
        gateway_end, Connection(Role.GATEWAY), heartbeat=Heartbeat(interval=0.02, timeout=0.1)
    )
    reason = await wait_for(session.run(), 5)
    assert "no message from the peer" in reason


async def test_a_loop_held_past_the_timeout_does_not_drop_a_live_peer() -> None:
    # Held by a long callback (or a starved CPU), the loop runs the overdue heartbeat before the
    # reader that would have seen the peer's messages: that round must not judge silence.
    heartbeat = Heartbeat(interval=scaled(0.05), timeout=scaled(0.2))
    gateway_end, agent_end = memory_channel_pair()
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY), heartbeat=heartbeat)
    agent = TunnelSession(agent_end, Connection(Role.AGENT), heartbeat=heartbeat)
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    await agent.wait_ready()
    time.sleep(heartbeat.timeout * 2)  # noqa: ASYNC251 - the stall under test: the loop held
    heard = gateway.bytes_in, agent.bytes_in
    await eventually(
        lambda: gateway.bytes_in > heard[0] and agent.bytes_in > heard[1],
        within=5,
        message="both sides heard the other after the stall",
    )
    assert not gateway.closed
    assert not agent.closed
    gateway.close("test over")
    await asyncio.gather(*tasks)


async def test_a_loop_late_every_round_still_drops_a_silent_peer() -> None:
    # The late round is forgiven once, not every time: a loop that is always behind still
    # finds a dead peer.
    heartbeat = Heartbeat(interval=scaled(0.05), timeout=scaled(0.2))
    gateway_end, _silent = memory_channel_pair()
    session = TunnelSession(gateway_end, Connection(Role.GATEWAY), heartbeat=heartbeat)

    async def hold_the_loop() -> None:
        while True:
            time.sleep(heartbeat.interval * 1.5)  # noqa: ASYNC251 - every round comes late
            await asyncio.sleep(0)

    holding = asyncio.create_task(hold_the_loop())
    try:
        reason = await wait_for(session.run(), 10)
    finally:
        holding.cancel()
    assert "no message from the peer" in reason


async def test_an_answer_given_before_the_upload_ends_arrives_whole() -> None:
    body = b"y" * 300_000  # several windows: it cannot all be sent before the handler returns

    async def answer_early(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(200)
        await stream.write(body)
        stream.end()  # returns without reading the request's body

    gateway_end, agent_end = memory_channel_pair()
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY))
    agent = TunnelSession(agent_end, Connection(Role.AGENT), request_handler=answer_early)
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    stream = gateway.open_stream(method="POST", path="/upload")
    uploading = asyncio.create_task(stream.write(b"z" * 1_000_000))
    assert (await stream.response()).status == 200
    received = bytearray()
    while chunk := await stream.read():
        received += chunk
    assert bytes(received) == body
    await uploading  # the rest of the upload is accepted and dropped, not stalled
    stream.end()
    await wait_for(agent.wait_idle(), 5)
    await wait_for(gateway.wait_idle(), 5)
    gateway.close("done")
    await asyncio.gather(*tasks)


async def test_a_handler_that_gives_up_resets_its_stream() -> None:
    async def oversized_head(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(200, [(b"x-big", b"v" * 70_000)])  # over the peer's header limit

    gateway_end, agent_end = memory_channel_pair()
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY))
    agent = TunnelSession(agent_end, Connection(Role.AGENT), request_handler=oversized_head)
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    stream = gateway.open_stream(method="GET", path="/", end_stream=True)
    with pytest.raises(StreamResetError) as reset:
        await wait_for(stream.response(), 5)
    assert reset.value.code is ErrorCode.HEADER_ERROR
    assert reset.value.remote
    gateway.close("done")
    await asyncio.gather(*tasks)


async def test_opening_before_the_hello_is_refused_and_retryable() -> None:
    gateway_end, _ = memory_channel_pair()
    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY))
    with pytest.raises(StreamResetError) as refused:
        gateway.open_stream(method="GET", path="/")
    assert refused.value.code is ErrorCode.REFUSED_STREAM


async def test_a_stream_given_up_with_unread_data_leaves_the_table() -> None:
    async def answer_and_end(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(200)
        await stream.write(b"never read")
        stream.end()

    gateway_end, agent_end = memory_channel_pair()
    gateway_conn = Connection(Role.GATEWAY)
    gateway = TunnelSession(gateway_end, gateway_conn)
    agent = TunnelSession(agent_end, Connection(Role.AGENT), request_handler=answer_and_end)
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    stream = gateway.open_stream(method="GET", path="/", end_stream=True)
    await stream.response()
    # Make sure the whole answer (data and END) has arrived, unread: the agent has finished
    # it, and a later stream's answer can only arrive after it on the one connection.
    await wait_for(agent.wait_idle(), 5)
    barrier = gateway.open_stream(method="GET", path="/", end_stream=True)
    await barrier.response()
    while await barrier.read():
        pass
    assert gateway.open_streams == 1
    assert gateway_conn.inbound_buffered == len(b"never read")
    stream.reset()  # the caller went away before reading the body
    assert gateway.open_streams == 0
    # ...and its unread bytes no longer hold connection credit that every stream shares.
    assert gateway_conn.inbound_buffered == 0
    gateway.close("done")
    await asyncio.gather(*tasks)
