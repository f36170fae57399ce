"""Byte-exact encoding and decoding of every frame type, and every framing fault."""

from __future__ import annotations

import pytest

from protocol import ErrorCode
from protocol.errors import ConnectionProtocolError, StreamProtocolError
from protocol.frames import (
    Data,
    Frame,
    GoAway,
    Hello,
    Ping,
    Pong,
    Request,
    Reset,
    Response,
    WindowUpdate,
    decode_message,
    encode_data_header,
)
from protocol.headers import HeaderBlockError


def h(text: str) -> bytes:
    """Hex with free spacing/newlines."""
    return bytes.fromhex("".join(text.split()))


EXACT: list[tuple[Frame, str]] = [
    (
        Hello(1, (1,), ((1, 65536),), ((b"agent-id", b"a"),), (b"exec",)),
        """01 01 00 00 00000000 00000027
           504c4e4b 01 01 01
           0001 0001 00010000
           0000000f 0008 6167656e742d6964 00000001 61
           04 65786563""",
    ),
    (
        Request(3, b"POST", b"/x?y=1", ((b"k", b"v"), (b"k", b"w")), b"api", False, True),
        """01 02 02 00 00000003 00000023
           04 504f5354 03 617069 00000006 2f783f793d31
           0001 6b 00000001 76  0001 6b 00000001 77""",
    ),
    (
        Request(1, b"GET", b"/a", (), b"", True, False),
        "01 02 01 00 00000001 0000000b 03 474554 00 00000002 2f61",
    ),
    (
        Response(1, 200, ((b"a", b"b"),)),
        "01 03 00 00 00000001 0000000a 00c8 0001 61 00000001 62",
    ),
    (Response(5, 101, (), True), "01 03 01 00 00000005 00000002 0065"),
    (Data(1, b"hi", True), "01 04 01 00 00000001 00000002 6869"),
    (Data(7, b"", False), "01 04 00 00 00000007 00000000"),
    (Reset(3, ErrorCode.CANCEL, "x"), "01 05 00 00 00000003 00000005 00000007 78"),
    (WindowUpdate(0, 5), "01 06 00 00 00000000 00000004 00000005"),
    (WindowUpdate(9, 0x7FFFFFFF), "01 06 00 00 00000009 00000004 7fffffff"),
    (Ping(b"abcdefgh"), "01 07 00 00 00000000 00000008 6162636465666768"),
    (Pong(b"abcdefgh"), "01 08 00 00 00000000 00000008 6162636465666768"),
    (
        GoAway(5, ErrorCode.NO_ERROR, "bye"),
        "01 09 00 00 00000000 0000000b 00000005 00000000 627965",
    ),
]


@pytest.mark.parametrize(("frame", "wire"), EXACT, ids=lambda v: type(v).__name__)
def test_exact_bytes_both_ways(frame: Frame, wire: str) -> None:
    raw = h(wire)
    assert frame.encode(1) == raw
    [(version, decoded)] = decode_message(raw, max_frame_size=65536)
    assert version == 1
    assert decoded == frame


def test_several_frames_per_message_in_order() -> None:
    raw = Ping(b"12345678").encode(1) + Data(1, b"x").encode(1) + WindowUpdate(1, 1).encode(1)
    assert [f for _, f in decode_message(raw, max_frame_size=65536)] == [
        Ping(b"12345678"),
        Data(1, b"x"),
        WindowUpdate(1, 1),
    ]


def test_data_payload_is_a_view_into_the_message() -> None:
    raw = Data(1, b"payload").encode(1)
    [(_, frame)] = decode_message(raw, max_frame_size=65536)
    assert isinstance(frame, Data)
    assert isinstance(frame.data, memoryview)
    assert frame.data.obj is raw


def test_data_header_fast_path_matches_frame_encoding() -> None:
    assert encode_data_header(9, 3, end_stream=True, version=1) + b"abc" == Data(
        9, b"abc", True
    ).encode(1)


def test_text_fields_are_cut_at_1024_bytes_on_a_character_boundary() -> None:
    frame = Reset(1, ErrorCode.CANCEL, "é" * 600).encode(1)
    assert len(frame) == 12 + 4 + 1024
    [(_, decoded)] = decode_message(frame, max_frame_size=65536)
    assert isinstance(decoded, Reset)
    assert decoded.message == "é" * 512


