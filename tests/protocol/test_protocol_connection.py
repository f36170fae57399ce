"""Connection behaviour: handshake, negotiation, streams, errors, ping, GOAWAY, teardown."""

from __future__ import annotations

import pytest

from protocol import (
    Connection,
    ConnectionState,
    ConnectionTerminated,
    ErrorCode,
    GoAwayReceived,
    HeadTooLarge,
    HelloReceived,
    LocalProtocolError,
    PingAcknowledged,
    RequestReceived,
    ResponseReceived,
    Role,
    Settings,
    StreamClosedError,
    StreamEnded,
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
from protocol.testing import Pair, body_of, frames, hello, message, opened, terminated

# -- handshake ---------------------------------------------------------------------------


def test_hello_exchange_reports_peer_identity_settings_and_capabilities() -> None:
    pair = Pair.create(agent_settings=Settings(max_concurrent_streams=7))
    [g_hello] = pair.take("gateway")
    [a_hello] = pair.take("agent")
    assert isinstance(g_hello, HelloReceived)
    assert isinstance(a_hello, HelloReceived)
    assert g_hello.peer.role is Role.AGENT
    assert g_hello.peer.version == 1
    assert dict(g_hello.peer.identity) == {"agent-id": "a-1", "plane-name": "p"}
    assert g_hello.peer.capabilities == ("exec",)
    assert g_hello.peer.settings.max_concurrent_streams == 7
    assert a_hello.peer.role is Role.GATEWAY
    assert pair.gateway.state is ConnectionState.OPEN
    assert pair.gateway.available_streams == 7


def test_first_message_is_exactly_our_hello() -> None:
    conn = Connection(Role.GATEWAY)
    assert conn.data_to_send() == [hello(Role.GATEWAY)]
    assert conn.data_to_send() == []


def test_highest_common_version_is_negotiated_and_used_in_every_header() -> None:
    pair = Pair(
        Connection(Role.GATEWAY, versions=(1, 2, 5)),
        Connection(Role.AGENT, versions=(3, 2, 1)),
    )
    pair.pump()
    assert pair.gateway.peer is not None
    assert pair.gateway.peer.version == 2
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    [msg] = pair.gateway.data_to_send()
    assert msg[0] == 2
    pair.agent.receive_data(msg)
    pair.collect()
    assert [type(e) for e in pair.take("agent")] == [HelloReceived, RequestReceived, StreamEnded]
    pair.agent.send_response(sid, status=204, end_stream=True)
    pair.pump()
    assert [type(e) for e in pair.take("gateway")] == [HelloReceived, ResponseReceived, StreamEnded]


def assert_failed(conn: Connection, code: ErrorCode, text: str) -> None:
    """The connection ended with ``code``, told the peer with GOAWAY, and says why."""
    events = conn.events_received()
    [end] = terminated(events)
    assert end.error_code is code, end
    assert text in end.reason
    assert conn.state is ConnectionState.CLOSED
    goaways = [f for f in frames(conn.data_to_send()) if isinstance(f, GoAway)]
    assert goaways[-1].error_code is code
    assert text in goaways[-1].debug


def test_no_common_version_is_version_mismatch() -> None:
    conn = Connection(Role.AGENT)
    conn.data_to_send()
    conn.receive_data(hello(Role.GATEWAY, versions=(2, 3)))
    assert_failed(conn, ErrorCode.VERSION_MISMATCH, "no common protocol version")


def test_peer_with_our_own_role_is_rejected() -> None:
    conn = Connection(Role.AGENT)
    conn.receive_data(hello(Role.AGENT))
    assert_failed(conn, ErrorCode.PROTOCOL_ERROR, "expected GATEWAY")


def test_frame_before_hello_is_a_connection_error() -> None:
    conn = Connection(Role.AGENT)
    conn.receive_data(message(Ping(b"12345678")))
    assert_failed(conn, ErrorCode.PROTOCOL_ERROR, "PING frame before the peer's HELLO")


def test_data_before_hello_is_a_connection_error() -> None:
    conn = Connection(Role.AGENT)
    conn.receive_data(message(Data(1, b"x")))
    assert_failed(conn, ErrorCode.PROTOCOL_ERROR, "DATA frame before the peer's HELLO")


def test_second_hello_is_a_connection_error() -> None:
    conn = opened(Role.AGENT)
    conn.receive_data(hello(Role.GATEWAY))
    assert_failed(conn, ErrorCode.PROTOCOL_ERROR, "second HELLO")


def test_invalid_peer_setting_is_settings_error() -> None:
    conn = Connection(Role.AGENT)
    raw = bytearray(hello(Role.GATEWAY))
    # settings start after header(12) + magic(4) + role(1) + count(1) + version(1) + n(2);
    # the fourth pair is INITIAL_STREAM_WINDOW
    assert raw[39:41] == b"\x00\x04"
    raw[41:45] = bytes(4)  # INITIAL_STREAM_WINDOW = 0
    conn.receive_data(bytes(raw))
    assert_failed(conn, ErrorCode.SETTINGS_ERROR, "initial_stream_window")


def test_wrong_version_byte_after_hello_is_version_mismatch() -> None:
    conn = opened(Role.AGENT)
    conn.receive_data(Request(1, b"GET", b"/").encode(7))
    assert_failed(conn, ErrorCode.VERSION_MISMATCH, "carries version 7, expected 1")


def test_local_calls_before_peer_hello_raise() -> None:
    conn = Connection(Role.GATEWAY)
    with pytest.raises(LocalProtocolError, match="HELLO not received"):
        conn.send_request(method=b"GET", path=b"/")
    with pytest.raises(LocalProtocolError, match="HELLO not received"):
        conn.ping(b"12345678")
    assert conn.available_streams == 0


def test_oversized_message_is_frame_size_error() -> None:
    conn = opened(
        Role.AGENT,
        settings=Settings(
            max_frame_size=16_384, max_message_size=16_396, max_header_block_size=16_384
        ),
    )
    conn.receive_data(message(*[Ping(b"12345678")] * 821))  # 821 * 20 = 16420 bytes
    assert_failed(conn, ErrorCode.FRAME_SIZE_ERROR, "message of 16420 bytes")


def test_bad_local_hello_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="identity key"):
        Connection(Role.AGENT, identity={"bad key": "v"})
    with pytest.raises(ValueError, match="duplicates"):
        Connection(Role.AGENT, capabilities=("a", "a"))
    with pytest.raises(ValueError, match="exceeds 16384"):
        Connection(Role.AGENT, identity={"k": "v" * 20_000})
    with pytest.raises(ValueError, match="versions"):
        Connection(Role.AGENT, versions=())


