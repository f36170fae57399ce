"""kubeproxy's in-process streams (the gateway's direct mode): bytes both ways with an end,
bounded buffers, resets both ways, and a stream limit — with a handler of our own in place of
the proxy, so that every step is awaited, not timed."""

from __future__ import annotations

import asyncio

import pytest

from kubeproxy import LocalStream, LocalStreams, ProxiedStream
from kubeproxy.local import Handler
from protocol import ErrorCode, RequestReceived
from tests.kit.waits import wait_for
from tunnel import StreamResetError

PIECE = b"x" * 100


def streams_serving(
    handler: Handler, *, max_streams: int = 4, budget_bytes: int = 10_000
) -> LocalStreams:
    return LocalStreams(
        handler, max_streams=max_streams, buffer_bytes=1000, budget_bytes=budget_bytes
    )


def post(streams: LocalStreams, *, end_stream: bool = False) -> LocalStream:
    return streams.open_stream(
        method="POST", path="/echo", headers=[], end_stream=end_stream, upgrade=False
    )


async def test_an_echo_moves_bytes_both_ways_and_ends() -> None:
    seen: list[RequestReceived] = []

    async def echo(stream: ProxiedStream, request: RequestReceived) -> None:
        seen.append(request)
        stream.respond(200, [(b"X-Echo", b"1")])
        while piece := await stream.read():
            await stream.write(piece)
        stream.end()

    streams = streams_serving(echo)
    stream = post(streams)
    await stream.write(b"hello ")
    await stream.write(b"world")
    stream.end()
    response = await wait_for(stream.response())
    assert (response.status, response.headers) == (200, ((b"X-Echo", b"1"),))
    body = b""
    while piece := await wait_for(stream.read()):
        body += piece
    assert body == b"hello world"
    assert stream.done
    assert (seen[0].method, seen[0].path, seen[0].end_stream) == (b"POST", b"/echo", False)
    await wait_for(streams.wait_idle())
    assert streams.bytes_moved == (11, 11)


async def test_a_writer_waits_while_the_budget_of_all_streams_is_unread() -> None:
    two_written = asyncio.Event()
    three_written = asyncio.Event()

    async def flood(stream: ProxiedStream, request: RequestReceived) -> None:
        stream.respond(200)
        await stream.write(PIECE)
        await stream.write(PIECE)
        two_written.set()
        await stream.write(PIECE)  # no room: the budget is two pieces
        three_written.set()
        stream.end()

    streams = streams_serving(flood, budget_bytes=2 * len(PIECE))
    stream = post(streams, end_stream=True)
    await wait_for(two_written.wait())
    assert not three_written.is_set()
    assert await stream.read() == PIECE  # room for one more
    await wait_for(three_written.wait())
    assert await stream.read() == PIECE
    assert await stream.read() == PIECE
    assert await stream.read() == b""


async def test_a_requester_reset_fails_and_cancels_the_handler() -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def stalls(stream: ProxiedStream, request: RequestReceived) -> None:
        stream.respond(200)
        started.set()
        try:
            await asyncio.Event().wait()  # an idle watch upstream
        except asyncio.CancelledError:
            cancelled.set()
            raise

    streams = streams_serving(stalls)
    stream = post(streams)
    await wait_for(started.wait())
    stream.reset(ErrorCode.CANCEL, "the caller went away")
    assert stream.done
    await wait_for(cancelled.wait())
    with pytest.raises(StreamResetError):
        await stream.read()
    await wait_for(streams.wait_idle())


async def test_a_handler_that_fails_resets_the_stream() -> None:
    async def breaks(stream: ProxiedStream, request: RequestReceived) -> None:
        raise RuntimeError("a bug")

    stream = post(streams_serving(breaks), end_stream=True)
    with pytest.raises(StreamResetError) as reset:
        await wait_for(stream.response())
    assert reset.value.code is ErrorCode.INTERNAL_ERROR
    assert reset.value.remote


async def test_past_the_stream_limit_and_after_close_new_streams_are_refused() -> None:
    async def stalls(stream: ProxiedStream, request: RequestReceived) -> None:
        await asyncio.Event().wait()

    streams = streams_serving(stalls, max_streams=1)
    first = post(streams)
    with pytest.raises(StreamResetError) as refused:
        post(streams)
    assert refused.value.code is ErrorCode.REFUSED_STREAM
    handlers = streams.close("plane removed")
    await wait_for(asyncio.gather(*handlers, return_exceptions=True))
    with pytest.raises(StreamResetError) as lost:
        await first.response()
    assert (lost.value.code, lost.value.message) == (ErrorCode.CONNECTION_LOST, "plane removed")
    with pytest.raises(StreamResetError) as closed:
        post(streams)
    assert closed.value.code is ErrorCode.REFUSED_STREAM