def test_invalid_utf8_text_is_replaced_not_rejected() -> None:
    raw = h("01 05 00 00 00000001 00000006 00000008 ff fe")
    [(_, decoded)] = decode_message(raw, max_frame_size=65536)
    assert decoded == Reset(1, ErrorCode.HEADER_ERROR, "\ufffd\ufffd")


def test_unknown_error_code_maps_to_internal_error() -> None:
    raw = h("01 05 00 00 00000001 00000004 0000ffff")
    [(_, decoded)] = decode_message(raw, max_frame_size=65536)
    assert decoded == Reset(1, ErrorCode.INTERNAL_ERROR, "")


CONNECTION_FAULTS = [
    ("", ErrorCode.FRAME_SIZE_ERROR, "empty message"),
    ("01 04 00 00 00000001", ErrorCode.FRAME_SIZE_ERROR, "not a whole frame header"),
    ("01 04 00 00 00000001 00000003 6869", ErrorCode.FRAME_SIZE_ERROR, "message ends"),
    ("01 04 00 00 00000001 00010001", ErrorCode.FRAME_SIZE_ERROR, "exceeds MAX_FRAME_SIZE"),
    ("01 0b 00 00 00000000 00000000", ErrorCode.UNKNOWN_FRAME_TYPE, "unknown frame type 0x0b"),
    ("01 00 00 00 00000000 00000000", ErrorCode.UNKNOWN_FRAME_TYPE, "unknown frame type 0x00"),
    ("01 04 02 00 00000001 00000000", ErrorCode.PROTOCOL_ERROR, "undefined flags"),
    ("01 03 02 00 00000001 00000002 00c8", ErrorCode.PROTOCOL_ERROR, "undefined flags"),
    ("01 07 01 00 00000000 00000008 0000000000000000", ErrorCode.PROTOCOL_ERROR, "flags"),
    ("01 04 00 01 00000001 00000000", ErrorCode.PROTOCOL_ERROR, "reserved"),
    ("01 04 00 00 80000001 00000000", ErrorCode.PROTOCOL_ERROR, "bit 31"),
    ("01 04 00 00 00000000 00000000", ErrorCode.PROTOCOL_ERROR, "on stream 0"),
    ("01 05 00 00 00000000 00000004 00000000", ErrorCode.PROTOCOL_ERROR, "on stream 0"),
    ("01 07 00 00 00000001 00000008 0000000000000000", ErrorCode.PROTOCOL_ERROR, "must be 0"),
    ("01 09 00 00 00000003 00000008 0000000000000000", ErrorCode.PROTOCOL_ERROR, "must be 0"),
    ("01 05 00 00 00000001 00000003 000000", ErrorCode.FRAME_SIZE_ERROR, "needs >= 4"),
    ("01 06 00 00 00000001 00000003 000001", ErrorCode.FRAME_SIZE_ERROR, "must be 4"),
    ("01 06 00 00 00000001 00000005 0000000100", ErrorCode.FRAME_SIZE_ERROR, "must be 4"),
    ("01 07 00 00 00000000 00000007 00000000000000", ErrorCode.FRAME_SIZE_ERROR, "must be 8"),
    ("01 08 00 00 00000000 00000009 000000000000000000", ErrorCode.FRAME_SIZE_ERROR, "be 8"),
    ("01 09 00 00 00000000 00000007 00000000000000", ErrorCode.FRAME_SIZE_ERROR, "needs >= 8"),
    ("01 09 00 00 00000000 00000008 80000000 00000000", ErrorCode.PROTOCOL_ERROR, "bit 31"),
    ("01 01 00 00 00000000 00000007 504c4e4a 01 01 01", ErrorCode.PROTOCOL_ERROR, "magic"),
    ("01 01 00 00 00000000 00000006 504c4e4b 01 01", ErrorCode.PROTOCOL_ERROR, "malformed"),
    ("01 01 00 00 00000000 00000007 504c4e4b 01 00 01", ErrorCode.PROTOCOL_ERROR, "empty"),
    (
        "01 01 00 00 00000000 0000000f 504c4e4b 01 01 01 0000 00000003 0000",
        ErrorCode.PROTOCOL_ERROR,
        "truncated",
    ),
    (
        "01 01 00 00 00000000 0000000f 504c4e4b 01 01 01 0000 00000000 02 2c",
        ErrorCode.PROTOCOL_ERROR,
        "capability truncated",
    ),
    (
        "01 01 00 00 00000000 0000000f 504c4e4b 01 01 01 0000 00000000 01 2c",
        ErrorCode.PROTOCOL_ERROR,
        "capability",
    ),
]


