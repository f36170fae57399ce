"""The server side of an HTTP/2 connection (callers → gateway), fed bytes, handing back events.

`ServerConnection` wraps h2's `H2Connection(client_side=False)` with planelink's limits
(`ServerLimits`) and translates at this boundary: h2's events become the small immutable events
below, h2's exceptions become `Http2Error`s. Nothing else in planelink sees an h2 type.

What a peer cannot make it do, and why:
- Hold more than a bounded header block: CONTINUATION frames are metered on the raw bytes before
  h2 buffers them (CVE-2024-27316); a block over twice the header list limit ends the connection.
  The same scan hands h2 one frame at a time, so each stream is counted (and refused) in order.
  A decoded list over the limit (but under twice it) is answered 431 on its stream alone.
- Open streams and reset them for free (rapid reset, CVE-2023-44487): streams the peer resets
  before our response ended are counted per budget window; past the budget, GOAWAY
  ENHANCE_YOUR_CALM. A stream opened and reset in the same bytes is never shown to the consumer.
- Make us answer control frames without end: SETTINGS, PING and PRIORITY frames (and empty
  DATA frames) are counted per window.
- Run more than `max_concurrent_streams` at once: a stream beyond it is refused (REFUSED_STREAM),
  and refusals spend the reset budget too; h2's own check, at twice the limit, is the backstop.
- Smuggle HTTP/1.1 connection semantics: connection-specific fields (`connection`, `upgrade`, ...)
  never reach the consumer's headers; the head says why it is invalid (`RequestHead.invalid`), for
  a 400 in the words kube-apiserver uses. Malformed heads (upper-case names, stray pseudo-fields)
  are reset with PROTOCOL_ERROR, as that server does.
- Push more body than we consumed: received DATA is acknowledged (WINDOW_UPDATE) only when the
  consumer calls `consumed()`, so a slow reader stops the sender at its source.

Sending never buffers: `send_data` sends what the peer's windows allow and returns how much, so a
stream with a zero window holds its own bytes (with its consumer) and never stalls another one.
Time is passed in (`now`, seconds on a monotonic clock): this module reads no clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack.struct import NeverIndexedHeaderTuple
from hyperframe.frame import GoAwayFrame

from protocol.headers import Header, Headers

__all__ = [
    "Body",
    "BodyEnd",
    "ConnectionEnded",
    "ConnectionFailed",
    "ErrorCode",
    "Event",
    "Http2Error",
    "RequestHead",
    "Reset",
    "ServerConnection",
    "ServerLimits",
    "StreamClosed",
    "WindowOpened",
]

ErrorCode = h2.errors.ErrorCodes
"""RFC 9113 error codes (an IntEnum: plain ints to anyone who compares them)."""

_PREFACE_LENGTH = 24
_FRAME_HEADER_LENGTH = 9
_HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x1, 0x5, 0x9
_END_HEADERS = 0x4
_HEADER_FIELD_OVERHEAD = 32  # RFC 9113 §6.5.2: a field's size is name + value + 32

_UNIQUE_PER_ANSWER = frozenset({b"planelink-request-id", b"audit-id"})
"""Fields whose value is new in every answer: HPACK sends them as literals, never into the
dynamic table, where each would evict fields that repeat (and HPACK's table search is linear in
its entries)."""

_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


@dataclass(frozen=True)
class ServerLimits:
    """What one caller connection may use; every phase a peer drives is bounded by one of these."""

    max_concurrent_streams: int = 1000
    """kube-apiserver's own default (`--http2-max-streams-per-connection`): an informer-heavy
    client puts every watch on one connection."""
    max_header_list_size: int = 64 * 1024
    initial_window_size: int = 256 * 1024
    """Request body bytes one stream may have in flight before its consumer took them."""
    connection_window: int = 1024 * 1024
    """Request body bytes all streams together may have in flight: the bound of what a
    connection buffers, however many streams it has (opened again only as bodies are
    consumed, so a caller whose uploads are not read stalls its own uploads, never memory)."""
    max_frame_size: int = 16 * 1024
    budget_window_seconds: float = 10.0
    """The window the two budgets below are counted in (a fixed window, restarted when over)."""
    rapid_reset_budget: int = 200
    """Streams the peer may reset before their response ended, or have us refuse (over the
    stream limit, malformed), per window."""
    control_frame_budget: int = 100
    """SETTINGS and PING frames (each answered with an ACK), PRIORITY frames (CVE-2019-9513)
    and empty DATA frames not ending a body the peer may send, per window."""


# Events: what the peer did, in planelink's terms.


@dataclass(frozen=True)
class RequestHead:
    stream_id: int
    method: bytes
    path: bytes
    authority: bytes
    headers: Headers
    """Regular fields in order (no pseudo-fields), names lower-case."""
    end_stream: bool
    invalid: str = ""
    """Why HTTP/2 does not allow this request, when it carries an HTTP/1.1 connection field
    (`Connection`, `Upgrade`, `Transfer-Encoding`, ...; those fields are not in `headers`).
    kube-apiserver answers such a request 400 with these words rather than resetting it, and so
    is the consumer to."""


@dataclass(frozen=True)
class Body:
    stream_id: int
    data: bytes
    """Not acknowledged to the peer until the consumer calls `consumed(stream_id, len(data))`."""


@dataclass(frozen=True)
class BodyEnd:
    stream_id: int


@dataclass(frozen=True)
class Reset:
    """The peer reset a stream the consumer knows: stop work on it; its bytes are dropped."""

    stream_id: int
    code: int


@dataclass(frozen=True)
class WindowOpened:
    """The peer opened a send window: stream 0 means the connection (every stream may resume)."""

    stream_id: int


@dataclass(frozen=True)
class ConnectionEnded:
    """The peer sent GOAWAY: streams above `last_stream_id` were never processed."""

    code: int
    last_stream_id: int
    reason: str


Event = RequestHead | Body | BodyEnd | Reset | WindowOpened | ConnectionEnded


class Http2Error(Exception):
    """Base of the errors this package raises; no h2 exception leaves it."""


class ConnectionFailed(Http2Error):
    """The connection is over on our side; a GOAWAY with `code` is queued in `data_to_send()`."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"{reason} (HTTP/2 error code {code})")
        self.reason = reason
        self.code = code


