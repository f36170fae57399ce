"""http2.server with bytes: an h2 client connection (or raw frames where h2 refuses) on one side."""

from __future__ import annotations

import contextlib

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import ContinuationFrame, Frame, GoAwayFrame, HeadersFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from http2.server import (
    Body,
    BodyEnd,
    ConnectionEnded,
    ConnectionFailed,
    Event,
    Http2Error,
    RequestHead,
    Reset,
    ServerConnection,
    ServerLimits,
    StreamClosed,
    WindowOpened,
)

GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api"), (b":authority", b"gw")]


def post(path: bytes = b"/api/v1/pods") -> list[tuple[bytes, bytes]]:
    return [(b":method", b"POST"), (b":scheme", b"https"), (b":path", path), (b":authority", b"gw")]


class Pair:
    """An h2 client and our server, bytes moved by hand; the clock is `now`."""

    def __init__(
        self,
        limits: ServerLimits | None = None,
        *,
        client_settings: dict[h2.settings.SettingCodes, int] | None = None,
    ) -> None:
        self.client = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.client.local_settings = h2.settings.Settings(
            client=True, initial_values=client_settings or {}
        )
        self.client.initiate_connection()
        self.server = ServerConnection(limits)
        self.now = 0.0

    def to_server(self) -> list[Event]:
        return self.server.receive(self.client.data_to_send(), self.now)

    def to_client(self) -> list[h2.events.Event]:
        return self.client.receive_data(self.server.data_to_send())

    def handshake(self) -> None:
        assert self.to_server() == [WindowOpened(0)]
        self.to_client()
        self.to_server()


def test_a_request_becomes_our_events_and_a_response_goes_back() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, [*GET, (b"accept", b"application/json")], end_stream=True)
    assert pair.to_server() == [
        RequestHead(1, b"GET", b"/api", b"gw", [(b"accept", b"application/json")], end_stream=True)
    ]
    pair.server.send_head(1, 200, [(b"Content-Type", b"text/plain"), (b"Connection", b"close")])
    assert pair.server.send_data(1, b"hello", end=True) == 5
    events = pair.to_client()
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"hello"
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    with pytest.raises(StreamClosed):
        pair.server.send_data(1, b"more")


def test_the_end_of_an_answer_rides_on_its_last_data_frame() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.server.send_head(1, 200, [(b"content-type", b"text/plain")])
    assert pair.server.send_data(1, b"hello", end=True) == 5
    frames = _frames(pair.server.data_to_send())
    assert [type(frame).__name__ for frame in frames] == ["HeadersFrame", "DataFrame"]
    assert "END_STREAM" in frames[1].flags
    assert pair.server.responding(1) is False


def test_ids_new_in_every_answer_stay_out_of_the_hpack_table() -> None:
    pair = Pair()
    pair.handshake()
    for stream_id, request_id in ((1, b"id-one"), (3, b"id-two")):
        pair.client.send_headers(stream_id, GET, end_stream=True)
        pair.to_server()
        fields = [(b"Content-Type", b"text/plain"), (b"Planelink-Request-Id", request_id)]
        pair.server.send_head(stream_id, 200, fields, end_stream=True)
        events = pair.to_client()
        response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
        assert (b"planelink-request-id", request_id) in response.headers
    table = [name for name, _ in pair.client.decoder.header_table.dynamic_entries]
    assert b"content-type" in table  # a field that repeats is indexed
    assert b"planelink-request-id" not in table


def _frames(data: bytes) -> list[Frame]:
    frames: list[Frame] = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def test_a_body_is_acknowledged_only_when_the_consumer_consumed_it() -> None:
    limits = ServerLimits(initial_window_size=1000)
    pair = Pair(limits)
    pair.handshake()
    pair.client.send_headers(1, post())
    pair.client.send_data(1, b"x" * 1000)
    events = pair.to_server()
    assert [type(e) for e in events] == [RequestHead, Body]
    assert pair.client.local_flow_control_window(1) == 0
    pair.to_client()
    assert pair.client.local_flow_control_window(1) == 0, "no WINDOW_UPDATE before consumed()"
    pair.server.consumed(1, 1000)
    pair.to_client()
    assert pair.client.local_flow_control_window(1) == 1000
    pair.client.send_data(1, b"y", end_stream=True)
    assert pair.to_server() == [Body(1, b"y"), BodyEnd(1)]