# -- streams ---------------------------------------------------------------------------


def test_request_response_round_trip_preserves_head_and_streams_bodies() -> None:
    pair = Pair.create()
    pair.take("gateway"), pair.take("agent")
    headers = [(b"Accept", b"a"), (b"X-Dup", b"1"), (b"x-dup", b"2")]
    sid = pair.gateway.send_request(
        method=b"POST",
        path=b"/api/v1/namespaces/x/pods?dryRun=All",
        headers=headers,
        target=b"kube-apiserver",
    )
    assert sid == 1
    assert pair.gateway.send_data(sid, b"req-") == 4
    assert pair.gateway.send_data(sid, memoryview(b"body")) == 4
    pair.gateway.end_stream(sid)
    pair.pump()
    events = pair.take("agent")
    assert events[0] == RequestReceived(
        1,
        b"POST",
        b"/api/v1/namespaces/x/pods?dryRun=All",
        tuple(headers),
        b"kube-apiserver",
        False,
        False,
    )
    assert body_of(events, sid) == b"req-body"
    assert events[-1] == StreamEnded(sid)
    pair.agent.send_response(sid, status=201, headers=[(b"content-type", b"application/json")])
    pair.agent.send_data(sid, bytearray(b"{}"))
    pair.agent.end_stream(sid)
    pair.pump()
    events = pair.take("gateway")
    assert events[0] == ResponseReceived(sid, 201, ((b"content-type", b"application/json"),))
    assert body_of(events, sid) == b"{}"
    assert events[-1] == StreamEnded(sid)
    assert pair.gateway.open_streams == 0
    assert pair.agent.open_streams == 0


