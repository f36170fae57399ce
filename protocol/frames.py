"""Frame types and their byte layouts: encode to ``bytes``, decode from a message buffer.

Every frame is a 12-byte header followed by ``length`` payload bytes::

    version u8 | type u8 | flags u8 | reserved u8 (=0) | stream_id u32 | length u32

One WebSocket binary message holds one or more whole frames; a frame never spans messages.
This module checks what a single frame can tell on its own (type known, flags defined,
stream id allowed for the type, fixed payload sizes, field encodings). What depends on
connection state (versions, windows, stream states, limits) is checked by the connection.

Decoders raise :class:`~protocol.errors.ConnectionProtocolError` for framing faults and
:class:`~protocol.errors.StreamProtocolError` for a malformed head (REQUEST / RESPONSE), which
only spoils one stream. DATA payloads are never copied: they are ``memoryview`` slices.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Callable, Sequence

from protocol.errors import ConnectionProtocolError, ErrorCode, StreamProtocolError
from protocol.headers import (
    HeaderBlockError,
    Headers,
    check_token,
    check_value,
    decode_header_block,
    encode_header_block,
)
from protocol.settings import FRAME_HEADER_SIZE

__all__ = [
    "ALLOWED_FLAGS",
    "DECODERS",
    "HEADER",
    "HELLO_VERSION",
    "MAGIC",
    "MAX_REPLICA_IDS",
    "MAX_REPLICA_ID_SIZE",
    "MAX_STREAM_ID",
    "MAX_TEXT_SIZE",
    "Data",
    "Flag",
    "Frame",
    "FrameType",
    "GoAway",
    "Hello",
    "Ping",
    "Pong",
    "Replicas",
    "Request",
    "Reset",
    "Response",
    "Role",
    "WindowUpdate",
    "check_frame_header",
    "decode_frame",
    "decode_message",
    "encode_data_header",
    "encode_frames",
    "parse_header",
    "split_message",
]

HEADER = struct.Struct("!BBBBII")
"""The fixed frame header: version, type, flags, reserved, stream id, payload length."""
MAGIC = b"PLNK"
"""First four bytes of every HELLO payload."""
HELLO_VERSION = 1
"""Version byte of every HELLO frame header, whatever versions the HELLO offers."""
MAX_STREAM_ID = 2**31 - 1
"""Stream ids are 1..2**31-1; bit 31 of the field is reserved and must be zero."""
MAX_TEXT_SIZE = 1024
"""RESET messages and GOAWAY debug text are cut to this many UTF-8 bytes when encoded."""
MAX_REPLICA_IDS = 256
"""A REPLICAS frame names at most this many replicas."""
MAX_REPLICA_ID_SIZE = 253
"""A replica id is an HTTP token of 1 to this many bytes (a DNS name's length: pod names)."""

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32X2 = struct.Struct("!II")
_SETTING = struct.Struct("!HI")
_HELLO_FIXED = struct.Struct("!4sBB")
_PING_SIZE = 8


class FrameType(enum.IntEnum):
    """Frame type byte."""

    HELLO = 0x1
    REQUEST = 0x2
    RESPONSE = 0x3
    DATA = 0x4
    RESET = 0x5
    WINDOW_UPDATE = 0x6
    PING = 0x7
    PONG = 0x8
    GOAWAY = 0x9
    REPLICAS = 0xA


class Flag(enum.IntFlag):
    """Flag bits; which ones a frame type may carry is in :data:`ALLOWED_FLAGS`."""

    END_STREAM = 0x1
    """REQUEST, RESPONSE, DATA: the sender's last frame on this stream (half-close)."""
    UPGRADE = 0x2
    """REQUEST: the request asks for a protocol upgrade (exec, attach, port-forward)."""


class Role(enum.IntEnum):
    """Which end of the tunnel a side is; sent in HELLO and fixes stream-id parity."""

    GATEWAY = 1
    """Opens odd-numbered streams (1, 3, 5, ...)."""
    AGENT = 2
    """Opens even-numbered streams (2, 4, 6, ...)."""


# As plain ints: an IntFlag's `&`, `|` and `~` run enum code, which on the request path (each
# frame's header check, decode and encode) cost more than the rest of the header's handling.
_END_STREAM = int(Flag.END_STREAM)
_UPGRADE = int(Flag.UPGRADE)
_DATA = int(FrameType.DATA)

ALLOWED_FLAGS: dict[FrameType, int] = {
    FrameType.HELLO: 0,
    FrameType.REQUEST: _END_STREAM | _UPGRADE,
    FrameType.RESPONSE: _END_STREAM,
    FrameType.DATA: _END_STREAM,
    FrameType.RESET: 0,
    FrameType.WINDOW_UPDATE: 0,
    FrameType.PING: 0,
    FrameType.PONG: 0,
    FrameType.GOAWAY: 0,
    FrameType.REPLICAS: 0,
}
"""Flag bits each type may carry; any other bit set is a connection PROTOCOL_ERROR."""

_CONNECTION_ONLY = frozenset(
    {FrameType.HELLO, FrameType.PING, FrameType.PONG, FrameType.GOAWAY, FrameType.REPLICAS}
)
_STREAM_ONLY = frozenset({FrameType.REQUEST, FrameType.RESPONSE, FrameType.DATA, FrameType.RESET})


def _frame(version: int, ftype: FrameType, flags: int, stream_id: int, payload: bytes) -> bytes:
    return HEADER.pack(version, ftype, flags, 0, stream_id, len(payload)) + payload


def encode_data_header(stream_id: int, length: int, *, end_stream: bool, version: int) -> bytes:
    """Header of a DATA frame whose ``length`` payload bytes the caller appends (no copy)."""
    return HEADER.pack(version, _DATA, _END_STREAM if end_stream else 0, 0, stream_id, length)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > MAX_TEXT_SIZE:
        raw = raw[:MAX_TEXT_SIZE].decode("utf-8", "ignore").encode("utf-8")
    return raw


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """First frame of each side: offered versions, role, settings, identity, capabilities."""

    role: int
    versions: tuple[int, ...]
    settings: tuple[tuple[int, int], ...]
    identity: Headers = ()
    capabilities: tuple[bytes, ...] = ()

    def encode(self, version: int = HELLO_VERSION) -> bytes:
        """Encode; raises ``ValueError`` on an unencodable field (see SPEC.md, HELLO)."""
        if not 1 <= len(self.versions) <= 255:
            raise ValueError("HELLO must offer between 1 and 255 versions")
        identity = encode_header_block(self.identity)
        parts = [
            _HELLO_FIXED.pack(MAGIC, self.role, len(self.versions)),
            bytes(self.versions),
            _U16.pack(len(self.settings)),
            *(_SETTING.pack(sid, value) for sid, value in self.settings),
            _U32.pack(len(identity)),
            identity,
        ]
        for cap in self.capabilities:
            check_token("capability", cap)
            if len(cap) > 255:
                raise ValueError(f"capability {cap[:32]!r}... is longer than 255 bytes")
            parts += [_U8.pack(len(cap)), cap]
        return _frame(version, FrameType.HELLO, 0, 0, b"".join(parts))

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Hello:
        """Decode a HELLO payload; every fault is a connection PROTOCOL_ERROR."""
        del flags, stream_id
        try:
            return cls._decode(buf, start, end)
        except (struct.error, HeaderBlockError) as exc:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"malformed HELLO: {exc}"
            ) from None

    @classmethod
    def _decode(cls, buf: memoryview, pos: int, end: int) -> Hello:
        view = buf[:end]  # struct raises on reads past the frame
        magic, role, count = _HELLO_FIXED.unpack_from(view, pos)
        if magic != MAGIC:
            raise HeaderBlockError(f"bad magic {magic!r}, expected {MAGIC!r}")
        pos += _HELLO_FIXED.size
        versions = tuple(view[pos : pos + count])
        if len(versions) != count or count == 0:
            raise HeaderBlockError("version list truncated or empty")
        pos += count
        (nsettings,) = _U16.unpack_from(view, pos)
        pos += 2
        settings = tuple(
            _SETTING.unpack_from(view, pos + i * _SETTING.size) for i in range(nsettings)
        )
        pos += nsettings * _SETTING.size
        (ident_len,) = _U32.unpack_from(view, pos)
        pos += 4
        if pos + ident_len > end:
            raise HeaderBlockError("identity block truncated")
        identity = decode_header_block(view, pos, pos + ident_len)
        pos += ident_len
        caps: list[bytes] = []
        while pos < end:
            (size,) = _U8.unpack_from(view, pos)
            cap = bytes(view[pos + 1 : pos + 1 + size])
            if len(cap) != size:
                raise HeaderBlockError("capability truncated")
            check_token("capability", cap)
            caps.append(cap)
            pos += 1 + size
        return cls(role, versions, settings, identity, tuple(caps))


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """Opens a stream with an HTTP request head."""

    stream_id: int
    method: bytes
    path: bytes
    headers: Headers = ()
    target: bytes = b""
    end_stream: bool = False
    upgrade: bool = False

    def encode(self, version: int) -> bytes:
        """Encode; raises ``HeaderBlockError`` (a ``ValueError``) on an invalid field."""
        check_token("method", self.method)
        if len(self.method) > 255:
            raise HeaderBlockError("method is longer than 255 bytes")
        if self.target:
            check_token("target", self.target)
        if len(self.target) > 255:
            raise HeaderBlockError("target is longer than 255 bytes")
        _check_path(self.path)
        flags = (_END_STREAM if self.end_stream else 0) | (_UPGRADE if self.upgrade else 0)
        payload = b"".join(
            [
                _U8.pack(len(self.method)),
                self.method,
                _U8.pack(len(self.target)),
                self.target,
                _U32.pack(len(self.path)),
                self.path,
                encode_header_block(self.headers),
            ]
        )
        return _frame(version, FrameType.REQUEST, flags, self.stream_id, payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Request:
        """Decode a REQUEST payload; a malformed head is a stream HEADER_ERROR."""
        try:
            view = buf[:end]
            pos = start
            (size,) = _U8.unpack_from(view, pos)
            method = bytes(view[pos + 1 : pos + 1 + size])
            pos += 1 + size
            (size,) = _U8.unpack_from(view, pos)
            target = bytes(view[pos + 1 : pos + 1 + size])
            pos += 1 + size
            (size,) = _U32.unpack_from(view, pos)
            path = bytes(view[pos + 4 : pos + 4 + size])
            pos += 4 + size
            if pos > end:
                raise HeaderBlockError("request head truncated")
            check_token("method", method)
            if target:
                check_token("target", target)
            _check_path(path)
            headers = decode_header_block(view, pos, end)
        except (struct.error, HeaderBlockError) as exc:
            raise StreamProtocolError(
                stream_id, ErrorCode.HEADER_ERROR, f"malformed REQUEST head: {exc}"
            ) from None
        return cls(
            stream_id,
            method,
            path,
            headers,
            target,
            bool(flags & _END_STREAM),
            bool(flags & _UPGRADE),
        )


def _check_path(path: bytes) -> None:
    if not path.startswith(b"/"):
        raise HeaderBlockError(f"path {path[:64]!r} does not start with '/'")
    check_value("path", path)
    if b" " in path or b"\t" in path:
        raise HeaderBlockError(f"path {path[:64]!r} contains whitespace")


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    """The response head of a stream."""

    stream_id: int
    status: int
    headers: Headers = ()
    end_stream: bool = False

    def encode(self, version: int) -> bytes:
        """Encode; raises ``HeaderBlockError`` (a ``ValueError``) on an invalid field."""
        if not 100 <= self.status <= 999:
            raise HeaderBlockError(f"status {self.status} is not a three-digit code")
        payload = _U16.pack(self.status) + encode_header_block(self.headers)
        flags = _END_STREAM if self.end_stream else 0
        return _frame(version, FrameType.RESPONSE, flags, self.stream_id, payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Response:
        """Decode a RESPONSE payload; a malformed head is a stream HEADER_ERROR."""
        try:
            if end - start < 2:
                raise HeaderBlockError("response head shorter than its status field")
            (status,) = _U16.unpack_from(buf, start)
            headers = decode_header_block(buf, start + 2, end)
        except HeaderBlockError as exc:
            raise StreamProtocolError(
                stream_id, ErrorCode.HEADER_ERROR, f"malformed RESPONSE head: {exc}"
            ) from None
        return cls(stream_id, status, headers, bool(flags & _END_STREAM))


@dataclasses.dataclass(frozen=True, slots=True)
class Data:
    """A chunk of body (or upgraded byte stream); ``end_stream`` half-closes the sender."""

    stream_id: int
    data: bytes | memoryview
    end_stream: bool = False

    def encode(self, version: int) -> bytes:
        """Encode (copies the payload once; the connection avoids this by joining parts)."""
        header = encode_data_header(
            self.stream_id, len(self.data), end_stream=self.end_stream, version=version
        )
        return header + self.data

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Data:
        """Wrap the payload as a zero-copy ``memoryview``."""
        return cls(stream_id, buf[start:end], bool(flags & _END_STREAM))


@dataclasses.dataclass(frozen=True, slots=True)
class Reset:
    """Abort a stream in both directions with an error code and a short message."""

    stream_id: int
    error_code: ErrorCode
    message: str = ""

    def encode(self, version: int) -> bytes:
        """Encode; the message is cut to :data:`MAX_TEXT_SIZE` bytes."""
        payload = _U32.pack(self.error_code) + _text(self.message)
        return _frame(version, FrameType.RESET, 0, self.stream_id, payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Reset:
        """Decode; fewer than 4 payload bytes is a connection FRAME_SIZE_ERROR."""
        del flags
        if end - start < 4:
            raise ConnectionProtocolError(
                ErrorCode.FRAME_SIZE_ERROR, f"RESET payload is {end - start} bytes, needs >= 4"
            )
        (code,) = _U32.unpack_from(buf, start)
        message = bytes(buf[start + 4 : end]).decode("utf-8", "replace")
        return cls(stream_id, ErrorCode.from_wire(code), message)


@dataclasses.dataclass(frozen=True, slots=True)
class WindowUpdate:
    """Grant ``increment`` more DATA bytes on a stream, or on the connection (stream 0)."""

    stream_id: int
    increment: int

    def encode(self, version: int) -> bytes:
        """Encode the 4-byte increment."""
        return _frame(
            version, FrameType.WINDOW_UPDATE, 0, self.stream_id, _U32.pack(self.increment)
        )

    @classmethod
    def decode(
        cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int
    ) -> WindowUpdate:
        """Decode; a payload other than 4 bytes is a connection FRAME_SIZE_ERROR."""
        del flags
        if end - start != 4:
            raise ConnectionProtocolError(
                ErrorCode.FRAME_SIZE_ERROR,
                f"WINDOW_UPDATE payload is {end - start} bytes, must be 4",
            )
        (increment,) = _U32.unpack_from(buf, start)
        return cls(stream_id, increment)


def _ping_payload(kind: str, buf: memoryview, start: int, end: int) -> bytes:
    if end - start != _PING_SIZE:
        raise ConnectionProtocolError(
            ErrorCode.FRAME_SIZE_ERROR, f"{kind} payload is {end - start} bytes, must be 8"
        )
    return bytes(buf[start:end])


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    """Liveness / RTT probe; the peer answers with a PONG echoing ``payload`` (8 bytes)."""

    payload: bytes

    def encode(self, version: int) -> bytes:
        """Encode; the payload must be exactly 8 bytes."""
        if len(self.payload) != _PING_SIZE:
            raise ValueError("PING payload must be exactly 8 bytes")
        return _frame(version, FrameType.PING, 0, 0, self.payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Ping:
        """Decode; a payload other than 8 bytes is a connection FRAME_SIZE_ERROR."""
        del flags, stream_id
        return cls(_ping_payload("PING", buf, start, end))


@dataclasses.dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a PING, echoing its 8-byte payload."""

    payload: bytes

    def encode(self, version: int) -> bytes:
        """Encode; the payload must be exactly 8 bytes."""
        if len(self.payload) != _PING_SIZE:
            raise ValueError("PONG payload must be exactly 8 bytes")
        return _frame(version, FrameType.PONG, 0, 0, self.payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Pong:
        """Decode; a payload other than 8 bytes is a connection FRAME_SIZE_ERROR."""
        del flags, stream_id
        return cls(_ping_payload("PONG", buf, start, end))


@dataclasses.dataclass(frozen=True, slots=True)
class GoAway:
    """No new streams; ``last_stream_id`` is the highest peer-opened stream that may finish."""

    last_stream_id: int
    error_code: ErrorCode
    debug: str = ""

    def encode(self, version: int) -> bytes:
        """Encode; the debug text is cut to :data:`MAX_TEXT_SIZE` bytes."""
        payload = _U32X2.pack(self.last_stream_id, self.error_code) + _text(self.debug)
        return _frame(version, FrameType.GOAWAY, 0, 0, payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> GoAway:
        """Decode; fewer than 8 payload bytes is a connection FRAME_SIZE_ERROR."""
        del flags, stream_id
        if end - start < 8:
            raise ConnectionProtocolError(
                ErrorCode.FRAME_SIZE_ERROR, f"GOAWAY payload is {end - start} bytes, needs >= 8"
            )
        last, code = _U32X2.unpack_from(buf, start)
        if last > MAX_STREAM_ID:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"GOAWAY last_stream_id {last:#x} has bit 31 set"
            )
        debug = bytes(buf[start + 8 : end]).decode("utf-8", "replace")
        return cls(last, ErrorCode.from_wire(code), debug)


@dataclasses.dataclass(frozen=True, slots=True)
class Replicas:
    """The gateway's live replicas (its own id included): the agent keeps a tunnel to each.

    Payload: one ``(u16 length, id)`` entry per replica, back to back, no count; ids are
    distinct HTTP tokens of 1 to :data:`MAX_REPLICA_ID_SIZE` bytes, 1 to
    :data:`MAX_REPLICA_IDS` of them.
    """

    ids: tuple[bytes, ...]

    def encode(self, version: int) -> bytes:
        """Encode; raises ``ValueError`` (a ``HeaderBlockError``) on an invalid id list."""
        _check_replica_ids(self.ids)
        payload = b"".join(_U16.pack(len(rid)) + rid for rid in self.ids)
        return _frame(version, FrameType.REPLICAS, 0, 0, payload)

    @classmethod
    def decode(cls, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> Replicas:
        """Decode; every fault (truncation, bad token, duplicate, count) is a connection
        PROTOCOL_ERROR."""
        del flags, stream_id
        ids: list[bytes] = []
        pos = start
        try:
            while pos < end:
                if len(ids) == MAX_REPLICA_IDS:
                    raise HeaderBlockError(f"more than {MAX_REPLICA_IDS} replica ids")
                if end - pos < _U16.size:
                    raise HeaderBlockError("replica id length truncated")
                (size,) = _U16.unpack_from(buf, pos)
                pos += _U16.size
                if size > end - pos:
                    raise HeaderBlockError("replica id truncated")
                ids.append(bytes(buf[pos : pos + size]))
                pos += size
            _check_replica_ids(tuple(ids))
        except HeaderBlockError as exc:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"malformed REPLICAS: {exc}"
            ) from None
        return cls(tuple(ids))


def _check_replica_ids(ids: tuple[bytes, ...]) -> None:
    if not 1 <= len(ids) <= MAX_REPLICA_IDS:
        raise HeaderBlockError(f"{len(ids)} replica ids; allowed 1..{MAX_REPLICA_IDS}")
    for rid in ids:
        check_token("replica id", rid)
        if len(rid) > MAX_REPLICA_ID_SIZE:
            raise HeaderBlockError(
                f"replica id {rid[:32]!r}... is longer than {MAX_REPLICA_ID_SIZE} bytes"
            )
    if len(set(ids)) != len(ids):
        raise HeaderBlockError("a replica id appears twice")


Frame = Hello | Request | Response | Data | Reset | WindowUpdate | Ping | Pong | GoAway | Replicas
"""Any decoded frame."""

_Decoder = Callable[[int, int, memoryview, int, int], Frame]
DECODERS: dict[int, _Decoder] = {
    FrameType.HELLO: Hello.decode,
    FrameType.REQUEST: Request.decode,
    FrameType.RESPONSE: Response.decode,
    FrameType.DATA: Data.decode,
    FrameType.RESET: Reset.decode,
    FrameType.WINDOW_UPDATE: WindowUpdate.decode,
    FrameType.PING: Ping.decode,
    FrameType.PONG: Pong.decode,
    FrameType.GOAWAY: GoAway.decode,
    FrameType.REPLICAS: Replicas.decode,
}


_HEADER_RULES: dict[int, tuple[int, bool, bool]] = {
    int(kind): (~allowed, kind in _CONNECTION_ONLY, kind in _STREAM_ONLY)
    for kind, allowed in ALLOWED_FLAGS.items()
}
"""By frame type byte: the flag bits it may not carry, connection-only, stream-only."""


def check_frame_header(ftype: int, flags: int, reserved: int, stream_id: int) -> None:
    """Check what the header alone can tell; raises a :class:`ConnectionProtocolError`."""
    rules = _HEADER_RULES.get(ftype)
    if rules is None:
        raise ConnectionProtocolError(
            ErrorCode.UNKNOWN_FRAME_TYPE, f"unknown frame type {ftype:#04x}"
        )
    disallowed, connection_only, stream_only = rules
    if (
        not (flags & disallowed or reserved or stream_id > MAX_STREAM_ID)
        and (not stream_id or not connection_only)
        and (stream_id or not stream_only)
    ):
        return
    problem = _header_problem(FrameType(ftype), flags, reserved, stream_id)
    raise ConnectionProtocolError(ErrorCode.PROTOCOL_ERROR, problem)


def _header_problem(kind: FrameType, flags: int, reserved: int, stream_id: int) -> str:
    """What is wrong with a header that failed `check_frame_header`'s rules (the first)."""
    if flags & ~ALLOWED_FLAGS[kind]:
        return f"{kind.name} frame with undefined flags {flags:#04x}"
    if reserved:
        return f"{kind.name} frame with non-zero reserved byte"
    if stream_id > MAX_STREAM_ID:
        return f"{kind.name} frame stream id {stream_id:#x} has bit 31 set"
    if stream_id:
        return f"{kind.name} frame on stream {stream_id}, must be 0"
    return f"{kind.name} frame on stream 0, needs a stream"


def decode_frame(ftype: int, flags: int, stream_id: int, payload: memoryview) -> Frame:
    """Decode one frame from its header fields and payload (header already checked)."""
    return DECODERS[ftype](flags, stream_id, payload, 0, len(payload))


def decode_message(message: bytes, *, max_frame_size: int) -> list[tuple[int, Frame]]:
    """Decode every frame of one message as ``(header version, frame)`` pairs.

    A convenience for tests and tools; the connection runs the same checks inline, frame
    by frame, so that one bad stream does not discard the rest of the message.
    """
    frames: list[tuple[int, Frame]] = []
    buf = memoryview(message)
    for version, ftype, flags, stream_id, start, end in split_message(buf, max_frame_size):
        frames.append((version, decode_frame(ftype, flags, stream_id, buf[start:end])))
    return frames


def split_message(
    buf: memoryview, max_frame_size: int
) -> list[tuple[int, int, int, int, int, int]]:
    """Split a message into ``(version, type, flags, stream_id, start, end)`` per frame."""
    out = []
    size = len(buf)
    if not size:
        raise ConnectionProtocolError(ErrorCode.FRAME_SIZE_ERROR, "empty message")
    pos = 0
    while pos < size:
        version, ftype, flags, reserved, stream_id, length = parse_header(buf, pos, max_frame_size)
        check_frame_header(ftype, flags, reserved, stream_id)
        start = pos + FRAME_HEADER_SIZE
        out.append((version, ftype, flags, stream_id, start, start + length))
        pos = start + length
    return out


def parse_header(
    buf: memoryview, pos: int, max_frame_size: int
) -> tuple[int, int, int, int, int, int]:
    """Unpack the header at ``pos`` and check the frame fits; raises FRAME_SIZE_ERROR."""
    size = len(buf)
    if size - pos < FRAME_HEADER_SIZE:
        raise ConnectionProtocolError(
            ErrorCode.FRAME_SIZE_ERROR,
            f"{size - pos} trailing bytes at offset {pos} are not a whole frame header",
        )
    header: tuple[int, int, int, int, int, int] = HEADER.unpack_from(buf, pos)
    length = header[5]
    if length > max_frame_size:
        raise ConnectionProtocolError(
            ErrorCode.FRAME_SIZE_ERROR,
            f"frame payload of {length} bytes exceeds MAX_FRAME_SIZE {max_frame_size}",
        )
    if pos + FRAME_HEADER_SIZE + length > size:
        raise ConnectionProtocolError(
            ErrorCode.FRAME_SIZE_ERROR,
            f"frame at offset {pos} declares {length} payload bytes but the message ends "
            f"after {size - pos - FRAME_HEADER_SIZE}",
        )
    return header


def encode_frames(frames: Sequence[Frame], version: int = 1) -> bytes:
    """Concatenate encoded frames into one message (tests and tools)."""
    return b"".join(f.encode(version) for f in frames)