def test_a_zero_window_on_one_stream_does_not_stall_another() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.client.send_headers(3, GET, end_stream=True)
    pair.to_server()
    pair.server.send_head(1, 200, [])
    pair.server.send_head(3, 200, [])
    assert pair.server.send_data(1, b"a" * 25) == 10
    assert pair.server.sendable(1) == 0
    assert pair.server.send_data(1, b"a" * 15) == 0
    assert pair.server.send_data(3, b"b" * 4, end=True) == 4
    events = pair.to_client()
    assert {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)} == {3}
    pair.client.acknowledge_received_data(10, 1)
    pair.client.increment_flow_control_window(100, stream_id=1)
    assert WindowOpened(1) in pair.to_server()
    assert pair.server.send_data(1, b"a" * 15, end=True) == 15


def test_streams_beyond_the_concurrency_limit_are_refused() -> None:
    pair = Pair(ServerLimits(max_concurrent_streams=2))
    # Before the client has our SETTINGS it may open more; those are refused, not fatal.
    for stream_id in (1, 3, 5):
        pair.client.send_headers(stream_id, GET, end_stream=True)
    heads = [e for e in pair.to_server() if isinstance(e, RequestHead)]
    assert [h.stream_id for h in heads] == [1, 3]
    resets = [e for e in pair.to_client() if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (5, h2.errors.ErrorCodes.REFUSED_STREAM)
    ]
    pair.server.send_head(1, 200, [], end_stream=True)
    pair.to_client()
    pair.client.send_headers(7, GET, end_stream=True)
    assert [e.stream_id for e in pair.to_server() if isinstance(e, RequestHead)] == [7]


def test_an_upper_case_name_is_malformed_reset_with_protocol_error_and_the_connection_lives() -> (
    None
):
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, [*GET, (b"Accept", b"x")], end_stream=True)
    assert pair.to_server() == []
    resets = [e for e in pair.to_client() if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (1, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    ]
    pair.client.send_headers(3, GET, end_stream=True)
    assert [type(e) for e in pair.to_server()] == [RequestHead]


@pytest.mark.parametrize(
    ("extra", "invalid"),
    [
        (
            [(b"connection", b"upgrade"), (b"upgrade", b"websocket")],
            'request header "Connection" is not valid in HTTP/2',
        ),
        ([(b"upgrade", b"SPDY/3.1")], 'request header "Upgrade" is not valid in HTTP/2'),
        (
            [(b"transfer-encoding", b"chunked")],
            'request header "Transfer-Encoding" is not valid in HTTP/2',
        ),
        ([(b"te", b"gzip")], 'request header "TE" may only be "trailers" in HTTP/2'),
    ],
)
def test_a_connection_field_makes_a_head_that_says_why_it_is_invalid(
    extra: list[tuple[bytes, bytes]], invalid: str
) -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, [*GET, (b"accept", b"x"), *extra], end_stream=True)
    (head,) = pair.to_server()
    assert isinstance(head, RequestHead)
    assert head.invalid == invalid
    assert head.headers == [(b"accept", b"x")]  # the connection fields are not passed on


def test_a_missing_pseudo_field_is_malformed() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, [(b":method", b"GET"), (b":authority", b"gw")], end_stream=True)
    assert pair.to_server() == []


def test_a_header_list_over_the_limit_is_answered_431_on_its_stream() -> None:
    pair = Pair(ServerLimits(max_header_list_size=4096))
    pair.handshake()
    pair.client.send_headers(1, [*GET, (b"x-big", b"v" * 5000)], end_stream=True)
    assert pair.to_server() == []
    response = next(e for e in pair.to_client() if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(b":status", b"431")]
    pair.client.send_headers(3, GET, end_stream=True)
    assert [type(e) for e in pair.to_server()] == [RequestHead]