@pytest.mark.parametrize(("wire", "code", "text"), CONNECTION_FAULTS)
def test_connection_level_faults(wire: str, code: ErrorCode, text: str) -> None:
    with pytest.raises(ConnectionProtocolError) as info:
        decode_message(h(wire), max_frame_size=65536)
    assert info.value.code is code
    assert text in info.value.message


STREAM_FAULTS = [
    ("02", "03 474554 00 00000001", "truncated"),
    ("02", "03 474554 00 00000002 2f", "truncated"),
    ("02", "03 474554", "unpack"),
    ("02", "00 00 00000001 2f", "method"),
    ("02", "03 472045 00 00000001 2f", "method"),
    ("02", "03 474554 01 20 00000001 2f", "target"),
    ("02", "03 474554 00 00000001 61", "does not start with '/'"),
    ("02", "03 474554 00 00000003 2f2061", "whitespace"),
    ("02", "03 474554 00 00000003 2f0d0a", "NUL, CR or LF"),
    ("02", "03 474554 00 00000001 2f 0000 00000000", "non-empty HTTP token"),
    ("02", "03 474554 00 00000001 2f 0001 3a 00000000", "non-empty HTTP token"),
    ("02", "03 474554 00 00000001 2f 0001 61 00000002 0d0a", "NUL, CR or LF"),
    ("02", "03 474554 00 00000001 2f 0001 61 00000002 00", "inside a value"),
    ("02", "03 474554 00 00000001 2f 0001 61 0000", "name or value length"),
    ("02", "03 474554 00 00000001 2f 00", "inside a name length"),
    ("03", "00", "shorter than its status"),
    ("03", "00c8 0001", "truncated"),
]


@pytest.mark.parametrize(("ftype", "payload", "text"), STREAM_FAULTS)
def test_malformed_heads_are_stream_header_errors(ftype: str, payload: str, text: str) -> None:
    body = h(payload)
    raw = h(f"01 {ftype} 00 00 00000005") + len(body).to_bytes(4, "big") + body
    with pytest.raises(StreamProtocolError) as info:
        decode_message(raw, max_frame_size=65536)
    assert info.value.stream_id == 5
    assert info.value.code is ErrorCode.HEADER_ERROR
    assert text in info.value.message


@pytest.mark.parametrize(
    "frame",
    [
        Request(1, b"GE T", b"/"),
        Request(1, b"GET", b"x"),
        Request(1, b"GET", b"/", target=b"a b"),
        Request(1, b"G" * 256, b"/"),
        Request(1, b"GET", b"/", target=b"t" * 256),
        Request(1, b"GET", b"/", ((b"", b"v"),)),
        Request(1, b"GET", b"/", ((b"n", b"a\r\nb"),)),
        Response(1, 99),
        Response(1, 1000),
    ],
)
def test_invalid_heads_do_not_encode(frame: Request | Response) -> None:
    with pytest.raises(HeaderBlockError):
        frame.encode(1)


def test_ping_payload_must_be_eight_bytes_to_encode() -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        Ping(b"short").encode(1)
    with pytest.raises(ValueError, match="8 bytes"):
        Pong(b"toolong!!").encode(1)


def test_hello_encoding_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="versions"):
        Hello(1, (), ()).encode()
    with pytest.raises(HeaderBlockError):
        Hello(1, (1,), (), (), (b"bad cap",)).encode()
    with pytest.raises(ValueError, match="255"):
        Hello(1, (1,), (), (), (b"c" * 256,)).encode()
