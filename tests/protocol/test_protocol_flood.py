"""A peer that floods: answers are merged or bounded, useless frames and stream churn are
rate-limited, and passing a bound ends the connection with ENHANCE_YOUR_CALM (SPEC §9.1).

Bytes in, bytes and events out: no sockets, no clock (time is passed to ``receive_data``).
"""

from __future__ import annotations

import pytest

from protocol import (
    Connection,
    ConnectionTerminated,
    ErrorCode,
    FloodLimits,
    PingAcknowledged,
    Role,
    Settings,
    StreamReset,
)
from protocol.frames import (
    Data,
    Frame,
    GoAway,
    Ping,
    Pong,
    Request,
    Reset,
    Response,
    WindowUpdate,
)
from protocol.testing import frames, hello, message, opened, terminated

CALM = ErrorCode.ENHANCE_YOUR_CALM


def pings(first: int, count: int) -> bytes:
    return message(*(Ping(i.to_bytes(8, "big")) for i in range(first, first + count)))


def calmed(conn: Connection) -> ConnectionTerminated:
    """The connection ended with ENHANCE_YOUR_CALM, and its last words are that GOAWAY."""
    [end] = terminated(conn.events_received())
    assert end.error_code is CALM
    assert not end.remote
    sent = frames(conn.data_to_send())
    assert isinstance(sent[-1], GoAway)
    assert sent[-1].error_code is CALM
    assert sent[-1].debug == end.reason
    assert not any(isinstance(f, Pong | Reset) for f in sent), "answers are dropped at the end"
    return end


# -- PING: answers are merged ---------------------------------------------------------------


def test_a_ping_flood_queues_one_pong_answering_the_latest_ping() -> None:
    conn = opened(Role.GATEWAY)
    for first in range(0, 900, 300):
        conn.receive_data(pings(first, 300))
    assert conn.events_received() == []
    assert frames(conn.data_to_send()) == [Pong((899).to_bytes(8, "big"))]
    assert conn.data_to_send() == []


def test_a_pong_never_overtakes_our_hello() -> None:
    conn = Connection(Role.GATEWAY)  # its HELLO is queued, not yet pulled
    conn.receive_data(hello(Role.AGENT) + pings(7, 1))
    kinds = [type(f).__name__ for f in frames(conn.data_to_send())]
    assert kinds == ["Hello", "Pong"]


def test_each_ping_read_in_time_is_answered() -> None:
    conn = opened(Role.AGENT)
    for i in range(5):
        conn.receive_data(pings(i, 1))
        assert frames(conn.data_to_send()) == [Pong(i.to_bytes(8, "big"))]


# -- frames without data: a token bucket ----------------------------------------------------


def test_more_pings_than_the_burst_end_the_connection() -> None:
    conn = opened(Role.GATEWAY, flood=FloodLimits(idle_frame_burst=10))
    conn.receive_data(pings(0, 10))
    assert not terminated(conn.events_received())
    conn.receive_data(pings(10, 1))
    end = calmed(conn)
    assert "PING" in end.reason
    assert "idle_frame_burst" in end.reason


def test_the_bucket_refills_with_the_time_the_caller_passes() -> None:
    conn = opened(Role.GATEWAY, flood=FloodLimits(idle_frame_burst=10, idle_frame_rate=10.0))
    conn.receive_data(pings(0, 10), now=100.0)
    conn.receive_data(pings(10, 5), now=100.5)  # 0.5 s at 10/s: 5 more
    assert not terminated(conn.events_received())
    conn.receive_data(pings(15, 1), now=100.5)
    calmed(conn)


def test_a_steady_heartbeat_never_runs_out() -> None:
    conn = opened(Role.AGENT, flood=FloodLimits(idle_frame_burst=2, idle_frame_rate=1.0))
    for second in range(100):
        conn.receive_data(pings(second, 1), now=float(second))
        conn.data_to_send()
    assert not terminated(conn.events_received())


def test_unsolicited_pongs_count() -> None:
    conn = opened(Role.GATEWAY, flood=FloodLimits(idle_frame_burst=3))
    conn.receive_data(message(*(Pong(b"12345678") for _ in range(3))))
    assert conn.events_received() == [PingAcknowledged(b"12345678")] * 3
    conn.receive_data(message(Pong(b"12345678")))
    calmed(conn)


def gateway_with_stream(flood: FloodLimits) -> tuple[Connection, int]:
    """A gateway with one open stream whose response head arrived."""
    conn = opened(Role.GATEWAY, flood=flood)
    sid = conn.send_request(method=b"GET", path=b"/", end_stream=True)
    conn.data_to_send()
    conn.receive_data(message(Response(sid, 200)))
    conn.events_received()
    return conn, sid


def test_empty_data_without_end_counts() -> None:
    conn, sid = gateway_with_stream(FloodLimits(idle_frame_burst=4))
    conn.receive_data(message(*(Data(sid, b"") for _ in range(4))))
    assert conn.events_received() == []
    conn.receive_data(message(Data(sid, b"")))
    assert "empty DATA" in calmed(conn).reason


def test_empty_data_with_end_is_free() -> None:
    conn, sid = gateway_with_stream(FloodLimits(idle_frame_burst=1))
    conn.receive_data(message(Data(sid, b"x"), Data(sid, b"", end_stream=True)))
    assert not terminated(conn.events_received())