def test_a_header_list_over_twice_the_limit_ends_the_connection() -> None:
    pair = Pair(ServerLimits(max_header_list_size=4096))
    pair.handshake()
    pair.client.send_headers(1, [*GET, (b"x-big", b"v" * 9000)], end_stream=True)
    with pytest.raises(ConnectionFailed) as failed:
        pair.to_server()
    assert failed.value.code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    ended = [e for e in pair.to_client() if isinstance(e, h2.events.ConnectionTerminated)]
    assert ended[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_a_continuation_flood_is_cut_off_before_h2_buffers_it() -> None:
    limits = ServerLimits(max_header_list_size=4096)
    pair = Pair(limits)
    pair.handshake()
    head = HeadersFrame(1)
    head.data = b"\x82"  # :method GET, indexed
    flood = head.serialize()
    for _ in range(60):  # under h2's own cap of 64 frames, which alone bounds only frames
        more = ContinuationFrame(1)
        more.data = b"\x00" * 1000
        flood += more.serialize()
    failure: ConnectionFailed | None = None
    fed = 0
    for offset in range(0, len(flood), 100):
        fed += 100
        try:
            pair.server.receive(flood[offset : offset + 100], 0.0)
        except ConnectionFailed as failed:
            failure = failed
            break
    assert failure is not None
    assert failure.code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert fed <= 2 * 4096 + 1100, "refused as soon as the block passed its bound"
    with pytest.raises(ConnectionFailed):
        pair.server.receive(b"", 0.0)


def test_rapid_reset_past_the_budget_is_goaway_enhance_your_calm() -> None:
    pair = Pair(ServerLimits(rapid_reset_budget=5, budget_window_seconds=10.0))
    pair.handshake()
    stream_id = 1
    for _ in range(5):
        pair.client.send_headers(stream_id, GET, end_stream=True)
        assert [type(e) for e in pair.to_server()] == [RequestHead]
        pair.client.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        assert pair.to_server() == [Reset(stream_id, h2.errors.ErrorCodes.CANCEL)]
        stream_id += 2
    pair.now = 9.0
    pair.client.send_headers(stream_id, GET, end_stream=True)
    pair.to_server()
    pair.client.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
    with pytest.raises(ConnectionFailed) as failed:
        pair.to_server()
    assert failed.value.reason == "rapid reset"
    ended = [e for e in pair.to_client() if isinstance(e, h2.events.ConnectionTerminated)]
    assert ended[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_the_reset_budget_is_per_window() -> None:
    pair = Pair(ServerLimits(rapid_reset_budget=2, budget_window_seconds=10.0))
    pair.handshake()
    for index in range(6):
        stream_id = 1 + 2 * index
        pair.now = 10.0 * (index // 2)
        pair.client.send_headers(stream_id, GET, end_stream=True)
        pair.to_server()
        pair.client.reset_stream(stream_id)
        assert pair.to_server() == [Reset(stream_id, 0)]


def test_a_stream_opened_and_reset_in_the_same_bytes_is_never_shown() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, post())
    pair.client.send_data(1, b"z" * 100)
    pair.client.reset_stream(1)
    pair.client.send_headers(3, GET, end_stream=True)
    assert [type(e) for e in pair.to_server()] == [RequestHead]
    window = pair.client.local_flow_control_window(3)
    pair.to_client()
    assert pair.client.local_flow_control_window(3) >= window, "dropped body given back"


def control_frame(pair: Pair, flood: str, index: int) -> None:
    if flood == "ping":
        pair.client.ping(index.to_bytes(8, "big"))
    elif flood == "settings":
        pair.client.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
    else:
        pair.client.prioritize(2 * index + 101, weight=16)


@pytest.mark.parametrize("flood", ["ping", "settings", "priority"])
def test_control_frame_floods_past_the_budget_are_goaway(flood: str) -> None:
    pair = Pair(ServerLimits(control_frame_budget=20))
    pair.handshake()  # the client's initial SETTINGS spent one
    for index in range(19):
        control_frame(pair, flood, index)
    pair.to_server()
    control_frame(pair, flood, 19)
    with pytest.raises(ConnectionFailed) as failed:
        pair.to_server()
    assert failed.value.reason == "control frame flood"
    ended = [e for e in pair.to_client() if isinstance(e, h2.events.ConnectionTerminated)]
    assert ended[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_the_peers_goaway_is_connection_ended() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.close_connection(error_code=0, additional_data=b"bye")
    assert pair.to_server() == [ConnectionEnded(code=0, last_stream_id=0, reason="bye")]


def test_our_goaway_and_reset_reach_the_client() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.server.reset(1, h2.errors.ErrorCodes.INTERNAL_ERROR)
    pair.server.reset(1)  # twice: nothing
    pair.server.goaway(message=b"draining")
    events = pair.to_client()
    assert [type(e) for e in events] == [h2.events.StreamReset, h2.events.ConnectionTerminated]


def test_bytes_that_are_not_http2_are_our_error() -> None:
    server = ServerConnection()
    with pytest.raises(ConnectionFailed):
        server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


frames = st.builds(
    frame,
    st.integers(0, 10),
    st.integers(0, 255),
    st.sampled_from([0, 1, 3, 5, 2, 0x7FFFFFFF]),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=12), st.integers(1, 50))
def test_any_frames_raise_nothing_but_our_error(chunks: list[bytes], split: int) -> None:
    server = ServerConnection(ServerLimits(max_header_list_size=1024, control_frame_budget=5))
    data = PREFACE + b"".join(chunks)
    for offset in range(0, len(data), split):
        try:
            server.receive(data[offset : offset + split], 0.0)
        except Http2Error:
            break
    server.data_to_send()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_raise_nothing_but_our_error(data: bytes) -> None:
    server = ServerConnection()
    with contextlib.suppress(Http2Error):
        server.receive(PREFACE + data, 0.0)


def test_a_body_nobody_reads_any_more_is_given_back_at_once() -> None:
    pair = Pair(ServerLimits(initial_window_size=1000))
    pair.handshake()
    pair.client.send_headers(1, post())
    pair.to_server()
    pair.server.send_head(1, 413, [], end_stream=True)  # answered before reading the body
    pair.client.send_data(1, b"x" * 979, pad_length=20)
    assert pair.to_server() == []
    pair.to_client()
    assert pair.client.local_flow_control_window(1) == 1000, "the stream window came back"
    pair.client.send_headers(3, post())
    pair.client.send_data(3, b"y" * 5, pad_length=255)
    pair.client.send_data(3, b"z" * 5, pad_length=255)
    assert pair.to_server() == [
        RequestHead(3, b"POST", b"/api/v1/pods", b"gw", [], False),
        Body(3, b"y" * 5),
        Body(3, b"z" * 5),
    ]
    pair.to_client()
    assert pair.client.local_flow_control_window(3) == 990, "the padding came back, the body not"


def test_a_peer_that_ignores_refusals_spends_the_reset_budget() -> None:
    pair = Pair(ServerLimits(max_concurrent_streams=2, rapid_reset_budget=3))
    # The client never reads our SETTINGS, so it does not limit itself.
    shown = []
    for index in range(5):
        pair.client.send_headers(1 + 2 * index, post())
        shown += [e.stream_id for e in pair.to_server() if isinstance(e, RequestHead)]
    assert shown == [1, 3]
    pair.client.send_headers(11, post())
    with pytest.raises(ConnectionFailed) as failed:
        pair.to_server()
    assert failed.value.code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_a_burst_of_streams_in_one_read_is_counted_frame_by_frame() -> None:
    pair = Pair(ServerLimits(max_concurrent_streams=2))
    for index in range(5):
        pair.client.send_headers(1 + 2 * index, post())
    assert [e.stream_id for e in pair.to_server() if isinstance(e, RequestHead)] == [1, 3]
    resets = [e for e in pair.to_client() if isinstance(e, h2.events.StreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [
        (stream_id, h2.errors.ErrorCodes.REFUSED_STREAM) for stream_id in (5, 7, 9)
    ]


def test_an_empty_data_flood_spends_the_control_budget() -> None:
    pair = Pair(ServerLimits(control_frame_budget=10))
    pair.handshake()
    pair.client.send_headers(1, post())
    pair.to_server()
    for _ in range(9):
        pair.client.send_data(1, b"")
    assert pair.to_server() == []
    pair.client.send_data(1, b"")
    with pytest.raises(ConnectionFailed) as failed:
        pair.to_server()
    assert failed.value.reason == "empty frame flood"


def test_the_host_field_stands_in_for_a_missing_authority() -> None:
    pair = Pair()
    pair.handshake()
    head = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b"host", b"h:1")]
    pair.client.send_headers(1, head, end_stream=True)
    (request,) = pair.to_server()
    assert isinstance(request, RequestHead)
    assert request.authority == b"h:1"


def test_goaway_and_reset_after_the_connection_failed_do_nothing() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    with pytest.raises(ConnectionFailed):
        pair.server.receive(b"\x00\x00\x01\x09\x00\x00\x00\x00\x07x", 0.0)  # stray CONTINUATION
    pair.server.goaway()
    pair.server.reset(1)
    pair.server.consumed(1, 10)
    events = pair.to_client()
    assert [type(e) for e in events] == [h2.events.ConnectionTerminated]


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, max_size=8), st.integers(1, 40))
def test_the_frame_scanner_cuts_at_frame_ends_and_loses_no_byte(
    chunks: list[bytes], split: int
) -> None:
    from http2.server import _FrameScanner

    scanner = _FrameScanner(limit=1 << 30)
    data = PREFACE + b"".join(chunks)
    pieces = [
        piece
        for offset in range(0, len(data), split)
        for piece in scanner.feed(data[offset : offset + split])
    ]
    assert b"".join(pieces) == data
    ends = {len(PREFACE)}
    for chunk in chunks:
        ends.add(max(ends) + len(chunk))
    position = 0
    for piece in pieces:
        position += len(piece)
        assert position in ends or position % split == 0 or position == len(data)


