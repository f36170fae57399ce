"""Flow control, send-buffer limits, batching and fair scheduling."""

from __future__ import annotations

from collections import Counter

import pytest

from protocol import (
    ConnectionState,
    DataReceived,
    ErrorCode,
    LocalProtocolError,
    ResponseReceived,
    Role,
    SendCapacityAvailable,
    SendLimits,
    Settings,
    StreamEnded,
    StreamReset,
)
from protocol.flow import ReceiveWindow, grow
from protocol.frames import Data, Request, Response, WindowUpdate
from protocol.settings import MAX_WINDOW
from protocol.testing import Pair, body_of, frames, message, opened, terminated

SMALL = Settings(initial_stream_window=1000, connection_window=3000)


def test_receive_window_accounting_and_half_window_threshold() -> None:
    window = ReceiveWindow(100)
    assert window.receive(60)
    assert not window.receive(41)
    assert window.consume(49) == 0
    assert window.consume(1) == 50
    assert (window.available, window.buffered, window.pending) == (90, 10, 0)
    assert window.available + window.buffered + window.pending == window.size


def test_grow_refuses_to_pass_the_maximum() -> None:
    assert grow(MAX_WINDOW - 1, 1) == MAX_WINDOW
    assert grow(MAX_WINDOW, 1) is None


def test_sender_never_exceeds_the_stream_window_and_resumes_on_update() -> None:
    pair = Pair.create(gateway_settings=SMALL)
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.agent.send_response(sid, status=200)
    assert pair.agent.send_data(sid, b"a" * 2500) == 2500
    pair.agent.end_stream(sid)
    pair.pump()
    events = pair.take("gateway")
    assert len(body_of(events, sid)) == 1000
    assert pair.agent.stream_send_window(sid) == 0
    assert pair.agent.stream_outbound_buffered(sid) == 1500
    # consuming less than half the window sends nothing
    pair.gateway.consumed(sid, 499)
    assert pair.gateway.data_to_send() == []
    pair.gateway.consumed(sid, 1)
    assert frames(pair.gateway.data_to_send()) == [WindowUpdate(sid, 500)]
    pair.agent.receive_data(message(WindowUpdate(sid, 500)))
    pair.pump()
    assert len(body_of(pair.take("gateway"), sid)) == 500
    pair.gateway.consumed(sid, 1000)
    pair.pump()
    events = pair.take("gateway")
    assert len(body_of(events, sid)) == 1000
    assert events[-1] == StreamEnded(sid)


def test_connection_window_bounds_all_streams_together() -> None:
    pair = Pair.create(gateway_settings=SMALL)
    sids = [pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True) for _ in range(4)]
    pair.pump()
    for sid in sids:
        pair.agent.send_response(sid, status=200)
        pair.agent.send_data(sid, b"z" * 1000)
    pair.pump()
    events = pair.take("gateway")
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == 3000
    assert pair.agent.connection_send_window == 0
    assert pair.gateway.inbound_buffered == 3000
    for sid in sids[:3]:
        pair.gateway.consumed(sid, 1000)
    pair.pump()
    assert body_of(pair.take("gateway"), sids[3]) == b"z" * 1000


def test_peer_exceeding_the_stream_window_gets_a_stream_flow_control_error() -> None:
    agent = opened(Role.AGENT, settings=SMALL)
    agent.receive_data(message(Request(1, b"POST", b"/"), Request(3, b"POST", b"/")))
    agent.receive_data(message(Data(1, b"x" * 1001), Data(3, b"y" * 10)))
    events = agent.events_received()
    assert (
        StreamReset(
            1,
            ErrorCode.FLOW_CONTROL_ERROR,
            "DATA of 1001 bytes exceeds the stream window 1000",
            False,
        )
        in events
    )
    assert body_of(events, 3) == b"y" * 10
    assert agent.state is ConnectionState.OPEN
    assert agent.inbound_buffered == 10  # the refused 1001 bytes were credited back


def test_peer_exceeding_the_connection_window_is_a_connection_error() -> None:
    agent = opened(Role.AGENT, settings=SMALL)
    agent.receive_data(message(*(Request(i, b"POST", b"/") for i in (1, 3, 5, 7))))
    agent.receive_data(message(Data(1, b"x" * 1000), Data(3, b"x" * 1000), Data(5, b"x" * 1000)))
    agent.receive_data(message(Data(7, b"x")))
    [end] = terminated(agent.events_received())
    assert end.error_code is ErrorCode.FLOW_CONTROL_ERROR
    assert "exceeds the connection window 0" in end.reason


