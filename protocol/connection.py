"""The sans-I/O tunnel connection: bytes in, events out, bytes to send.

Usage by an I/O adapter (one per WebSocket)::

    conn = Connection(Role.AGENT, identity={...})
    send(conn.data_to_send())                 # our HELLO
    for message in websocket:                 # each binary message
        conn.receive_data(message)
        for event in conn.events_received():  # handle RequestReceived, DataReceived, ...
            ...
        send(conn.data_to_send())

It never reads a clock (the rate limits of :class:`~protocol.settings.FloodLimits` run on
the time the caller passes to ``receive_data``), never does I/O and never imports asyncio.
Bad input from the peer never raises: a stream-level fault resets that stream (RESET +
``StreamReset``), a connection-level fault queues a GOAWAY and ends with
``ConnectionTerminated``. Misuse by the local application raises
:class:`~protocol.errors.LocalProtocolError` and changes nothing.
Any call may queue events (even ``data_to_send``: emitting a stream's END can complete a
drain), so read ``events_received()`` after each call.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping

from protocol.errors import (
    ConnectionProtocolError,
    ErrorCode,
    HeadTooLarge,
    LocalProtocolError,
    StreamClosedError,
    StreamProtocolError,
)
from protocol.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    PingAcknowledged,
    ReplicasReceived,
    RequestReceived,
    ResponseReceived,
    SendCapacityAvailable,
    StreamEnded,
    StreamReset,
)
from protocol.flood import TokenBucket
from protocol.flow import ReceiveWindow, grow
from protocol.frames import (
    HEADER,
    HELLO_VERSION,
    MAX_STREAM_ID,
    FrameType,
    GoAway,
    Hello,
    Ping,
    Pong,
    Replicas,
    Request,
    Reset,
    Response,
    Role,
    WindowUpdate,
    check_frame_header,
    parse_header,
)
from protocol.headers import HeaderBlockError
from protocol.hello import (
    CAPABILITY_REPLICAS,
    SUPPORTED_VERSIONS,
    PeerInfo,
    accept_hello,
    build_hello,
)
from protocol.registry import StreamRegistry
from protocol.scheduler import Scheduler
from protocol.settings import FRAME_HEADER_SIZE, MAX_WINDOW, FloodLimits, SendLimits, Settings
from protocol.stream import Action, HalfState, Party, Side, Stream

__all__ = ["CONNECTION_TRANSITIONS", "Connection", "ConnectionInput", "ConnectionState"]

_DATA = int(FrameType.DATA)
_OPEN = HalfState.OPEN
_CLOSED = HalfState.CLOSED
_LOCAL, _PEER = Party.LOCAL, Party.PEER
_Handler = Callable[[int, int, memoryview, int, int], None]


class ConnectionState(enum.Enum):
    """Life of a connection; it moves only along :data:`CONNECTION_TRANSITIONS`."""

    AWAIT_HELLO = "await-hello"
    """Our HELLO is queued; the peer's has not arrived. Only HELLO may be received."""
    OPEN = "open"
    """Both HELLOs done; streams may be opened."""
    DRAINING = "draining"
    """A GOAWAY was sent or received: no new streams; existing ones finish."""
    CLOSED = "closed"
    """Terminated (``ConnectionTerminated`` emitted); input is ignored."""


class ConnectionInput(enum.Enum):
    """What moves a connection from one :class:`ConnectionState` to the next."""

    HELLO_RECEIVED = "hello-received"
    """The peer's HELLO was accepted."""
    GOAWAY = "goaway"
    """A GOAWAY was sent (``drain``) or received: no new streams from now on."""
    DRAINED = "drained"
    """The last stream of a draining connection is gone."""
    TERMINATED = "terminated"
    """Closed now: locally, by a connection error, by the peer's error GOAWAY, or the
    transport went away."""


CONNECTION_TRANSITIONS: dict[tuple[ConnectionState, ConnectionInput], ConnectionState] = {
    (ConnectionState.AWAIT_HELLO, ConnectionInput.HELLO_RECEIVED): ConnectionState.OPEN,
    # drain() before the peer's HELLO: no stream can exist yet, so DRAINED follows at once.
    (ConnectionState.AWAIT_HELLO, ConnectionInput.GOAWAY): ConnectionState.DRAINING,
    (ConnectionState.OPEN, ConnectionInput.GOAWAY): ConnectionState.DRAINING,
    (ConnectionState.DRAINING, ConnectionInput.GOAWAY): ConnectionState.DRAINING,
    (ConnectionState.DRAINING, ConnectionInput.DRAINED): ConnectionState.CLOSED,
    (ConnectionState.AWAIT_HELLO, ConnectionInput.TERMINATED): ConnectionState.CLOSED,
    (ConnectionState.OPEN, ConnectionInput.TERMINATED): ConnectionState.CLOSED,
    (ConnectionState.DRAINING, ConnectionInput.TERMINATED): ConnectionState.CLOSED,
}
"""Every legal change of a connection's state; nothing leaves CLOSED. The connection changes
its state only through this table (``Connection._move``), and every public method that could
ask for an edge it lacks checks the state first, so a missing edge is a bug in this module."""