def frames_in(data: bytes) -> list[Frame]:
    """The frames in `data` (h2's client would refuse to go on after a GOAWAY; Go's does not)."""
    found = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        found.append(frame)
        data = data[9 + length :]
    return found


def test_a_graceful_goaway_lets_open_streams_finish_and_refuses_newer_ones() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, post(), end_stream=False)
    pair.to_server()
    pair.server.goaway(message=b"stopping")
    pair.server.goaway()  # twice: one GOAWAY
    goaways = [f for f in frames_in(pair.server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert [(f.error_code, f.last_stream_id) for f in goaways] == [(0, 1)]
    assert pair.server.draining
    # The open stream goes on both ways: its body arrives, its answer goes out.
    pair.client.send_data(1, b"rest", end_stream=True)
    assert pair.to_server() == [Body(1, b"rest"), BodyEnd(1)]
    pair.server.send_head(1, 200, [], end_stream=True)
    assert any(isinstance(e, h2.events.ResponseReceived) for e in pair.to_client())


def test_a_stream_opened_after_a_graceful_goaway_is_refused() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.server.goaway()
    pair.server.data_to_send()  # not shown to the client: it opens stream 3 as a racing one would
    pair.client.send_headers(3, GET, end_stream=True)
    assert pair.to_server() == []
    resets = [e for e in pair.to_client() if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [
        (3, h2.errors.ErrorCodes.REFUSED_STREAM)
    ]


def test_the_connection_window_is_opened_to_its_limit_at_once() -> None:
    pair = Pair(ServerLimits(connection_window=4 * 1024 * 1024))
    pair.handshake()
    assert pair.client.outbound_flow_control_window == 4 * 1024 * 1024


def test_a_stream_we_reset_mid_body_no_longer_counts_against_the_limit() -> None:
    pair = Pair(ServerLimits(max_concurrent_streams=2))
    pair.handshake()
    for stream_id in (1, 3):
        pair.client.send_headers(stream_id, post(), end_stream=False)
    pair.to_server()
    # Answered and reset before the body ended, as the gateway does with a refused upload.
    pair.server.send_head(1, 404, [], end_stream=True)
    pair.server.reset(1, h2.errors.ErrorCodes.NO_ERROR)
    pair.to_client()
    pair.client.send_headers(5, GET, end_stream=True)
    assert [type(e) for e in pair.to_server()] == [RequestHead]