class StreamClosed(Http2Error):
    """The stream cannot be sent on any more (reset, finished, or never opened)."""


@dataclass
class _Budget:
    """Counts occurrences in a fixed window of `seconds`; `spend` says whether still within."""

    limit: int
    seconds: float
    started: float = 0.0
    spent: int = 0

    def spend(self, now: float) -> bool:
        if now - self.started >= self.seconds:
            self.started, self.spent = now, 0
        self.spent += 1
        return self.spent <= self.limit


@dataclass
class _FrameScanner:
    """Reads frame headers off the raw bytes, before h2 sees them: bounds a header block before h2
    buffers it, and cuts the bytes at frame ends so each frame's events are handled (a stream
    counted, refused) before the next frame is parsed."""

    limit: int
    preface_left: int = _PREFACE_LENGTH
    header: bytearray = field(default_factory=bytearray)
    payload_left: int = 0
    block_bytes: int = 0

    def feed(self, data: bytes) -> list[bytes]:
        """`data` cut after the preface and after every frame it ends (the rest last)."""
        pieces: list[bytes] = []
        start = offset = 0
        while offset < len(data):
            left = len(data) - offset
            if self.preface_left:
                step = min(self.preface_left, left)
                self.preface_left -= step
                ended = self.preface_left == 0
            elif self.payload_left:
                step = min(self.payload_left, left)
                self.payload_left -= step
                ended = self.payload_left == 0
            else:
                step = min(_FRAME_HEADER_LENGTH - len(self.header), left)
                self.header += data[offset : offset + step]
                ended = False
                if len(self.header) == _FRAME_HEADER_LENGTH:
                    self._frame(bytes(self.header))
                    self.header.clear()
                    ended = self.payload_left == 0
            offset += step
            if ended:
                pieces.append(data[start:offset])
                start = offset
        if start < len(data):
            pieces.append(data[start:])
        return pieces

    def _frame(self, header: bytes) -> None:
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        self.payload_left = length
        if kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
            self.block_bytes = (self.block_bytes if kind == _CONTINUATION else 0) + length
            if self.block_bytes > self.limit:
                raise ConnectionFailed("header block over its limit", ErrorCode.ENHANCE_YOUR_CALM)
            if flags & _END_HEADERS:
                self.block_bytes = 0