@pytest.mark.parametrize(
    ("frame", "level", "code"),
    [
        (WindowUpdate(1, 0), "stream", ErrorCode.PROTOCOL_ERROR),
        (WindowUpdate(1, 2**31), "stream", ErrorCode.PROTOCOL_ERROR),
        (WindowUpdate(1, MAX_WINDOW), "stream", ErrorCode.FLOW_CONTROL_ERROR),
        (WindowUpdate(0, 0), "connection", ErrorCode.PROTOCOL_ERROR),
        (WindowUpdate(0, MAX_WINDOW), "connection", ErrorCode.FLOW_CONTROL_ERROR),
    ],
)
def test_bad_window_updates(frame: WindowUpdate, level: str, code: ErrorCode) -> None:
    gateway = opened(Role.GATEWAY)
    gateway.send_request(method=b"GET", path=b"/")
    gateway.data_to_send()
    gateway.receive_data(message(frame))
    events = gateway.events_received()
    if level == "stream":
        [reset] = events
        assert isinstance(reset, StreamReset)
        assert reset.error_code is code
        assert gateway.state is ConnectionState.OPEN
    else:
        [end] = terminated(events)
        assert end.error_code is code


def test_send_data_accepts_at_most_the_capacity_then_signals_room() -> None:
    limits = SendLimits(max_stream_buffer=1000, max_connection_buffer=1500)
    pair = Pair.create(gateway_settings=SMALL, agent_limits=limits)
    s1 = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    s3 = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.agent.send_response(s1, status=200)
    pair.agent.send_response(s3, status=200)
    assert pair.agent.send_capacity(s1) == 1000
    assert pair.agent.send_data(s1, b"a" * 1200) == 1000
    assert pair.agent.send_capacity(s1) == 0
    assert pair.agent.send_data(s1, b"a") == 0
    assert pair.agent.send_capacity(s3) == 500  # the connection-wide limit binds
    assert pair.agent.send_data(s3, b"b" * 600) == 500
    assert pair.agent.outbound_buffered == 1500
    pair.agent.data_to_send()  # windows allow 1000 + 500: both buffers drain
    events = pair.agent.events_received()
    assert Counter(events) == Counter(  # in either order
        [SendCapacityAvailable(s1, 1000), SendCapacityAvailable(s3, 1000)]
    )
    assert pair.agent.outbound_buffered == 0
    # no further notifications without a new shortfall
    pair.agent.send_data(s1, b"c")
    pair.agent.data_to_send()
    assert pair.agent.events_received() == []


def test_capacity_is_zero_for_streams_that_cannot_send() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    assert pair.gateway.send_capacity(sid) == 0
    assert pair.gateway.send_capacity(999) == 0


def test_data_is_split_at_the_peers_max_frame_size_and_batched_into_messages() -> None:
    agent_settings = Settings(
        max_frame_size=16_384, max_message_size=40_000, max_header_block_size=16_384
    )
    pair = Pair.create(agent_settings=agent_settings)
    sid = pair.gateway.send_request(method=b"POST", path=b"/")
    pair.pump()
    payload = bytes(range(256)) * 200  # 51200 bytes
    assert pair.gateway.send_data(sid, payload) == len(payload)
    messages = pair.gateway.data_to_send()
    assert all(len(m) <= 40_000 for m in messages)
    sizes = [len(f.data) for f in frames(messages) if isinstance(f, Data)]
    assert sizes == [16_384, 16_384, 16_384, 2048]
    assert len(messages) == 2
    for m in messages:
        pair.agent.receive_data(m)
    assert body_of(pair.agent.events_received(), sid) == payload


def test_data_to_send_budget_bounds_what_is_pulled() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"POST", path=b"/")
    pair.gateway.data_to_send()
    pair.gateway.send_data(sid, b"q" * 10_000)
    first = pair.gateway.data_to_send(1000)
    assert sum(map(len, first)) == 1000
    rest = pair.gateway.data_to_send(4)  # tiny budgets still make progress
    assert sum(map(len, rest)) == 13
    assert (
        sum(
            len(f.data)
            for f in frames(first + rest + pair.gateway.data_to_send())
            if isinstance(f, Data)
        )
        == 10_000
    )


def test_bytes_of_a_reset_stream_are_credited_back_and_late_consumed_is_ignored() -> None:
    pair = Pair.create(
        gateway_settings=Settings(initial_stream_window=2000, connection_window=3000)
    )
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.agent.send_response(sid, status=200)
    pair.agent.send_data(sid, b"r" * 2000)
    pair.pump()
    assert pair.gateway.inbound_buffered == 2000
    pair.gateway.reset_stream(sid)
    assert pair.gateway.inbound_buffered == 0
    assert frames(pair.gateway.data_to_send())[-1] == WindowUpdate(0, 2000)
    pair.gateway.consumed(sid, 1000)  # ignored, no double credit
    assert pair.gateway.data_to_send() == []


def test_bytes_still_held_after_a_normal_close_keep_counting_until_consumed() -> None:
    pair = Pair.create(
        gateway_settings=Settings(initial_stream_window=1000, connection_window=1000)
    )
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.agent.send_response(sid, status=200)
    pair.agent.send_data(sid, b"r" * 900)
    pair.agent.end_stream(sid)
    pair.pump()
    assert pair.gateway.open_streams == 0
    assert pair.gateway.stream_inbound_buffered(sid) == 900
    assert pair.gateway.inbound_buffered == 900
    pair.gateway.consumed(sid, 400)
    assert pair.gateway.data_to_send() == []  # 400 < half of 1000
    with pytest.raises(LocalProtocolError, match="only 500 were outstanding"):
        pair.gateway.consumed(sid, 501)
    pair.gateway.consumed(sid, 500)
    assert frames(pair.gateway.data_to_send()) == [WindowUpdate(0, 900)]  # no stream update
    assert pair.gateway.stream_inbound_buffered(sid) == 0
    assert pair.gateway.inbound_buffered == 0