def test_request_received_reports_whether_the_head_carried_end_stream() -> None:
    pair = Pair.create()
    bodiless = pair.gateway.send_request(method=b"GET", path=b"/a", end_stream=True)
    with_body = pair.gateway.send_request(method=b"POST", path=b"/b")
    pair.pump()
    events = pair.take("agent")
    requests = {e.stream_id: e for e in events if isinstance(e, RequestReceived)}
    assert requests[bodiless].end_stream is True
    assert requests[with_body].end_stream is False
    # END_STREAM on the head: StreamEnded follows right away; otherwise it waits for END.
    assert StreamEnded(bodiless) in events
    assert StreamEnded(with_body) not in events
    pair.gateway.end_stream(with_body)
    pair.pump()
    assert pair.take("agent") == [StreamEnded(with_body)]


def test_agent_may_open_even_streams_towards_the_gateway() -> None:
    pair = Pair.create()
    sid = pair.agent.send_request(method=b"GET", path=b"/healthz", end_stream=True)
    assert sid == 2
    assert pair.agent.send_request(method=b"GET", path=b"/x", end_stream=True) == 4
    pair.pump()
    assert [e.stream_id for e in pair.take("gateway") if isinstance(e, RequestReceived)] == [2, 4]


def test_upgrade_turns_the_stream_into_a_bidirectional_pipe() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(
        method=b"GET", path=b"/exec", upgrade=True, headers=[(b"Upgrade", b"SPDY/3.1")]
    )
    with pytest.raises(LocalProtocolError, match="await-upgrade"):
        pair.gateway.send_data(sid, b"too early")
    pair.pump()
    [req] = [e for e in pair.take("agent") if isinstance(e, RequestReceived)]
    assert req.upgrade
    pair.agent.send_response(sid, status=101)
    pair.agent.send_data(sid, b"stdout")
    pair.pump()
    events = pair.take("gateway")
    [resp] = [e for e in events if isinstance(e, ResponseReceived)]
    assert resp.upgraded
    assert body_of(events, sid) == b"stdout"
    pair.gateway.send_data(sid, b"stdin")
    pair.gateway.end_stream(sid)
    pair.pump()
    events = pair.take("agent")
    assert body_of(events, sid) == b"stdin"
    assert events[-1] == StreamEnded(sid)
    pair.agent.send_data(sid, b"more")
    pair.agent.end_stream(sid)
    pair.pump()
    assert body_of(pair.take("gateway"), sid) == b"more"
    assert pair.gateway.open_streams == pair.agent.open_streams == 0


def test_refused_upgrade_lets_the_requester_only_end() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"GET", path=b"/exec", upgrade=True)
    pair.pump()
    pair.agent.send_response(sid, status=403, end_stream=True)
    pair.pump()
    with pytest.raises(LocalProtocolError, match="await-upgrade"):
        pair.gateway.send_data(sid, b"x")
    pair.gateway.end_stream(sid)
    pair.pump()
    assert pair.gateway.open_streams == pair.agent.open_streams == 0


def test_requester_data_before_101_is_a_stream_error_on_receipt() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/", upgrade=True), Data(1, b"x")))
    events = agent.events_received()
    assert isinstance(events[0], RequestReceived)
    assert events[1] == StreamReset(
        1,
        ErrorCode.PROTOCOL_ERROR,
        "DATA not allowed from the requester in state await-upgrade",
        False,
    )
    assert frames(agent.data_to_send())[-1] == Reset(
        1, ErrorCode.PROTOCOL_ERROR, "DATA not allowed from the requester in state await-upgrade"
    )