def closed_stream(flood: FloodLimits) -> tuple[Connection, int]:
    """A gateway whose stream 1 completed normally (so it is closed, not remembered as reset)."""
    conn, sid = gateway_with_stream(flood)
    conn.receive_data(message(Data(sid, b"", end_stream=True)))
    conn.data_to_send()
    conn.events_received()
    assert conn.open_streams == 0
    return conn, sid


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        (WindowUpdate(1, 1), "WINDOW_UPDATE of a closed stream"),
        (Reset(1, ErrorCode.CANCEL), "RESET of a closed stream"),
    ],
)
def test_frames_on_closed_streams_count(frame: Frame, what: str) -> None:
    conn, _ = closed_stream(FloodLimits(idle_frame_burst=5))
    conn.receive_data(message(*([frame] * 5)))
    assert not terminated(conn.events_received())
    assert conn.data_to_send() == [], "ignored, not answered"
    conn.receive_data(message(frame))
    assert what in calmed(conn).reason


def test_frames_answered_with_a_stream_error_count() -> None:
    conn = opened(Role.GATEWAY, flood=FloodLimits(idle_frame_burst=3))
    sids = [conn.send_request(method=b"GET", path=b"/", end_stream=True) for _ in range(4)]
    conn.data_to_send()
    # A zero increment on a stream is a stream error: it costs the receiver a RESET.
    conn.receive_data(message(*(WindowUpdate(sid, 0) for sid in sids[:3])))
    assert frames(conn.data_to_send()) == [
        Reset(sid, ErrorCode.PROTOCOL_ERROR, "stream WINDOW_UPDATE of 0") for sid in sids[:3]
    ]
    conn.receive_data(message(WindowUpdate(sids[3], 0)))
    assert "stream error" in calmed(conn).reason


def test_repeated_goaways_count() -> None:
    conn = opened(Role.GATEWAY, flood=FloodLimits(idle_frame_burst=2))
    conn.receive_data(message(*([GoAway(0, ErrorCode.NO_ERROR)] * 3)))
    assert not any(e.error_code is CALM for e in terminated(conn.events_received()))
    conn = opened(Role.AGENT, flood=FloodLimits(idle_frame_burst=2))
    sid = 1
    conn.receive_data(message(Request(sid, b"GET", b"/")))  # keeps the drain from finishing
    conn.receive_data(message(*([GoAway(1, ErrorCode.NO_ERROR)] * 3)))
    conn.events_received()
    conn.receive_data(message(GoAway(1, ErrorCode.NO_ERROR)))
    assert "GOAWAY" in calmed(conn).reason


# -- stream churn: open and reset --------------------------------------------------------------


def test_rapid_reset_by_the_gateway_is_bounded_on_the_agent() -> None:
    conn = opened(Role.AGENT, flood=FloodLimits(stream_churn_burst=50))
    churn = [
        frame
        for sid in range(1, 101, 2)
        for frame in (Request(sid, b"GET", b"/"), Reset(sid, ErrorCode.CANCEL))
    ]
    conn.receive_data(message(*churn))
    assert not terminated(conn.events_received())
    conn.receive_data(message(Request(101, b"GET", b"/"), Reset(101, ErrorCode.CANCEL)))
    end = calmed(conn)
    assert "reset by the peer" in end.reason
    assert "stream_churn_burst" in end.reason


def test_our_own_resets_and_resets_of_our_streams_are_not_churn() -> None:
    conn = opened(Role.GATEWAY, flood=FloodLimits(stream_churn_burst=1, idle_frame_burst=1))
    for _ in range(20):
        sid = conn.send_request(method=b"GET", path=b"/", end_stream=True)
        conn.receive_data(message(Reset(sid, ErrorCode.CONNECT_ERROR)))
        other = conn.send_request(method=b"GET", path=b"/", end_stream=True)
        conn.reset_stream(other)
    events = conn.events_received()
    assert not terminated(events)
    assert sum(isinstance(e, StreamReset) for e in events) == 20


def test_refused_requests_count_as_churn_on_the_gateway() -> None:
    conn = opened(
        Role.GATEWAY,
        settings=Settings(max_concurrent_streams=0),
        flood=FloodLimits(stream_churn_burst=20),
    )
    for sid in range(2, 42, 2):
        conn.receive_data(message(Request(sid, b"GET", b"/", end_stream=True)))
        [refusal] = frames(conn.data_to_send())
        assert refusal == Reset(sid, ErrorCode.REFUSED_STREAM, "0 concurrent streams open")
    conn.receive_data(message(Request(42, b"GET", b"/", end_stream=True)))
    assert "refused" in calmed(conn).reason


# -- answers the peer does not read ----------------------------------------------------------


def test_a_peer_that_provokes_answers_without_reading_them_is_cut_off() -> None:
    conn = opened(
        Role.GATEWAY,
        settings=Settings(max_concurrent_streams=0),
        flood=FloodLimits(max_queued_answers=10, stream_churn_burst=1000),
    )
    requests = [Request(sid, b"GET", b"/", end_stream=True) for sid in range(2, 22, 2)]
    conn.receive_data(message(*requests))  # 10 refusals queued: at the limit
    assert not terminated(conn.events_received())
    conn.receive_data(message(Request(22, b"GET", b"/", end_stream=True)))
    end = calmed(conn)
    assert "max_queued_answers" in end.reason


def test_answers_read_in_time_never_reach_the_limit() -> None:
    conn = opened(
        Role.GATEWAY,
        settings=Settings(max_concurrent_streams=0),
        flood=FloodLimits(max_queued_answers=2, stream_churn_burst=1000),
    )
    for sid in range(2, 202, 4):
        conn.receive_data(message(Request(sid, b"GET", b"/"), Request(sid + 2, b"GET", b"/")))
        assert len(frames(conn.data_to_send())) == 2
    assert not terminated(conn.events_received())


def test_flood_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_queued_answers"):
        FloodLimits(max_queued_answers=0)
    with pytest.raises(ValueError, match="idle_frame_rate"):
        FloodLimits(idle_frame_rate=0.0)