class _AdvertisedSettings(h2.settings.Settings):
    """Our SETTINGS, advertised as they are; only h2's own stream count check sees twice the
    stream limit: h2 makes going over a connection error, where we refuse the stream alone
    (REFUSED_STREAM, as Go's server does) and keep h2's as the backstop for a peer that goes on."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2 * self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class ServerConnection:
    """One caller's HTTP/2 connection, server side: `receive` bytes, send `data_to_send()`."""

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self.limits = limits or ServerLimits()
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Malformed requests are a stream error here (see `_malformed`); h2's own inbound
            # validation would make every one a connection error.
            validate_inbound_headers=False,
            # `send_head` takes fields already checked (tokens, values without CR, LF or NUL:
            # the gateway's framer checks what an agent sends) and shapes them itself; h2's
            # checks would be a second pass over every field of every answer.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.local_settings = _AdvertisedSettings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_list_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.limits.initial_window_size,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: self.limits.max_frame_size,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        # The hard bound, connection-fatal; over the advertised limit alone is answered 431.
        self._h2.decoder.max_header_list_size = 2 * self.limits.max_header_list_size
        self._h2.initiate_connection()
        opening = self.limits.connection_window - self._h2.inbound_flow_control_window
        if opening > 0:
            self._h2.increment_flow_control_window(opening)
        self._scanner = _FrameScanner(limit=2 * self.limits.max_header_list_size)
        self._resets = _Budget(self.limits.rapid_reset_budget, self.limits.budget_window_seconds)
        self._control = _Budget(self.limits.control_frame_budget, self.limits.budget_window_seconds)
        self._live: set[int] = set()
        """Streams the consumer was shown whose response has not ended."""
        self._receiving: set[int] = set()
        """Streams the consumer was shown whose request body has not ended."""
        self._failed: ConnectionFailed | None = None
        self._last_stream_id: int | None = None
        """Set by a graceful `goaway`: streams above it are refused (the peer retries them)."""
        self._goaway = b""

    @property
    def draining(self) -> bool:
        """A graceful GOAWAY went out: no new stream will be served."""
        return self._last_stream_id is not None

    # Receiving

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Process bytes from the peer; `ConnectionFailed` (GOAWAY queued) when it must end."""
        if self._failed is not None:
            raise self._failed
        try:
            translated: list[Event] = []
            for piece in self._scanner.feed(data):
                for event in self._h2.receive_data(piece):
                    translated.extend(self._translate(event, now))
        except ConnectionFailed as failure:
            self._fail(failure)
        except h2.exceptions.ProtocolError as error:
            code = getattr(error, "error_code", ErrorCode.PROTOCOL_ERROR)
            self._fail(ConnectionFailed(str(error) or type(error).__name__, int(code)))
        return self._without_streams_reset_at_birth(translated)

    def _fail(self, failure: ConnectionFailed) -> NoReturn:
        if self._h2.state_machine.state != h2.connection.ConnectionState.CLOSED:
            self._h2.close_connection(error_code=failure.code)
        self._failed = failure
        raise failure

    def _translate(self, event: h2.events.Event, now: float) -> list[Event]:  # noqa: PLR0911 - one per event kind
        if isinstance(event, h2.events.RequestReceived):
            return self._request(event, now)
        if isinstance(event, h2.events.DataReceived):
            return self._data(event, now)
        if isinstance(event, h2.events.StreamEnded):
            # Also after DATA with END_STREAM and after trailers (dropped: Kubernetes requests
            # carry none); a head with END_STREAM said so itself.
            if event.stream_id in self._receiving:
                self._receiving.discard(event.stream_id)
                return [BodyEnd(event.stream_id)] if event.stream_id in self._live else []
            return []
        if isinstance(event, h2.events.StreamReset):
            return self._peer_reset(event, now)
        if isinstance(
            event,
            (h2.events.PingReceived, h2.events.RemoteSettingsChanged, h2.events.PriorityUpdated),
        ):
            if not self._control.spend(now):
                raise ConnectionFailed("control frame flood", ErrorCode.ENHANCE_YOUR_CALM)
            if isinstance(event, h2.events.RemoteSettingsChanged):
                return [WindowOpened(0)]
            return []
        if isinstance(event, h2.events.WindowUpdated):
            return [WindowOpened(event.stream_id or 0)]
        if isinstance(event, h2.events.ConnectionTerminated):
            self._live.clear()
            self._receiving.clear()
            return [
                ConnectionEnded(
                    code=int(event.error_code or 0),
                    last_stream_id=event.last_stream_id or 0,
                    reason=(event.additional_data or b"").decode("utf-8", "replace"),
                )
            ]
        return []

    def _data(self, event: h2.events.DataReceived, now: float) -> list[Event]:
        assert event.stream_id is not None
        assert event.data is not None
        # Empty DATA costs us a frame's work and the peer nothing (CVE-2019-9518).
        if not event.data and event.stream_ended is None and not self._control.spend(now):
            raise ConnectionFailed("empty frame flood", ErrorCode.ENHANCE_YOUR_CALM)
        if event.stream_id not in self._live:
            # Nobody will consume these: give the connection window back now.
            self._acknowledge(event.stream_id, event.flow_controlled_length or 0)
            return []
        padding = (event.flow_controlled_length or 0) - len(event.data)
        if padding:
            self._acknowledge(event.stream_id, padding)
        return [Body(event.stream_id, bytes(event.data))] if event.data else []

    def _refuse(self, stream_id: int, code: int, now: float) -> None:
        # A peer that goes on opening what we refuse makes us work as a rapid reset does.
        if not self._resets.spend(now):
            raise ConnectionFailed(
                "streams refused past the reset budget", ErrorCode.ENHANCE_YOUR_CALM
            )
        self._h2.reset_stream(stream_id, code)

    def _request(self, event: h2.events.RequestReceived, now: float) -> list[Event]:
        stream_id = event.stream_id
        assert stream_id is not None
        # Counted here, in the order of the frames (h2's count is of after all of them).
        if self._last_stream_id is not None and stream_id > self._last_stream_id:
            self._refuse(stream_id, ErrorCode.REFUSED_STREAM, now)
            return []
        if self._open_streams() >= self.limits.max_concurrent_streams:
            self._refuse(stream_id, ErrorCode.REFUSED_STREAM, now)
            return []
        fields = [(bytes(name), bytes(value)) for name, value in event.headers or []]
        pseudo, regular, invalid = _split_head(fields)
        if pseudo is None:
            self._refuse(stream_id, ErrorCode.PROTOCOL_ERROR, now)
            return []
        size = sum(len(n) + len(v) + _HEADER_FIELD_OVERHEAD for n, v in fields)
        if size > self.limits.max_header_list_size:
            self._h2.send_headers(stream_id, [(b":status", b"431")], end_stream=True)
            return []
        ended = event.stream_ended is not None
        self._live.add(stream_id)
        if not ended:
            self._receiving.add(stream_id)
        return [
            RequestHead(
                stream_id=stream_id,
                method=pseudo[b":method"],
                path=pseudo[b":path"],
                authority=pseudo.get(b":authority", dict(regular).get(b"host", b"")),
                headers=regular,
                end_stream=ended,
                invalid=invalid,
            )
        ]

    def _open_streams(self) -> int:
        """Streams shown to the consumer whose response or request body has not ended (no set
        is built: with a thousand watches open this runs for every new request)."""
        live = self._live
        return len(live) + sum(1 for stream_id in self._receiving if stream_id not in live)

    def _peer_reset(self, event: h2.events.StreamReset, now: float) -> list[Event]:
        stream_id = event.stream_id or 0
        if stream_id not in self._live:
            return []
        self._live.discard(stream_id)
        self._receiving.discard(stream_id)
        if not self._resets.spend(now):
            raise ConnectionFailed("rapid reset", ErrorCode.ENHANCE_YOUR_CALM)
        return [Reset(stream_id, int(event.error_code or 0))]

    def _without_streams_reset_at_birth(self, events: list[Event]) -> list[Event]:
        """Drop every event of a stream whose head and peer reset came in the same bytes (the
        consumer never starts work on it); the bytes of its dropped bodies are given back."""
        opened = {e.stream_id for e in events if isinstance(e, RequestHead)}
        stillborn = {e.stream_id for e in events if isinstance(e, Reset) and e.stream_id in opened}
        if not stillborn:
            return events
        kept: list[Event] = []
        for event in events:
            if isinstance(event, ConnectionEnded) or event.stream_id not in stillborn:
                kept.append(event)
            elif isinstance(event, Body):
                self._acknowledge(event.stream_id, len(event.data))
        return kept

    # Flow control driven by the consumer

    def consumed(self, stream_id: int, size: int) -> None:
        """The consumer is done with `size` bytes of the stream's `Body`: the peer may send more."""
        self._acknowledge(stream_id, size)

    def _acknowledge(self, stream_id: int, size: int) -> None:
        if size <= 0 or self._failed is not None:
            return
        try:
            self._h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            # The connection is closing: there is nobody to open a window for.
            return

    # Responding

    def responding(self, stream_id: int) -> bool:
        """Whether the stream was shown to the consumer and its response has not ended."""
        return stream_id in self._live

    def send_head(
        self, stream_id: int, status: int, headers: Headers, *, end_stream: bool = False
    ) -> None:
        """Send a response head of valid fields (tokens, values without CR, LF or NUL);
        HTTP/1.1's connection-specific fields are dropped, names lowered, values trimmed (RFC
        9113 §8.2.1)."""
        fields: list[Header] = [(b":status", str(status).encode("ascii"))]
        for name, value in headers:
            lowered = name.lower()
            if lowered in _UNIQUE_PER_ANSWER:
                fields.append(NeverIndexedHeaderTuple(lowered, value.strip(b" \t")))
            elif lowered not in _CONNECTION_SPECIFIC and lowered != b"te":
                fields.append((lowered, value.strip(b" \t")))
        with _on_stream(stream_id):
            self._h2.send_headers(stream_id, fields, end_stream=end_stream)
        if end_stream:
            self._live.discard(stream_id)

    def sendable(self, stream_id: int) -> int:
        """How many body bytes the peer's windows take now on this stream (0: wait for a window)."""
        try:
            return max(0, self._h2.local_flow_control_window(stream_id))
        except h2.exceptions.ProtocolError as error:
            raise StreamClosed(f"stream {stream_id}: {error}") from None

    def send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> int:
        """Send as much of `data` as the windows allow; returns how much. The stream ends only
        when all of `data` went out and `end` is set; the rest stays with the caller until a
        `WindowOpened` for this stream or stream 0."""
        sent = 0
        size = len(data)
        frame = self._h2.max_outbound_frame_size
        while sent < size:
            step = min(self.sendable(stream_id), frame, size - sent)
            if step == 0:
                break
            # The end rides on the last DATA frame: a small answer is HEADERS and one DATA.
            last = end and sent + step == size
            with _on_stream(stream_id):
                self._h2.send_data(stream_id, data[sent : sent + step], end_stream=last)
            sent += step
            if last:
                self._live.discard(stream_id)
                return sent
        if end and sent == size:
            with _on_stream(stream_id):
                self._h2.end_stream(stream_id)
            self._live.discard(stream_id)
        return sent

    def reset(self, stream_id: int, code: int = ErrorCode.CANCEL) -> None:
        """Reset a stream (our side gave up on it); resetting a closed stream does nothing."""
        self._live.discard(stream_id)
        self._receiving.discard(stream_id)  # the peer sends no more of its body
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            return

    def goaway(self, code: int = ErrorCode.NO_ERROR, message: bytes = b"") -> None:
        """Tell the peer no new stream will be processed. NO_ERROR is graceful: the streams
        already open go on to their end (RFC 9113 §6.8), newer ones are refused with
        REFUSED_STREAM, which a client retries elsewhere. Any other code ends the connection.
        After a `ConnectionFailed` the GOAWAY saying why is sent already: this does nothing."""
        if self._failed is not None:
            return
        if code == ErrorCode.NO_ERROR:
            if self._last_stream_id is None:
                # Written by hand: h2's close_connection() would refuse every later frame,
                # those of the streams still open too.
                self._last_stream_id = self._h2.highest_inbound_stream_id
                frame = GoAwayFrame(0)
                frame.last_stream_id = self._last_stream_id
                frame.error_code = code
                frame.additional_data = message
                self._goaway = frame.serialize()
            return
        try:
            self._h2.close_connection(error_code=code, additional_data=message or None)
        except h2.exceptions.ProtocolError:
            return  # already closed: the peer was told, or left

    def data_to_send(self) -> bytes:
        """The bytes to write to the peer now (empty when there are none)."""
        data = self._h2.data_to_send()
        if self._goaway:
            data, self._goaway = data + self._goaway, b""
        return data