class Connection:
    """One end of a tunnel connection (gateway or agent), without I/O."""

    def __init__(
        self,
        role: Role,
        *,
        settings: Settings | None = None,
        limits: SendLimits | None = None,
        flood: FloodLimits | None = None,
        identity: Mapping[str, str] | None = None,
        capabilities: Iterable[str] = (),
        versions: Iterable[int] = SUPPORTED_VERSIONS,
    ) -> None:
        """Create the connection and queue our HELLO; raises ``ValueError`` on bad arguments.

        ``settings`` are the limits we impose on the peer; ``limits`` bound our own send
        buffers; ``flood`` bounds the useless work the peer may cause; ``identity`` and
        ``capabilities`` go into our HELLO.
        """
        self.role = role
        self.local_settings = settings if settings is not None else Settings()
        self.send_limits = limits if limits is not None else SendLimits()
        self.flood_limits = flood if flood is not None else FloodLimits()
        self.flood_limit: str | None = None
        """Which ``FloodLimits`` bound the peer passed, once it did (``max_queued_answers``,
        ``idle_frame`` or ``stream_churn``); the connection then ended with ENHANCE_YOUR_CALM."""
        flood_limits = self.flood_limits
        self._idle_frames = TokenBucket(
            "idle_frame", flood_limits.idle_frame_burst, flood_limits.idle_frame_rate
        )
        self._churn = TokenBucket(
            "stream_churn", flood_limits.stream_churn_burst, flood_limits.stream_churn_rate
        )
        self.peer: PeerInfo | None = None
        """The peer's HELLO, once received."""
        self._state = ConnectionState.AWAIT_HELLO
        self._versions = tuple(versions)
        self._capabilities = tuple(capabilities)
        self._version = HELLO_VERSION
        self._events: list[Event] = []
        self._reg = StreamRegistry(role)
        self._streams = self._reg.streams
        self._sched = Scheduler(limits=self.send_limits, version=HELLO_VERSION)
        self._recv = ReceiveWindow(self.local_settings.connection_window)
        self._goaway_sent = False
        self._peer_goaway_last: int | None = None
        self._handlers: dict[int, _Handler] = {
            FrameType.HELLO: self._on_hello,
            FrameType.REQUEST: self._on_request,
            FrameType.RESPONSE: self._on_response,
            FrameType.DATA: self._on_data,
            FrameType.RESET: self._on_reset,
            FrameType.WINDOW_UPDATE: self._on_window_update,
            FrameType.PING: self._on_ping,
            FrameType.PONG: self._on_pong,
            FrameType.GOAWAY: self._on_goaway,
            FrameType.REPLICAS: self._on_replicas,
        }
        self._sched.control(
            build_hello(
                role=role,
                versions=self._versions,
                settings=self.local_settings,
                identity=identity or {},
                capabilities=self._capabilities,
            )
        )

    # == I/O boundary ==================================================================

    def receive_data(self, message: bytes, now: float | None = None) -> None:
        """Feed one received WebSocket binary message (one or more whole frames).

        ``now`` is a monotonic time in seconds, for the rate limits of ``FloodLimits``;
        without it, time is taken not to have moved since the last call. ``DataReceived``
        events reference ``message`` without copying it.
        """
        if self._state is ConnectionState.CLOSED:
            return
        if now is not None:
            self._idle_frames.advance(now)
            self._churn.advance(now)
        try:
            self._receive(memoryview(message))
        except ConnectionProtocolError as exc:
            self._fail(exc)
        except Exception as exc:  # peer input must never crash the caller
            self._fail(
                ConnectionProtocolError(
                    ErrorCode.INTERNAL_ERROR, f"internal error on received data: {exc!r}"
                )
            )

    def events_received(self) -> list[Event]:
        """Return and forget the events produced since the last call."""
        events, self._events = self._events, []
        return events

    def data_to_send(self, max_bytes: int | None = None) -> list[bytes]:
        """Messages to send, in order; each is one WebSocket binary message.

        ``max_bytes`` bounds the total size (soft: one control frame or one DATA header
        may overshoot, so a tiny budget still makes progress).
        """
        pulled = self._sched.pull(max_bytes)
        for stream_id in pulled.ended:
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.end_flushed = True
                self._finish_if_done(stream)
        for stream_id, capacity in pulled.unblocked:
            self._events.append(SendCapacityAvailable(stream_id, capacity))
        return pulled.messages

    def connection_lost(self) -> None:
        """The transport closed: every stream is reset with ``CONNECTION_LOST``."""
        if self._state is not ConnectionState.CLOSED:
            self._terminate(ErrorCode.CONNECTION_LOST, "transport closed", remote=True)

    # == local API: streams ============================================================

    def send_request(
        self,
        *,
        method: bytes,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]] = (),
        target: bytes = b"",
        end_stream: bool = False,
        upgrade: bool = False,
    ) -> int:
        """Open a stream with a request head; returns its id.

        Raises ``LocalProtocolError`` with ``REFUSED_STREAM`` when no stream may be opened
        now (peer HELLO missing, draining, peer's MAX_CONCURRENT_STREAMS reached, ids
        exhausted) and with ``HEADER_ERROR`` for an invalid or oversized head.
        """
        peer = self._require_peer()
        if self._state is not ConnectionState.OPEN:
            raise LocalProtocolError(ErrorCode.REFUSED_STREAM, "connection is draining")
        if self._reg.local_open >= peer.settings.max_concurrent_streams:
            raise LocalProtocolError(
                ErrorCode.REFUSED_STREAM,
                f"peer allows {peer.settings.max_concurrent_streams} concurrent streams",
            )
        stream_id = self._reg.next_local_id
        head = Request(stream_id, method, path, tuple(headers), target, end_stream, upgrade)
        frame = self._encode_head(head, peer)
        self._reg.claim_local_id()
        stream = Stream(
            stream_id,
            opened_locally=True,
            recv=ReceiveWindow(self.local_settings.initial_stream_window),
        )
        stream.apply(_LOCAL, Action.REQUEST_UPGRADE if upgrade else Action.REQUEST)
        self._reg.add(stream)
        self._sched.add_stream(stream_id)
        self._sched.control(frame)
        if end_stream:
            stream.apply(_LOCAL, Action.END)
            stream.end_flushed = True  # travels with the head, FIFO with later heads
        return stream_id

    def send_response(
        self,
        stream_id: int,
        *,
        status: int,
        headers: Iterable[tuple[bytes, bytes]] = (),
        end_stream: bool = False,
    ) -> None:
        """Send the response head of a stream the peer opened.

        ``101`` is allowed only when the request asked for an upgrade; the stream then
        becomes a byte pipe. Other statuses must be 200..599.
        """
        peer = self._require_peer()
        stream = self._local_stream(stream_id)
        stream.check(_LOCAL, Action.RESPONSE, status=status)  # the state's verdict comes first
        frame = self._encode_head(Response(stream_id, status, tuple(headers), end_stream), peer)
        stream.apply(_LOCAL, Action.RESPONSE, status=status)
        self._sched.control(frame)
        if end_stream:
            stream.apply(_LOCAL, Action.END)
            stream.end_flushed = True
            self._finish_if_done(stream)

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue body bytes; returns how many were accepted (possibly 0, never more).

        Accepts at most :meth:`send_capacity` bytes. When it accepted less than offered, a
        ``SendCapacityAvailable`` event follows once room frees up. ``bytes`` (and read-only
        views of them) are kept by reference, other buffers are copied.
        """
        stream = self._streams.get(stream_id)
        if stream is None or stream.local is not _OPEN:
            # Not the common case: DATA is legal only on an OPEN half (which exists only on a
            # live connection), so this raises the table's precise error.
            self._require_peer()
            self._local_stream(stream_id).apply(_LOCAL, Action.DATA)
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        return self._sched.enqueue(stream_id, data)

    def end_stream(self, stream_id: int) -> None:
        """Half-close our side: END goes out after all queued data of the stream."""
        self._require_peer()
        self._local_stream(stream_id).apply(_LOCAL, Action.END)
        self._sched.end(stream_id)

    def reset_stream(
        self, stream_id: int, error_code: ErrorCode = ErrorCode.CANCEL, message: str = ""
    ) -> None:
        """Abort a stream in both directions; queued data is dropped.

        Resetting a stream that is already gone (a race with the peer's RESET, END or a
        GOAWAY) sends nothing; if it closed normally with bytes the application had not yet
        consumed, those are credited to the connection now (they never will be consumed, and
        holding them would shrink the connection window for every other stream for good).
        """
        if self._state is ConnectionState.CLOSED:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._credit_connection(self._reg.release_lingering(stream_id))
            return
        self._sched.control(Reset(stream_id, error_code, message).encode(self._version))
        self._reg.remember_reset(stream_id)
        self._remove(stream, reset=True)
        self._check_drained()

    def consumed(self, stream_id: int, n: int) -> None:
        """The application has handed on ``n`` received bytes of ``stream_id``.

        Credit goes back to the peer (WINDOW_UPDATE) once half a window has been consumed.
        Calls for a stream that was reset are ignored (its credit was already returned).
        """
        if n <= 0:
            if n < 0:
                raise LocalProtocolError(ErrorCode.FLOW_CONTROL_ERROR, f"consumed({n}) < 0")
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            if n > stream.recv.buffered:
                raise LocalProtocolError(
                    ErrorCode.FLOW_CONTROL_ERROR,
                    f"consumed {n} bytes on stream {stream_id}, only "
                    f"{stream.recv.buffered} were delivered and not yet consumed",
                )
            increment = stream.recv.consume(n)
            if increment and stream.remote is not _CLOSED:
                self._control(WindowUpdate(stream_id, increment).encode(self._version))
        elif not self._reg.consume_lingering(stream_id, n):
            return
        increment = self._recv.consume(n)
        if increment:
            self._control(WindowUpdate(0, increment).encode(self._version))

    # == local API: connection =========================================================

    def ping(self, payload: bytes) -> None:
        """Send a PING with an 8-byte opaque payload (e.g. a timestamp the caller encodes)."""
        self._require_peer()
        if len(payload) != 8:
            raise LocalProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
        self._sched.control(Ping(bytes(payload)).encode(self._version))

    def send_replicas(self, ids: Iterable[str]) -> None:
        """(Gateway only.) Tell the agent the live replicas' ids, this one's included.

        Raises ``LocalProtocolError``: ``PROTOCOL_ERROR`` unless this is a gateway whose
        peer's HELLO (received) offered ``replicas`` and the connection is not closed,
        ``FRAME_SIZE_ERROR`` for an invalid id list (see ``Replicas``) or one larger than
        the peer's MAX_FRAME_SIZE.
        """
        peer = self._require_peer()
        if self.role is not Role.GATEWAY:
            raise LocalProtocolError(ErrorCode.PROTOCOL_ERROR, "only a gateway sends REPLICAS")
        if CAPABILITY_REPLICAS not in peer.capabilities:
            raise LocalProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"the peer did not offer {CAPABILITY_REPLICAS!r}"
            )
        try:
            frame = Replicas(tuple(rid.encode("utf-8") for rid in ids)).encode(self._version)
        except (UnicodeError, HeaderBlockError) as exc:
            raise LocalProtocolError(ErrorCode.FRAME_SIZE_ERROR, str(exc)) from None
        if len(frame) - FRAME_HEADER_SIZE > peer.settings.max_frame_size:
            raise LocalProtocolError(
                ErrorCode.FRAME_SIZE_ERROR,
                f"REPLICAS of {len(frame) - FRAME_HEADER_SIZE} bytes exceeds the peer's "
                f"MAX_FRAME_SIZE {peer.settings.max_frame_size}",
            )
        self._sched.control(frame)

    def drain(self, debug: str = "") -> None:
        """Start a graceful shutdown: GOAWAY(NO_ERROR); open streams finish, no new ones.

        ``ConnectionTerminated(NO_ERROR)`` follows when the last stream is done.
        """
        if self._state is ConnectionState.CLOSED or self._goaway_sent:
            return
        self._send_goaway(ErrorCode.NO_ERROR, debug)
        self._move(ConnectionInput.GOAWAY)
        self._check_drained()

    def close(self, error_code: ErrorCode = ErrorCode.NO_ERROR, debug: str = "") -> None:
        """End now: GOAWAY(error_code), every stream reset, ``ConnectionTerminated``."""
        if self._state is not ConnectionState.CLOSED:
            self._send_goaway(error_code, debug)
            self._terminate(error_code, debug or "closed locally", remote=False)

    # == queries ======================================================================

    @property
    def state(self) -> ConnectionState:
        """Where the connection is in its life (changed only along ``CONNECTION_TRANSITIONS``)."""
        return self._state

    @property
    def available_streams(self) -> int:
        """How many more streams we may open now (0 before the peer's HELLO / draining)."""
        if self.peer is None or self._state is not ConnectionState.OPEN:
            return 0
        return max(0, self.peer.settings.max_concurrent_streams - self._reg.local_open)

    @property
    def open_streams(self) -> int:
        """Streams not yet forgotten (either side opened them)."""
        return len(self._streams)

    @property
    def outbound_buffered(self) -> int:
        """DATA bytes queued by the application and not yet emitted, all streams."""
        return self._sched.queued_total

    @property
    def inbound_buffered(self) -> int:
        """DATA bytes delivered to the application and not yet ``consumed``, all streams."""
        return self._recv.buffered

    @property
    def connection_send_window(self) -> int:
        """Connection-level credit the peer has granted us and we have not used."""
        return self._sched.connection_window

    @property
    def connection_receive_window(self) -> int:
        """Connection-level credit the peer still has towards us (granted and unused)."""
        return self._recv.available

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return something now."""
        return self._sched.has_pending

    def send_capacity(self, stream_id: int) -> int:
        """Bytes :meth:`send_data` would accept on ``stream_id`` now (0 if it cannot send)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local is not _OPEN:
            return 0
        return max(0, self._sched.capacity(stream_id))

    def stream_send_window(self, stream_id: int) -> int:
        """Stream-level credit left for sending on ``stream_id``."""
        return self._sched.window(stream_id)

    def stream_receive_window(self, stream_id: int) -> int:
        """Stream-level credit the peer still has on ``stream_id`` (0 if unknown)."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.recv.available

    def stream_outbound_buffered(self, stream_id: int) -> int:
        """DATA bytes queued on ``stream_id`` and not yet emitted."""
        return self._sched.queued(stream_id)

    def stream_inbound_buffered(self, stream_id: int) -> int:
        """DATA bytes of ``stream_id`` delivered and not yet ``consumed``."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream.recv.buffered
        return self._reg.lingering.get(stream_id, 0)

    def stream_ids(self) -> list[int]:
        """Ids of the streams not yet forgotten."""
        return list(self._streams)

    # == receiving ====================================================================

    def _receive(self, buf: memoryview) -> None:
        size = len(buf)
        if not size or size > self.local_settings.max_message_size:
            raise ConnectionProtocolError(
                ErrorCode.FRAME_SIZE_ERROR,
                f"message of {size} bytes; allowed 1..{self.local_settings.max_message_size}",
            )
        max_frame = self.local_settings.max_frame_size
        unpack = HEADER.unpack_from
        on_data = self._on_data
        pos = 0
        while pos < size:
            if self._state is ConnectionState.CLOSED:
                return
            if size - pos < FRAME_HEADER_SIZE:
                parse_header(buf, pos, max_frame)  # raises the precise FRAME_SIZE_ERROR
            header = unpack(buf, pos)
            version, ftype, flags, reserved, stream_id, length = header
            start = pos + FRAME_HEADER_SIZE
            pos = end = start + length
            if length > max_frame or end > size:
                parse_header(buf, start - FRAME_HEADER_SIZE, max_frame)
            try:
                if (
                    ftype == _DATA
                    and version == self._version
                    and flags <= 1
                    and not reserved
                    and 0 < stream_id <= MAX_STREAM_ID
                    and self.peer is not None
                ):
                    on_data(flags, stream_id, buf, start, end)
                else:
                    self._dispatch(header, buf, start, end)
            except StreamProtocolError as exc:
                self._stream_error(exc)

    def _dispatch(
        self, header: tuple[int, int, int, int, int, int], buf: memoryview, start: int, end: int
    ) -> None:
        version, ftype, flags, reserved, stream_id, _ = header
        expected = HELLO_VERSION if ftype == FrameType.HELLO else self._version
        if version != expected:
            raise ConnectionProtocolError(
                ErrorCode.VERSION_MISMATCH,
                f"frame of type {ftype:#04x} carries version {version}, expected {expected}",
            )
        check_frame_header(ftype, flags, reserved, stream_id)
        if self.peer is None and ftype != FrameType.HELLO:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"{FrameType(ftype).name} frame before the peer's HELLO",
            )
        self._handlers[ftype](flags, stream_id, buf, start, end)

    def _on_hello(self, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> None:
        if self.peer is not None:
            raise ConnectionProtocolError(ErrorCode.PROTOCOL_ERROR, "second HELLO")
        frame = Hello.decode(flags, stream_id, buf, start, end)
        peer = accept_hello(local_role=self.role, local_versions=self._versions, frame=frame)
        self.peer = peer
        self._version = peer.version
        self._sched.configure(
            max_frame_size=peer.settings.max_frame_size,
            max_message_size=peer.settings.max_message_size,
            connection_window=peer.settings.connection_window,
            initial_stream_window=peer.settings.initial_stream_window,
            version=peer.version,
        )
        self._move(ConnectionInput.HELLO_RECEIVED)
        self._events.append(HelloReceived(peer))

    def _on_request(
        self, flags: int, stream_id: int, buf: memoryview, start: int, end: int
    ) -> None:
        self._reg.claim_peer_id(stream_id, self.role)
        if self._peer_goaway_last is not None:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"REQUEST on stream {stream_id} after the peer's GOAWAY"
            )
        limit = self.local_settings.max_concurrent_streams
        if self._goaway_sent:
            self._refuse(stream_id, ErrorCode.REFUSED_STREAM, "connection is draining")
        elif self._reg.peer_open >= limit:
            self._refuse(stream_id, ErrorCode.REFUSED_STREAM, f"{limit} concurrent streams open")
        elif end - start > self.local_settings.max_header_block_size:
            self._refuse(
                stream_id,
                ErrorCode.HEADER_ERROR,
                f"request head of {end - start} bytes exceeds MAX_HEADER_BLOCK_SIZE "
                f"{self.local_settings.max_header_block_size}",
            )
        else:
            try:
                head = Request.decode(flags, stream_id, buf, start, end)
            except StreamProtocolError as exc:
                self._refuse(stream_id, exc.code, exc.message)
                return
            self._open_remote_stream(head)

    def _open_remote_stream(self, head: Request) -> None:
        stream = Stream(
            head.stream_id,
            opened_locally=False,
            recv=ReceiveWindow(self.local_settings.initial_stream_window),
        )
        stream.apply(_PEER, Action.REQUEST_UPGRADE if head.upgrade else Action.REQUEST)
        self._reg.add(stream)
        self._sched.add_stream(head.stream_id)
        self._events.append(
            RequestReceived(
                head.stream_id,
                head.method,
                head.path,
                head.headers,
                head.target,
                head.upgrade,
                head.end_stream,
            )
        )
        if head.end_stream:
            self._remote_end(stream)

    def _on_response(
        self, flags: int, stream_id: int, buf: memoryview, start: int, end: int
    ) -> None:
        stream = self._known_stream(stream_id, "RESPONSE")
        if stream is None:
            return
        stream.check(_PEER, Action.RESPONSE)  # the state's verdict before the head's
        limit = self.local_settings.max_header_block_size
        if end - start > limit:
            raise StreamProtocolError(
                stream_id,
                ErrorCode.HEADER_ERROR,
                f"response head of {end - start} bytes exceeds MAX_HEADER_BLOCK_SIZE {limit}",
            )
        head = Response.decode(flags, stream_id, buf, start, end)
        stream.apply(_PEER, Action.RESPONSE, status=head.status)
        self._events.append(ResponseReceived(stream_id, head.status, head.headers))
        if head.end_stream:
            self._remote_end(stream)

    def _on_data(self, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> None:
        n = end - start
        if not n and not flags:
            self._charge_idle("empty DATA without END_STREAM")
        if not self._recv.receive(n):
            raise ConnectionProtocolError(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"DATA of {n} bytes exceeds the connection window {self._recv.available}",
            )
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote is not _OPEN:
            # Nothing deliverable: give the connection credit back, then judge the frame.
            self._credit_connection(n)
            if stream is None:
                self._known_stream(stream_id, "DATA")
                return
            if flags and not n:
                self._remote_end(stream)  # legal only after a non-101 answer to an upgrade
            else:
                stream.apply(_PEER, Action.DATA)  # DATA needs an OPEN half: this raises
            return
        if not stream.recv.receive(n):
            self._credit_connection(n)
            raise StreamProtocolError(
                stream_id,
                ErrorCode.FLOW_CONTROL_ERROR,
                f"DATA of {n} bytes exceeds the stream window {stream.recv.available}",
            )
        if n:
            self._events.append(DataReceived(stream_id, buf[start:end]))
        if flags:
            self._remote_end(stream)

    def _on_reset(self, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> None:
        frame = Reset.decode(flags, stream_id, buf, start, end)
        stream = self._known_stream(stream_id, "RESET", quiet=True)
        if stream is None:
            self._charge_idle("RESET of a closed stream")
        else:
            if stream.local_side is Side.RESPONDER:
                self._charge_churn("streams opened and reset by the peer")
            self._remove(stream, reset=True)
            self._events.append(StreamReset(stream_id, frame.error_code, frame.message, True))
            self._check_drained()

    def _on_window_update(
        self, flags: int, stream_id: int, buf: memoryview, start: int, end: int
    ) -> None:
        increment = WindowUpdate.decode(flags, stream_id, buf, start, end).increment
        if stream_id == 0:
            if not 0 < increment <= MAX_WINDOW:
                raise ConnectionProtocolError(
                    ErrorCode.PROTOCOL_ERROR, f"connection WINDOW_UPDATE of {increment}"
                )
            window = grow(self._sched.connection_window, increment)
            if window is None:
                raise ConnectionProtocolError(
                    ErrorCode.FLOW_CONTROL_ERROR, "connection send window would exceed 2**31-1"
                )
            self._sched.grow_connection_window(window)
            return
        if self._known_stream(stream_id, "WINDOW_UPDATE", quiet=True) is None:
            self._charge_idle("WINDOW_UPDATE of a closed stream")
            return
        if not 0 < increment <= MAX_WINDOW:
            raise StreamProtocolError(
                stream_id, ErrorCode.PROTOCOL_ERROR, f"stream WINDOW_UPDATE of {increment}"
            )
        window = grow(self._sched.window(stream_id), increment)
        if window is None:
            raise StreamProtocolError(
                stream_id, ErrorCode.FLOW_CONTROL_ERROR, "stream send window would exceed 2**31-1"
            )
        self._sched.grow_window(stream_id, window)

    def _on_ping(self, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> None:
        payload = Ping.decode(flags, stream_id, buf, start, end).payload
        self._charge_idle("PING")
        self._sched.pong(Pong(payload).encode(self._version))

    def _on_pong(self, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> None:
        payload = Pong.decode(flags, stream_id, buf, start, end).payload
        self._charge_idle("PONG")
        self._events.append(PingAcknowledged(payload))

    def _on_goaway(self, flags: int, stream_id: int, buf: memoryview, start: int, end: int) -> None:
        frame = GoAway.decode(flags, stream_id, buf, start, end)
        previous = self._peer_goaway_last
        if previous is not None:
            self._charge_idle("repeated GOAWAY")
        if previous is not None and frame.last_stream_id > previous:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"GOAWAY raised last_stream_id from {previous} to {frame.last_stream_id}",
            )
        self._peer_goaway_last = frame.last_stream_id
        self._events.append(GoAwayReceived(frame.last_stream_id, frame.error_code, frame.debug))
        self._move(ConnectionInput.GOAWAY)
        for stream in list(self._streams.values()):
            if stream.local_side is Side.REQUESTER and stream.stream_id > frame.last_stream_id:
                self._reg.remember_reset(stream.stream_id)
                self._remove(stream, reset=True)
                self._events.append(
                    StreamReset(
                        stream.stream_id,
                        ErrorCode.REFUSED_STREAM,
                        "not processed by the peer before its GOAWAY",
                        True,
                    )
                )
        if frame.error_code is not ErrorCode.NO_ERROR:
            self._terminate(frame.error_code, frame.debug or "peer sent GOAWAY", remote=True)
        else:
            self._check_drained()

    def _on_replicas(
        self, flags: int, stream_id: int, buf: memoryview, start: int, end: int
    ) -> None:
        if self.role is not Role.AGENT:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR, "REPLICAS sent by an agent (only a gateway sends it)"
            )
        if CAPABILITY_REPLICAS not in self._capabilities:
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"REPLICAS although {CAPABILITY_REPLICAS!r} was not offered",
            )
        self._charge_idle("REPLICAS")
        frame = Replicas.decode(flags, stream_id, buf, start, end)
        self._events.append(ReplicasReceived(tuple(rid.decode("ascii") for rid in frame.ids)))

    # == receive helpers ==============================================================

    def _known_stream(self, stream_id: int, what: str, *, quiet: bool = False) -> Stream | None:
        """The stream, or ``None`` for a closed one whose frame is to be dropped.

        Raises a connection error for a stream that was never opened, and (unless
        ``quiet``) a ``STREAM_CLOSED`` stream error for a closed stream we did not reset.
        """
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if self._reg.is_idle(stream_id):
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR, f"{what} on stream {stream_id}, which was never opened"
            )
        if quiet or self._reg.was_reset(stream_id):
            return None
        raise StreamProtocolError(stream_id, ErrorCode.STREAM_CLOSED, f"{what} on a closed stream")

    def _remote_end(self, stream: Stream) -> None:
        stream.apply(_PEER, Action.END)
        self._events.append(StreamEnded(stream.stream_id))
        self._finish_if_done(stream)

    def _credit_connection(self, n: int) -> None:
        """Return ``n`` received-but-undeliverable bytes to the connection window."""
        increment = self._recv.consume(n) if n else 0
        if increment:
            self._control(WindowUpdate(0, increment).encode(self._version))

    def _refuse(self, stream_id: int, code: ErrorCode, message: str) -> None:
        self._charge_churn("streams opened by the peer and refused")
        self._answer(Reset(stream_id, code, message).encode(self._version))
        self._reg.remember_reset(stream_id)

    # == flood limits =================================================================

    def _charge_idle(self, what: str) -> None:
        """One frame that cost work but carried no data."""
        if not self._idle_frames.take():
            self._calm(self._idle_frames.name, f"{what}: {self._idle_frames.describe()}")

    def _charge_churn(self, what: str) -> None:
        """One stream the peer opened that ended without an exchange."""
        if not self._churn.take():
            self._calm(self._churn.name, f"{what}: {self._churn.describe()}")

    def _answer(self, frame: bytes) -> None:
        """Queue a RESET the peer provoked; a peer that provokes more than it reads is cut off."""
        self._sched.answer(frame)
        if self._sched.answers_queued > self.flood_limits.max_queued_answers:
            self._calm(
                "max_queued_answers",
                f"the peer does not read its answers: more than "
                f"{self.flood_limits.max_queued_answers} RESET frames queued for it "
                "(max_queued_answers)",
            )

    def _calm(self, limit: str, message: str) -> None:
        self.flood_limit = limit
        raise ConnectionProtocolError(ErrorCode.ENHANCE_YOUR_CALM, message)

    # == errors and teardown ==========================================================

    def _stream_error(self, exc: StreamProtocolError) -> None:
        stream_id = exc.stream_id
        self._charge_idle("frames answered with a stream error")
        self._answer(Reset(stream_id, exc.code, exc.message).encode(self._version))
        self._reg.remember_reset(stream_id)
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._remove(stream, reset=True)
            self._events.append(StreamReset(stream_id, exc.code, exc.message, False))
            self._check_drained()

    def _fail(self, exc: ConnectionProtocolError) -> None:
        if self._state is ConnectionState.CLOSED:  # already ended while handling this input
            return
        self._send_goaway(exc.code, exc.message)
        self._terminate(exc.code, exc.message, remote=False)

    def _send_goaway(self, code: ErrorCode, debug: str) -> None:
        self._goaway_sent = True
        self._sched.control(GoAway(self._reg.last_peer_id, code, debug).encode(self._version))

    def _terminate(self, code: ErrorCode, reason: str, *, remote: bool) -> None:
        for stream in list(self._streams.values()):
            self._remove(stream, reset=True)
            self._events.append(StreamReset(stream.stream_id, code, reason, remote))
        self._sched.discard_all_data()
        self._move(ConnectionInput.TERMINATED)
        self._events.append(ConnectionTerminated(code, reason, remote))

    def _move(self, change: ConnectionInput) -> None:
        """Take the edge of ``CONNECTION_TRANSITIONS`` for ``change``: the one state setter."""
        target = CONNECTION_TRANSITIONS.get((self._state, change))
        if target is None:
            raise RuntimeError(
                f"bug: a connection in state {self._state.value} cannot take {change.value}"
            )
        self._state = target

    def _check_drained(self) -> None:
        if self._state is ConnectionState.DRAINING and not self._streams:
            self._move(ConnectionInput.DRAINED)
            self._events.append(
                ConnectionTerminated(ErrorCode.NO_ERROR, "drained", not self._goaway_sent)
            )

    def _finish_if_done(self, stream: Stream) -> None:
        if stream.finished:
            self._remove(stream, reset=False)
            self._check_drained()

    def _remove(self, stream: Stream, *, reset: bool) -> None:
        self._sched.discard(stream.stream_id)
        self._credit_connection(self._reg.remove(stream, reset=reset))

    # == send helpers =================================================================

    def _control(self, frame: bytes) -> None:
        if self._state is not ConnectionState.CLOSED:
            self._sched.control(frame)

    def _require_peer(self) -> PeerInfo:
        if self._state is ConnectionState.CLOSED:
            raise LocalProtocolError(ErrorCode.PROTOCOL_ERROR, "connection is closed")
        if self.peer is None:
            raise LocalProtocolError(ErrorCode.PROTOCOL_ERROR, "peer HELLO not received yet")
        return self.peer

    def _local_stream(self, stream_id: int) -> Stream:
        """The stream the application names, which must still be in the table."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamClosedError(stream_id, f"stream {stream_id} is not open")
        return stream

    def _encode_head(self, head: Request | Response, peer: PeerInfo) -> bytes:
        try:
            frame = head.encode(self._version)
        except HeaderBlockError as exc:
            raise LocalProtocolError(ErrorCode.HEADER_ERROR, str(exc)) from None
        size = len(frame) - FRAME_HEADER_SIZE
        if size > peer.settings.max_header_block_size:
            raise HeadTooLarge(size, peer.settings.max_header_block_size)
        return frame
