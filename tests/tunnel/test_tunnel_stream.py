"""A tunnel stream alone, driven through its public seam by an owner that records each call.

The stream needs nothing of a session beyond `StreamOwner`; these tests are that claim.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from protocol import ErrorCode, ResponseReceived
from tunnel.stream import StreamOwner, StreamResetError, TunnelStream


@dataclass
class RecordingOwner:
    """A `StreamOwner` that takes at most `room` body bytes per call and records everything."""

    room: int = 1 << 20
    calls: list[tuple[object, ...]] = field(default_factory=list)
    offered: asyncio.Event = field(default_factory=asyncio.Event)
    forgotten: list[TunnelStream] = field(default_factory=list)

    def send_response(
        self, stream_id: int, status: int, headers: object, *, end_stream: bool
    ) -> None:
        self.calls.append(("response", stream_id, status, end_stream))

    def send_data(self, stream_id: int, data: memoryview) -> int:
        accepted = min(self.room, len(data))
        self.calls.append(("data", stream_id, bytes(data[:accepted])))
        self.offered.set()
        return accepted

    def end_stream(self, stream_id: int) -> None:
        self.calls.append(("end", stream_id))

    def reset_stream(self, stream_id: int, code: ErrorCode, message: str) -> None:
        self.calls.append(("reset", stream_id, code, message))

    def consumed(self, stream_id: int, size: int) -> None:
        self.calls.append(("consumed", stream_id, size))

    def forget_if_done(self, stream: TunnelStream) -> None:
        if stream.done:
            self.forgotten.append(stream)


def new_stream(owner: StreamOwner, *, ended_locally: bool = False) -> TunnelStream:
    return TunnelStream(owner, 7, ended_locally=ended_locally)


async def test_received_bytes_are_credited_when_read_not_when_delivered() -> None:
    owner = RecordingOwner()
    stream = new_stream(owner)
    stream.deliver_data(memoryview(b"abc"))
    stream.deliver_data(memoryview(b"de"))
    assert stream.readable_now
    assert owner.calls == []
    assert bytes(await stream.read()) == b"abc"
    assert owner.calls == [("consumed", 7, 3)]
    stream.deliver_end()
    assert bytes(await stream.read()) == b"de"
    assert await stream.read() == b""
    assert owner.calls == [("consumed", 7, 3), ("consumed", 7, 2)]
    assert stream.bytes_received == 5


async def test_a_stream_is_forgotten_once_both_halves_ended_and_all_was_read() -> None:
    owner = RecordingOwner()
    stream = new_stream(owner)
    stream.respond(200)
    stream.deliver_data(memoryview(b"x"))
    stream.deliver_end()
    stream.end()
    assert owner.forgotten == []  # a byte is still unread
    await stream.read()
    assert owner.forgotten == [stream]
    assert owner.calls == [("response", 7, 200, False), ("end", 7), ("consumed", 7, 1)]


async def test_write_waits_for_capacity_and_goes_on_when_the_owner_has_room() -> None:
    owner = RecordingOwner(room=0)
    stream = new_stream(owner)
    writer = asyncio.create_task(stream.write(b"hello"))
    await owner.offered.wait()
    assert not writer.done()
    owner.room = 3
    stream.capacity_available()
    owner.offered.clear()
    await owner.offered.wait()
    stream.capacity_available()
    await writer
    assert [c for c in owner.calls if c[2]] == [("data", 7, b"hel"), ("data", 7, b"lo")]
    assert stream.bytes_sent == 5


async def test_reset_tells_the_owner_once_and_fails_a_waiting_reader() -> None:
    owner = RecordingOwner()
    stream = new_stream(owner)
    reader = asyncio.create_task(stream.read())
    response = asyncio.create_task(stream.response())
    await asyncio.sleep(0)  # one turn of the loop (not a timed wait): both tasks now wait
    stream.reset(ErrorCode.CANCEL, "caller left")
    stream.reset(ErrorCode.INTERNAL_ERROR, "again")
    assert owner.calls == [("reset", 7, ErrorCode.CANCEL, "caller left")]
    for task in (reader, response):
        with pytest.raises(StreamResetError) as info:
            await task
        assert info.value.code is ErrorCode.CANCEL
        assert not info.value.remote
    assert owner.forgotten == [stream]


async def test_a_reset_delivered_by_the_session_keeps_bytes_of_a_complete_message() -> None:
    owner = RecordingOwner()
    stream = new_stream(owner)
    stream.deliver_data(memoryview(b"whole"))
    stream.deliver_end()
    stream.deliver_reset(StreamResetError(ErrorCode.NO_ERROR, "upload not needed", remote=True))
    assert bytes(await stream.read()) == b"whole"
    with pytest.raises(StreamResetError) as info:
        stream.respond(200)
    assert info.value.remote
    assert owner.calls == [("consumed", 7, 5)]


async def test_a_reset_delivered_by_the_session_drops_an_incomplete_message() -> None:
    owner = RecordingOwner()
    stream = new_stream(owner)
    stream.deliver_data(memoryview(b"part"))
    stream.deliver_reset(StreamResetError(ErrorCode.CONNECTION_LOST, "gone", remote=False))
    with pytest.raises(StreamResetError):
        await stream.read()
    assert stream.done
    assert owner.forgotten == [stream]


async def test_the_response_head_delivered_by_the_session_is_awaited() -> None:
    stream = new_stream(RecordingOwner(), ended_locally=True)
    assert stream.answered
    head = ResponseReceived(7, 200, ((b"a", b"b"),))
    stream.deliver_response(head)
    assert await stream.response() == head


async def test_discarded_input_is_credited_at_once() -> None:
    owner = RecordingOwner()
    stream = new_stream(owner)
    stream.deliver_data(memoryview(b"unread"))
    stream.discard_input()
    stream.deliver_data(memoryview(b"late"))
    assert owner.calls == [("consumed", 7, 6), ("consumed", 7, 4)]
    assert not stream.readable_now