def test_101_without_upgrade_is_refused_both_ways() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"GET", path=b"/")
    pair.pump()
    with pytest.raises(LocalProtocolError, match="status 101 not allowed"):
        pair.agent.send_response(sid, status=101)
    with pytest.raises(LocalProtocolError, match="status 100 not allowed"):
        pair.agent.send_response(sid, status=100)
    gateway = pair.gateway
    gateway.receive_data(message(Response(sid, 101)))
    [reset] = gateway.events_received()
    assert reset == StreamReset(
        sid, ErrorCode.PROTOCOL_ERROR, "status 101 not allowed (upgrade requested: False)", False
    )


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (Request(3, b"GET", b"/"), "REQUEST on stream 3: GATEWAY streams are ours"),
        (Data(3, b"x"), "DATA on stream 3, which was never opened"),
        (Response(5, 200), "RESPONSE on stream 5, which was never opened"),
        (Reset(7, ErrorCode.CANCEL), "RESET on stream 7, which was never opened"),
        (WindowUpdate(9, 1), "WINDOW_UPDATE on stream 9, which was never opened"),
        (Data(4, b"x"), "DATA on stream 4, which was never opened"),
        (Response(2, 200), "RESPONSE on stream 2, which was never opened"),
    ],
)
def test_frames_on_idle_streams_are_connection_errors(frame: Frame, text: str) -> None:
    gateway = opened(Role.GATEWAY)
    gateway.send_request(method=b"GET", path=b"/")  # stream 1 exists
    gateway.data_to_send()
    gateway.receive_data(message(frame))
    assert_failed(gateway, ErrorCode.PROTOCOL_ERROR, text)


def test_request_ids_must_increase() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(5, b"GET", b"/", end_stream=True)))
    agent.receive_data(message(Request(3, b"GET", b"/")))
    assert_failed(agent, ErrorCode.PROTOCOL_ERROR, "REQUEST reuses stream id 3 (last opened 5)")


def test_second_request_head_on_open_stream_is_a_stream_error() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/"), Request(1, b"GET", b"/")))
    events = agent.events_received()
    assert events[-1] == StreamReset(
        1, ErrorCode.PROTOCOL_ERROR, "second REQUEST head on a stream", False
    )


def test_stream_error_resets_one_stream_and_the_rest_of_the_message_is_processed() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(
        message(
            Request(1, b"GET", b"/a"),
            Request(3, b"GET", b"/b"),
            Data(1, b"x", end_stream=True),
            Data(1, b"after end"),
            Data(3, b"fine", end_stream=True),
        )
    )
    events = agent.events_received()
    assert (
        StreamReset(
            1, ErrorCode.STREAM_CLOSED, "DATA not allowed from the requester in state closed", False
        )
        in events
    )
    assert body_of(events, 3) == b"fine"
    assert events[-1] == StreamEnded(3)
    assert agent.stream_ids() == [3]
    assert agent.state is ConnectionState.OPEN


def test_frames_after_our_reset_are_dropped_silently_but_credit_the_connection() -> None:
    agent = opened(Role.AGENT, settings=Settings(connection_window=100_000))
    agent.receive_data(message(Request(1, b"GET", b"/")))
    agent.reset_stream(1, ErrorCode.CANCEL, "caller left")
    assert frames(agent.data_to_send()) == [Reset(1, ErrorCode.CANCEL, "caller left")]
    agent.events_received()
    agent.receive_data(
        message(Data(1, b"x" * 60_000), WindowUpdate(1, 5), Reset(1, ErrorCode.NO_ERROR))
    )
    assert agent.events_received() == []
    assert frames(agent.data_to_send()) == [WindowUpdate(0, 60_000)]
    assert agent.state is ConnectionState.OPEN