def _split_head(
    fields: list[Header],
) -> tuple[dict[bytes, bytes] | None, list[Header], str]:
    """The pseudo-fields and the regular fields of a request head, or (None, ...) if malformed
    (RFC 9113 §8.1.1 and §8.3.1: a stream error of type PROTOCOL_ERROR); and, for a head that
    carries an HTTP/1.1 connection field, what is wrong with it (`RequestHead.invalid`)."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[Header] = []
    invalid = ""
    for name, value in fields:
        if not name or name != name.lower() or any(c in value for c in b"\r\n\x00"):
            return None, regular, ""
        if name.startswith(b":"):
            if regular or name not in _REQUEST_PSEUDO or name in pseudo:
                return None, regular, ""
            pseudo[name] = value
        elif name in _CONNECTION_SPECIFIC:
            # Go's words (net/http, checkValidHTTP2RequestHeaders), as kube-apiserver answers.
            canonical = "-".join(part.capitalize() for part in name.decode().split("-"))
            invalid = invalid or f'request header "{canonical}" is not valid in HTTP/2'
        elif name == b"te" and value != b"trailers":
            invalid = invalid or 'request header "TE" may only be "trailers" in HTTP/2'
        else:
            regular.append((name, value))
    if not pseudo.get(b":method") or not pseudo.get(b":path") or b":scheme" not in pseudo:
        return None, regular, ""
    return pseudo, regular, invalid


@contextmanager
def _on_stream(stream_id: int) -> Iterator[None]:
    """h2's refusal to send on a stream (closed, reset, unknown) as our `StreamClosed`."""
    try:
        yield
    except (h2.exceptions.ProtocolError, KeyError) as error:
        raise StreamClosed(f"stream {stream_id}: {error}") from None