def test_resetting_a_closed_stream_credits_what_it_still_held() -> None:
    # Found by the property test: a caller that gives up a complete response it had not read
    # (the stream already closed both ways) must not keep those bytes out of the connection
    # window, or every later stream of the tunnel shares a window that shrinks for good.
    pair = Pair.create(gateway_settings=Settings(initial_stream_window=1000, connection_window=700))
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.agent.send_response(sid, status=200)
    pair.agent.send_data(sid, b"r" * 400)
    pair.agent.end_stream(sid)
    pair.pump()
    assert sid not in pair.gateway.stream_ids()
    pair.gateway.consumed(sid, 50)
    pair.gateway.reset_stream(sid)
    assert frames(pair.gateway.data_to_send()) == [WindowUpdate(0, 400)]  # no RESET: it is gone
    assert pair.gateway.inbound_buffered == 0
    assert pair.gateway.connection_receive_window == 700
    pair.gateway.consumed(sid, 1)  # a late consumed after the reset is ignored
    pair.gateway.reset_stream(sid)  # and so is a second reset
    assert pair.gateway.data_to_send() == []


def test_small_response_is_not_queued_behind_a_saturating_download() -> None:
    """Fairness: a 200-byte answer goes out while a big stream saturates the connection."""
    huge = Settings(initial_stream_window=MAX_WINDOW, connection_window=MAX_WINDOW)
    limits = SendLimits(max_stream_buffer=8 << 20, max_connection_buffer=16 << 20)
    pair = Pair.create(gateway_settings=huge, agent_limits=limits)
    big = pair.gateway.send_request(method=b"GET", path=b"/big", end_stream=True)
    pair.pump()
    pair.agent.send_response(big, status=200)
    chunk = b"B" * 65_536
    while pair.agent.send_data(big, chunk):  # 8 MiB queued, all sendable
        pass
    first = pair.agent.data_to_send(4 * 65_548)  # the link drains slowly
    assert sum(map(len, first)) <= 4 * 65_548 + 64
    small = pair.gateway.send_request(method=b"GET", path=b"/small", end_stream=True)
    for m in pair.gateway.data_to_send():
        pair.agent.receive_data(m)
    pair.agent.send_response(small, status=200)
    pair.agent.send_data(small, b"s" * 200)
    pair.agent.end_stream(small)
    # One pull with a budget of two big frames holds the small stream's whole answer.
    messages = pair.agent.data_to_send(2 * 65_548)
    out = frames(messages)
    small_frames = [f for f in out if getattr(f, "stream_id", None) == small]
    assert small_frames[0] == Response(small, 200)
    assert small_frames[1:] == [Data(small, b"s" * 200, end_stream=True)]
    small_end = out.index(small_frames[-1])
    ahead = [f for f in out[:small_end] if isinstance(f, Data) and f.stream_id == big]
    assert len(ahead) == 1  # the download only got one turn ahead of it
    assert pair.agent.stream_outbound_buffered(big) > 7 << 20  # and is far from done
    for m in first + messages:
        pair.gateway.receive_data(m)
    events = pair.gateway.events_received()
    assert ResponseReceived(small, 200, ()) in events
    assert body_of(events, small) == b"s" * 200
    assert StreamEnded(small) in events
    assert StreamEnded(big) not in events


def test_round_robin_interleaves_equal_streams_frame_by_frame() -> None:
    pair = Pair.create(
        agent_settings=Settings(
            max_frame_size=16_384, max_message_size=1 << 20, max_header_block_size=16_384
        )
    )
    sids = [pair.gateway.send_request(method=b"POST", path=b"/") for _ in range(3)]
    pair.gateway.data_to_send()
    for sid in sids:
        pair.gateway.send_data(sid, b"d" * 40_000)
    order = [f.stream_id for f in frames(pair.gateway.data_to_send()) if isinstance(f, Data)]
    assert order == [1, 3, 5, 1, 3, 5, 1, 3, 5]


def test_writable_buffers_are_copied_immutable_ones_are_not() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"POST", path=b"/")
    pair.pump()
    buf = bytearray(b"abc")
    assert pair.gateway.send_data(sid, buf) == 3
    buf[:] = b"XYZ"  # the caller reuses its buffer right away
    view = memoryview(bytearray(b"defg"))
    assert pair.gateway.send_data(sid, view[1:3]) == 2
    view[1:3] = b"!!"
    wide = memoryview(bytes(8)).cast("I")  # 2 items of 4 bytes: counted in bytes
    assert pair.gateway.send_data(sid, wide) == 8
    pair.pump()
    assert body_of(pair.take("agent"), sid) == b"abcef" + bytes(8)