def test_data_on_a_normally_closed_stream_is_answered_with_reset_stream_closed() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.agent.send_response(sid, status=200, end_stream=True)
    pair.pump()
    assert pair.agent.open_streams == 0
    pair.take("agent")
    pair.agent.receive_data(message(Data(sid, b"late")))
    assert pair.agent.events_received() == []
    assert frames(pair.agent.data_to_send()) == [
        Reset(sid, ErrorCode.STREAM_CLOSED, "DATA on a closed stream")
    ]
    # WINDOW_UPDATE and RESET on a closed stream are ignored
    pair.agent.receive_data(message(WindowUpdate(sid, 1), Reset(sid, ErrorCode.CANCEL)))
    assert pair.agent.events_received() == []
    assert pair.agent.data_to_send() == []


@pytest.mark.parametrize(
    ("frames_in", "code", "text"),
    [
        (
            [Data(1, b"x")],
            ErrorCode.PROTOCOL_ERROR,
            "DATA not allowed from the responder in state idle",
        ),
        (
            [Data(1, b"", end_stream=True)],
            ErrorCode.PROTOCOL_ERROR,
            "DATA not allowed from the responder in state idle",
        ),
        (
            [Response(1, 200), Response(1, 200)],
            ErrorCode.PROTOCOL_ERROR,
            "RESPONSE not allowed from the responder in state open",
        ),
        (
            [Response(1, 200, end_stream=True), Data(1, b"x")],
            ErrorCode.STREAM_CLOSED,
            "DATA not allowed from the responder in state closed",
        ),
        (
            [Response(1, 200, end_stream=True), Response(1, 200)],
            ErrorCode.STREAM_CLOSED,
            "RESPONSE not allowed from the responder in state closed",
        ),
        ([Response(1, 100)], ErrorCode.PROTOCOL_ERROR, "status 100 not allowed"),
        ([Response(1, 600)], ErrorCode.PROTOCOL_ERROR, "status 600 not allowed"),
    ],
)
def test_illegal_responder_frames_reset_the_stream(
    frames_in: list[Data | Response], code: ErrorCode, text: str
) -> None:
    gateway = opened(Role.GATEWAY)
    sid = gateway.send_request(method=b"GET", path=b"/")
    other = gateway.send_request(method=b"GET", path=b"/other")
    gateway.data_to_send()
    raw = b"".join(f.encode(1) for f in frames_in)
    gateway.receive_data(raw)
    events = gateway.events_received()
    resets = [e for e in events if isinstance(e, StreamReset)]
    assert resets == [
        StreamReset(sid, code, text if "status" not in text else resets[0].message, False)
    ]
    assert text in resets[0].message
    assert gateway.stream_ids() == [other]
    assert Reset(sid, code, resets[0].message) in frames(gateway.data_to_send())


def test_response_head_from_requester_is_a_stream_error() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/"), Response(1, 200)))
    assert agent.events_received()[-1] == StreamReset(
        1, ErrorCode.PROTOCOL_ERROR, "RESPONSE not allowed from the requester in state open", False
    )


def test_oversized_heads() -> None:
    pair = Pair.create(agent_settings=Settings(max_header_block_size=1024))
    with pytest.raises(HeadTooLarge, match="exceeds the peer's MAX_HEADER_BLOCK_SIZE 1024") as big:
        pair.gateway.send_request(method=b"GET", path=b"/", headers=[(b"big", b"v" * 1024)])
    assert (big.value.code, big.value.limit) == (ErrorCode.HEADER_ERROR, 1024)
    assert pair.gateway.open_streams == 0
    # A head that cannot be encoded at all is a HEADER_ERROR too, but not "too large".
    with pytest.raises(LocalProtocolError) as malformed:
        pair.gateway.send_request(method=b"GET", path=b"/", headers=[(b"bad name", b"v")])
    assert malformed.value.code is ErrorCode.HEADER_ERROR
    assert not isinstance(malformed.value, HeadTooLarge)
    # a peer that ignores the limit gets its stream refused with HEADER_ERROR
    agent = pair.agent
    agent.receive_data(message(Request(1, b"GET", b"/", ((b"big", b"v" * 1024),))))
    assert agent.events_received() == []
    [reset] = frames(agent.data_to_send())
    assert isinstance(reset, Reset)
    assert reset.error_code is ErrorCode.HEADER_ERROR
    assert "exceeds MAX_HEADER_BLOCK_SIZE 1024" in reset.message
    # and the id is consumed: the next REQUEST must be above it
    agent.receive_data(message(Request(3, b"GET", b"/", end_stream=True)))
    assert isinstance(agent.events_received()[0], RequestReceived)


def test_malformed_request_head_is_refused_and_other_streams_continue() -> None:
    agent = opened(Role.AGENT)
    bad = bytearray(Request(1, b"GET", b"/x").encode(1))
    bad[-2] = ord("x")  # path no longer starts with '/'
    agent.receive_data(bytes(bad) + Request(3, b"GET", b"/ok", end_stream=True).encode(1))
    assert [type(e) for e in agent.events_received()] == [RequestReceived, StreamEnded]
    [reset] = frames(agent.data_to_send())
    assert isinstance(reset, Reset)
    assert reset.stream_id == 1
    assert reset.error_code is ErrorCode.HEADER_ERROR


def test_malformed_response_head_resets_the_stream() -> None:
    gateway = opened(Role.GATEWAY)
    sid = gateway.send_request(method=b"GET", path=b"/")
    gateway.data_to_send()
    gateway.receive_data(bytes.fromhex("01030000 00000001 00000001 00"))
    [reset] = gateway.events_received()
    assert isinstance(reset, StreamReset)
    assert reset.stream_id == sid
    assert reset.error_code is ErrorCode.HEADER_ERROR


def test_concurrency_limit_enforced_both_ways() -> None:
    pair = Pair.create(agent_settings=Settings(max_concurrent_streams=2))
    a = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    assert pair.gateway.available_streams == 0
    with pytest.raises(LocalProtocolError, match="peer allows 2 concurrent streams") as info:
        pair.gateway.send_request(method=b"GET", path=b"/")
    assert info.value.code is ErrorCode.REFUSED_STREAM
    pair.pump()
    # a peer ignoring the limit is refused with REFUSED_STREAM
    pair.agent.receive_data(message(Request(99, b"GET", b"/")))
    [reset] = frames(pair.agent.data_to_send())
    assert reset == Reset(99, ErrorCode.REFUSED_STREAM, "2 concurrent streams open")
    # finishing one stream frees a slot
    pair.agent.send_response(a, status=200, end_stream=True)
    pair.pump()
    assert pair.gateway.available_streams == 1
    pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)


def test_zero_concurrent_streams_means_the_peer_may_open_none() -> None:
    pair = Pair.create(gateway_settings=Settings(max_concurrent_streams=0))
    assert pair.agent.available_streams == 0
    with pytest.raises(LocalProtocolError, match="allows 0"):
        pair.agent.send_request(method=b"GET", path=b"/")


def test_peer_reset_drops_queued_data_and_reports_remote() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"POST", path=b"/")
    pair.pump()
    pair.gateway.receive_data(message(Reset(sid, ErrorCode.CONNECT_ERROR, "apiserver down")))
    assert pair.gateway.events_received() == [
        StreamReset(sid, ErrorCode.CONNECT_ERROR, "apiserver down", True)
    ]
    with pytest.raises(StreamClosedError):
        pair.gateway.send_data(sid, b"x")
    assert pair.gateway.open_streams == 0


def test_local_misuse_raises_specific_errors() -> None:
    pair = Pair.create()
    gateway, agent = pair.gateway, pair.agent
    with pytest.raises(StreamClosedError, match="stream 9 is not open"):
        gateway.send_data(9, b"x")
    sid = gateway.send_request(method=b"GET", path=b"/")
    pair.pump()
    with pytest.raises(LocalProtocolError, match="response not allowed from the requester"):
        gateway.send_response(sid, status=200)
    with pytest.raises(
        LocalProtocolError, match="data not allowed from the responder in state idle"
    ):
        agent.send_data(sid, b"x")
    with pytest.raises(LocalProtocolError, match="end not allowed from the responder"):
        agent.end_stream(sid)
    gateway.end_stream(sid)
    with pytest.raises(StreamClosedError, match="already sent END"):
        gateway.send_data(sid, b"x")
    with pytest.raises(StreamClosedError):
        gateway.end_stream(sid)
    agent.send_response(sid, status=200)
    with pytest.raises(
        LocalProtocolError, match="response not allowed from the responder in state open"
    ):
        agent.send_response(sid, status=200)
    with pytest.raises(LocalProtocolError, match="HEADER_ERROR"):
        gateway.send_request(method=b"G T", path=b"/")
    with pytest.raises(LocalProtocolError, match="8 bytes"):
        gateway.ping(b"1234")
    with pytest.raises(LocalProtocolError, match="< 0"):
        gateway.consumed(sid, -1)
    pair.pump()
    with pytest.raises(LocalProtocolError, match="only 0 were delivered"):
        gateway.consumed(sid, 1)
    # resetting a stream that is already gone is a no-op
    gateway.reset_stream(12345)
    assert gateway.data_to_send() == []


# -- ping ------------------------------------------------------------------------------


def test_ping_is_answered_with_the_same_payload_and_acknowledged() -> None:
    pair = Pair.create()
    pair.take("gateway")
    pair.gateway.ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    [msg] = pair.gateway.data_to_send()
    assert frames([msg]) == [Ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    pair.agent.receive_data(msg)
    [pong] = pair.agent.data_to_send()
    assert frames([pong]) == [Pong(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    pair.gateway.receive_data(pong)
    assert pair.gateway.events_received() == [PingAcknowledged(b"\x00\x01\x02\x03\x04\x05\x06\x07")]


# -- GOAWAY and teardown ---------------------------------------------------------------


def test_drain_lets_open_streams_finish_then_terminates_both_sides() -> None:
    pair = Pair.create()
    sid = pair.gateway.send_request(method=b"GET", path=b"/watch", end_stream=True)
    pair.pump()
    pair.take("gateway"), pair.take("agent")
    pair.agent.drain("agent shutting down")
    pair.pump()
    [goaway] = pair.take("gateway")
    assert goaway == GoAwayReceived(sid, ErrorCode.NO_ERROR, "agent shutting down")
    assert pair.gateway.state is ConnectionState.DRAINING
    with pytest.raises(LocalProtocolError, match="draining") as info:
        pair.gateway.send_request(method=b"GET", path=b"/")
    assert info.value.code is ErrorCode.REFUSED_STREAM
    pair.agent.send_response(sid, status=200)
    pair.agent.send_data(sid, b"last events")
    pair.agent.end_stream(sid)
    pair.pump()
    g_events, a_events = pair.take("gateway"), pair.take("agent")
    assert body_of(g_events, sid) == b"last events"
    assert g_events[-1] == ConnectionTerminated(ErrorCode.NO_ERROR, "drained", True)
    assert a_events[-1] == ConnectionTerminated(ErrorCode.NO_ERROR, "drained", False)
    assert pair.gateway.state is pair.agent.state is ConnectionState.CLOSED


def test_goaway_refuses_our_streams_above_last_stream_id() -> None:
    gateway = opened(Role.GATEWAY)
    s1 = gateway.send_request(method=b"GET", path=b"/")
    s3 = gateway.send_request(method=b"GET", path=b"/")
    s5 = gateway.send_request(method=b"GET", path=b"/")
    gateway.send_data(s5, b"queued")
    gateway.data_to_send()
    gateway.receive_data(message(GoAway(s1, ErrorCode.NO_ERROR, "")))
    events = gateway.events_received()
    assert events[0] == GoAwayReceived(s1, ErrorCode.NO_ERROR, "")
    assert {e.stream_id for e in events if isinstance(e, StreamReset)} == {s3, s5}
    assert all(
        e.error_code is ErrorCode.REFUSED_STREAM for e in events if isinstance(e, StreamReset)
    )
    assert gateway.stream_ids() == [s1]
    assert gateway.outbound_buffered == 0
    # late frames on the refused streams are ignored
    gateway.receive_data(message(Response(s3, 200)))
    assert gateway.events_received() == []


def test_goaway_last_stream_id_may_not_grow() -> None:
    gateway = opened(Role.GATEWAY)
    gateway.send_request(method=b"GET", path=b"/")  # keeps the drain open
    gateway.receive_data(message(GoAway(5, ErrorCode.NO_ERROR)))
    gateway.receive_data(message(GoAway(7, ErrorCode.NO_ERROR)))
    assert_failed(gateway, ErrorCode.PROTOCOL_ERROR, "raised last_stream_id from 5 to 7")


def test_goaway_with_error_resets_everything_and_terminates() -> None:
    gateway = opened(Role.GATEWAY)
    sid = gateway.send_request(method=b"GET", path=b"/")
    gateway.data_to_send()
    gateway.receive_data(message(GoAway(sid, ErrorCode.INTERNAL_ERROR, "agent crashed")))
    assert gateway.events_received() == [
        GoAwayReceived(sid, ErrorCode.INTERNAL_ERROR, "agent crashed"),
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, "agent crashed", True),
        ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "agent crashed", True),
    ]
    assert gateway.data_to_send() == []  # no GOAWAY of our own
    gateway.receive_data(message(Ping(b"12345678")))
    assert gateway.events_received() == []


def test_requests_arriving_after_our_goaway_are_refused() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/")))
    agent.drain()
    agent.receive_data(message(Request(3, b"GET", b"/")))
    assert [f for f in frames(agent.data_to_send()) if isinstance(f, Reset)] == [
        Reset(3, ErrorCode.REFUSED_STREAM, "connection is draining")
    ]
    assert agent.stream_ids() == [1]


def test_request_from_a_peer_that_sent_goaway_is_a_connection_error() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/"), GoAway(0, ErrorCode.NO_ERROR)))
    agent.receive_data(message(Request(3, b"GET", b"/")))
    assert_failed(agent, ErrorCode.PROTOCOL_ERROR, "after the peer's GOAWAY")


def test_close_sends_goaway_resets_streams_and_blocks_further_use() -> None:
    gateway = opened(Role.GATEWAY)
    sid = gateway.send_request(method=b"GET", path=b"/")
    gateway.send_data(sid, b"dropped")
    gateway.close(ErrorCode.INTERNAL_ERROR, "shutting down")
    assert gateway.events_received() == [
        StreamReset(sid, ErrorCode.INTERNAL_ERROR, "shutting down", False),
        ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "shutting down", False),
    ]
    out = frames(gateway.data_to_send())
    assert out[-1] == GoAway(0, ErrorCode.INTERNAL_ERROR, "shutting down")
    assert not any(isinstance(f, Data) for f in out)
    with pytest.raises(LocalProtocolError, match="closed"):
        gateway.send_request(method=b"GET", path=b"/")
    gateway.close()
    gateway.drain()
    gateway.connection_lost()
    assert gateway.events_received() == []


def test_connection_lost_resets_every_stream() -> None:
    gateway = opened(Role.GATEWAY)
    s1 = gateway.send_request(method=b"GET", path=b"/")
    s3 = gateway.send_request(method=b"GET", path=b"/")
    gateway.connection_lost()
    assert gateway.events_received() == [
        StreamReset(s1, ErrorCode.CONNECTION_LOST, "transport closed", True),
        StreamReset(s3, ErrorCode.CONNECTION_LOST, "transport closed", True),
        ConnectionTerminated(ErrorCode.CONNECTION_LOST, "transport closed", True),
    ]


def test_internal_failure_on_peer_input_becomes_internal_error_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = opened(Role.AGENT)

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setitem(agent._handlers, 7, boom)
    agent.receive_data(message(Ping(b"12345678")))
    assert_failed(agent, ErrorCode.INTERNAL_ERROR, "RuntimeError('bug')")


def test_events_received_drains_the_queue() -> None:
    pair = Pair.create()
    assert pair.gateway.events_received() == []
    assert isinstance(pair.take("gateway")[0], HelloReceived)
    assert pair.take("gateway") == []
