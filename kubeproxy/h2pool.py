"""HTTP/2 connections to the API server: many exchanges on a few connections.

`H2Pool` opens TLS connections offering ALPN `h2`, `http/1.1`. When the server picks h2, each
exchange is one stream; a connection carries up to the server's SETTINGS_MAX_CONCURRENT_STREAMS
(kube-apiserver: `--http2-max-streams-per-connection`; v1.32 advertises 100 when it is unset,
the test kit's servers 250), and a new connection opens only when every open one is full, up to
`max_connections`; beyond that a request waits for a stream to end. A connection without
streams is closed after `idle_timeout`. When the server picks http/1.1 (or offers no ALPN),
the pool remembers it and raises `Http2NotOffered`: the caller uses the HTTP/1.1
`ConnectionPool`. Upgrades (exec, attach, port-forward) never come here.

Flow control is driven by the consumer. The per-stream receive window (`stream_window`, 64 KiB
by default) is reopened only as `H2Exchange.body_piece()` hands data to its consumer (once half
of it was taken), so a watch nobody reads stops after one window, at the API server, and holds
at most `stream_window` bytes here. The connection window is reopened as data arrives (every
MiB at most): it must never be what an unread stream exhausts, or that stream would stall every
other one on the connection. Frames go out once per event-loop turn, those of every stream in
one write. So the
bytes a connection buffers are at most `stream_window` times its open streams, and the large
connection window (`connection_window`) only lets many streams flow at once.

Things that never happen: a stream is opened on a connection that received GOAWAY or is
closed; a stream's window is reopened for bytes its consumer has not taken; an h2, ssl or OS
error reaches a caller (they become `UpstreamError` here, as in `kubeproxy.pool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import structlog

import http1
from kubeproxy.metrics import ConnectionShare, ProxyMetrics
from kubeproxy.pool import UpstreamError, translate_error
from kubeproxy.upstream import Upstream, UpstreamCredentialsError

ALPN = ("h2", "http/1.1")
DEFAULT_STREAM_WINDOW = 65_535
DEFAULT_CONNECTION_WINDOW = 16 * 1024 * 1024
_CONNECTION_STEP = 1024 * 1024
"""Bytes after which the connection's window is reopened (at most half of it)."""

# Connection-specific fields have no place in HTTP/2 (RFC 9113 section 8.2.2); Host becomes
# :authority.
_NOT_IN_HTTP2 = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"host"}
)
_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, UpstreamCredentialsError)

Header = tuple[bytes, bytes]
_FULL_WARNING_INTERVAL = 60.0
"""Seconds between two warnings that requests wait for a stream (the pool is at its limit)."""

log = structlog.get_logger("kubeproxy.h2pool")


class Http2NotOffered(Exception):
    """The API server did not pick h2 in ALPN: use the HTTP/1.1 pool."""


@dataclass(frozen=True, slots=True)
class H2ResponseHead:
    status: int
    headers: list[Header]
    """Lower-case names, no pseudo-headers."""


class H2Exchange:
    """One request and its response on a stream of an `H2UpstreamConnection`."""

    def __init__(self, connection: H2UpstreamConnection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self._head: asyncio.Future[H2ResponseHead] = asyncio.get_running_loop().create_future()
        # Made when first needed: ten thousand idle watches hold none of them.
        self._body: deque[bytes] | None = None
        self.buffered = 0
        """Body bytes received and not yet taken by the consumer (at most the stream window)."""
        self._arrived = asyncio.Event()
        self._ended = False
        self._error: UpstreamError | None = None
        self._window_opened: asyncio.Event | None = None
        self.closed = False
        """The stream is over for this side (ended, reset or cancelled)."""

    async def response_head(self) -> H2ResponseHead:
        """The final response head. Raises UpstreamError."""
        return await asyncio.shield(self._head)

    async def body_piece(self) -> bytes:
        """The next piece of the response body; b"" at its end. Reopens the stream's window
        by the bytes taken. Raises UpstreamError."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            self._arrived.clear()
            await self._arrived.wait()
        piece = self._body.popleft()
        if not self._body:
            self._body = None  # a watch between its events holds no queue
        self.buffered -= len(piece)
        self.connection.consumed(self.stream_id, len(piece))
        return piece

    async def send(self, data: bytes, *, end: bool = False) -> None:
        """Send body bytes as the stream's and the connection's send windows allow."""
        view = memoryview(data)
        while view:
            if self._error is not None:
                raise self._error
            size = self.connection.sendable(self.stream_id, len(view))
            if size == 0:
                if self._window_opened is None:
                    self._window_opened = asyncio.Event()
                self._window_opened.clear()
                await self._window_opened.wait()
                continue
            await self.connection.send_data(self.stream_id, bytes(view[:size]))
            view = view[size:]
        if end:
            await self.connection.end_stream(self.stream_id)

    def cancel(self, reason: str = "the exchange was cancelled") -> None:
        """Abandon the exchange: RST_STREAM(CANCEL); the API server ends that request only.
        Whoever still waits on this side (a body piece, the head) gets UpstreamError(`reason`)."""
        if not self.closed:
            self.connection.reset(self.stream_id, reason)

    # -- called by the connection ----------------------------------------------------------

    def _on_head(self, head: H2ResponseHead) -> None:
        if not self._head.done():
            self._head.set_result(head)

    def _on_data(self, data: bytes) -> None:
        if self._body is None:
            self._body = deque()
        self._body.append(data)
        self.buffered += len(data)
        self._arrived.set()

    def _on_end(self) -> None:
        self._ended = True
        self.closed = True
        self._arrived.set()
        if not self._head.done():
            self._head.set_exception(UpstreamError("protocol", "the stream ended before a head"))

    def _on_error(self, error: UpstreamError) -> None:
        self.closed = True
        if self._error is None and not self._ended:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting for it
        self._arrived.set()
        self._opened()

    def _opened(self) -> None:
        """The stream's send window may have grown (or the stream is over): wake a sender."""
        if self._window_opened is not None:
            self._window_opened.set()


class _ServedAfterGoaway(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a client connection stays open when GOAWAY
    arrives. h2 closes it at once and then refuses every frame that follows, but the streams
    up to GOAWAY's last stream id may still complete (RFC 9113 section 6.8): kube-apiserver
    sends GOAWAY before the response to an unauthenticated request (a 401), for one. The pool
    never opens a stream on such a connection again."""

    def __init__(self) -> None:
        super().__init__()
        self._transitions = _SERVED_AFTER_GOAWAY


_OPEN = h2.connection.ConnectionState.CLIENT_OPEN
_SERVED_AFTER_GOAWAY = {
    **h2.connection.H2ConnectionStateMachine._transitions,
    (_OPEN, h2.connection.ConnectionInputs.RECV_GOAWAY): (None, _OPEN),
}


class H2UpstreamConnection:
    """One HTTP/2 connection to the API server and the task that reads it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        stream_window: int,
        connection_window: int,
        on_stream_closed: Callable[[H2UpstreamConnection], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                # `H2Pool._fields` builds every head from fields the tunnel checked (tokens,
                # values without CR, LF or NUL), lowered and trimmed: h2's second pass over each
                # field was an eighth of the agent's time per request.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.h2.state_machine = _ServedAfterGoaway()
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0,  # no pushed streams
            },
        )
        self.h2.initiate_connection()
        if connection_window > DEFAULT_STREAM_WINDOW:
            self.h2.increment_flow_control_window(connection_window - DEFAULT_STREAM_WINDOW)
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        # Windows reopen in steps, not by every piece: a WINDOW_UPDATE per watch event was a
        # frame, a TLS record and a syscall each.
        self._stream_step = max(1, stream_window // 2)
        self._connection_step = max(1, min(connection_window // 2, _CONNECTION_STEP))
        self._unacknowledged = 0
        """Bytes that arrived since the connection's window was last reopened."""
        self._consumed: dict[int, int] = {}
        """Per stream, bytes the consumer took since its window was last reopened."""
        self._flush_now()
        self.exchanges: dict[int, H2Exchange] = {}
        self._on_stream_closed = on_stream_closed
        self.settled = asyncio.Event()
        """The server's first SETTINGS arrived: its stream limit is known."""
        self.goaway = False
        self.closed = False
        self.opened_streams = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        """Set while the connection carries no stream (see `H2Pool`'s idle timeout)."""
        self._reading = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def max_streams(self) -> int:
        return int(self.h2.remote_settings.max_concurrent_streams)

    @property
    def has_room(self) -> bool:
        return (
            not (self.closed or self.goaway)
            and self.settled.is_set()
            and len(self.exchanges) < self.max_streams
        )

    def start(
        self, method: str, target: str, headers: Sequence[Header], *, end: bool
    ) -> H2Exchange:
        """A new stream carrying this request head (has_room must be true)."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        stream_id = self.h2.get_next_available_stream_id()
        exchange = H2Exchange(self, stream_id)
        self.exchanges[stream_id] = exchange
        self.opened_streams += 1
        try:
            self.h2.send_headers(stream_id, list(headers), end_stream=end)
        except h2.exceptions.H2Error as error:
            del self.exchanges[stream_id]
            raise UpstreamError("protocol", f"sending the request head: {error}") from error
        self._flush()
        return exchange

    def sendable(self, stream_id: int, wanted: int) -> int:
        try:
            window = self.h2.local_flow_control_window(stream_id)
        except h2.exceptions.H2Error:
            return 0
        return min(wanted, window, self.h2.max_outbound_frame_size)

    async def send_data(self, stream_id: int, data: bytes) -> None:
        try:
            self.h2.send_data(stream_id, data)
            self._flush_now()
            await self._writer.drain()
        except h2.exceptions.H2Error as error:
            raise UpstreamError("closed", f"sending the request body: {error}") from error
        except _ERRORS as error:
            raise translate_error(error, "sending the request body") from error

    async def end_stream(self, stream_id: int) -> None:
        try:
            self.h2.end_stream(stream_id)
            self._flush()
        except h2.exceptions.H2Error as error:
            raise UpstreamError("closed", f"ending the request body: {error}") from error

    def consumed(self, stream_id: int, size: int) -> None:
        """The consumer took `size` bytes of a stream: reopen that stream's window once half
        of it was taken (the server still has the other half to send meanwhile)."""
        if size == 0 or self.closed or stream_id not in self.exchanges:
            return  # a stream that is over needs no window (h2 may have forgotten it)
        taken = self._consumed.get(stream_id, 0) + size
        if taken < self._stream_step:
            self._consumed[stream_id] = taken
            return
        self._consumed.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.H2Error, KeyError):
            self.h2.increment_flow_control_window(taken, stream_id=stream_id)
            self._flush()

    def reset(self, stream_id: int, reason: str) -> None:
        self._consumed.pop(stream_id, None)
        exchange = self.exchanges.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.H2Error, KeyError):
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()
        if exchange is not None:
            exchange._on_error(UpstreamError("closed", reason))
            self._on_stream_closed(self)

    def close(self) -> None:
        """Close an idle connection gracefully: GOAWAY, then the TLS goodbye."""
        self.closed = True
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.close_connection()
        self._flush_now()
        self._writer.close()

    def abort(self) -> None:
        """Close now: every open exchange fails."""
        self._fail_all(UpstreamError("closed", "the connection to the API server was closed"))
        self._writer.transport.abort()
        self._reading.cancel()

    def _flush(self) -> None:
        """Write what h2 queued at the end of this loop turn: the frames of every stream that
        sent meanwhile go in one TLS record and one syscall."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def _read_loop(self) -> None:
        error: UpstreamError
        try:
            while data := await self._reader.read(http1.READ_SIZE):
                self._handle(self.h2.receive_data(data))
                self._flush()
            error = UpstreamError("closed", "the API server closed the connection")
        except h2.exceptions.H2Error as h2_error:
            error = UpstreamError("protocol", f"HTTP/2 from the API server: {h2_error}")
        except _ERRORS as os_error:
            error = translate_error(os_error, "reading from the API server")
        self._fail_all(error)
        self._writer.transport.abort()

    def _handle(self, events: list[h2.events.Event]) -> None:  # noqa: PLR0912 - a case each
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settled.set()
                self._on_stream_closed(self)  # the limit may have grown: wake waiters
            elif isinstance(event, h2.events.ResponseReceived):
                exchange = self.exchanges.get(event.stream_id or 0)
                if exchange is not None:
                    exchange._on_head(_head(event.headers or []))
            elif isinstance(event, h2.events.DataReceived):
                stream_id = event.stream_id or 0
                data = event.data or b""
                flow = event.flow_controlled_length or 0
                # The connection's window reopens at once (see the module's header); padding
                # is never the consumer's, so the stream's window reopens for it now too.
                if flow:
                    self._unacknowledged += flow
                    if self._unacknowledged >= self._connection_step:
                        self.h2.increment_flow_control_window(self._unacknowledged)
                        self._unacknowledged = 0
                if flow > len(data) and stream_id in self.exchanges:
                    with contextlib.suppress(h2.exceptions.H2Error, KeyError):  # ended with it
                        self.h2.increment_flow_control_window(flow - len(data), stream_id=stream_id)
                exchange = self.exchanges.get(stream_id)
                if exchange is not None and data:
                    exchange._on_data(data)
            elif isinstance(event, h2.events.StreamEnded):
                self._consumed.pop(event.stream_id or 0, None)
                exchange = self.exchanges.pop(event.stream_id or 0, None)
                if exchange is not None:
                    exchange._on_end()
                    self._on_stream_closed(self)
            elif isinstance(event, h2.events.StreamReset):
                self._consumed.pop(event.stream_id or 0, None)
                exchange = self.exchanges.pop(event.stream_id or 0, None)
                if exchange is not None:
                    code = event.error_code
                    exchange._on_error(UpstreamError("closed", f"the API server reset it ({code})"))
                    self._on_stream_closed(self)
            elif isinstance(event, h2.events.WindowUpdated):
                targets = (
                    self.exchanges.values()
                    if not event.stream_id
                    else filter(None, [self.exchanges.get(event.stream_id)])
                )
                for exchange in targets:
                    exchange._opened()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
                last = event.last_stream_id or 0
                for stream_id in [s for s in self.exchanges if s > last]:
                    self.exchanges.pop(stream_id)._on_error(
                        UpstreamError("closed", "the API server refused the stream (GOAWAY)")
                    )
                self._on_stream_closed(self)

    def _fail_all(self, error: UpstreamError) -> None:
        self.closed = True
        self.settled.set()
        exchanges, self.exchanges = self.exchanges, {}
        for exchange in exchanges.values():
            exchange._on_error(error)
        self._on_stream_closed(self)


def _head(headers: Sequence[tuple[bytes | str, bytes | str]]) -> H2ResponseHead:
    status = 0
    fields: list[Header] = []
    for name, value in headers:
        name_bytes = name.encode() if isinstance(name, str) else name
        value_bytes = value.encode() if isinstance(value, str) else value
        if name_bytes == b":status":
            status = int(value_bytes)
        elif not name_bytes.startswith(b":"):
            fields.append((name_bytes, value_bytes))
    return H2ResponseHead(status, fields)


class H2Pool:
    """HTTP/2 connections to `upstream`, shared by every exchange; see the module's header."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        max_connections: int = 8,
        idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        """`metrics`: where its connections are counted (`upstream_connections`, beside the
        HTTP/1.1 pool's: a connection with streams is active, one without is idle)."""
        self.upstream = upstream
        self._max_connections = max_connections
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._gauges = ConnectionShare(metrics or ProxyMetrics())
        self.connections: list[H2UpstreamConnection] = []
        self.opened = 0
        """Connections opened in this pool's life."""
        # Prior knowledge over plain http is never attempted (kube-apiserver serves TLS): such
        # a server is known to be HTTP/1.1 without a connection to ask it.
        self.protocol: str | None = "http/1.1" if upstream.scheme != "https" else None
        """What the server picked in ALPN ("h2", "http/1.1"); None until the first connect."""
        self._opening: asyncio.Lock | None = None
        self._room = asyncio.Event()
        self._retired: set[H2UpstreamConnection] = set()
        self.waiting = 0
        """Requests waiting for a stream: every connection full and `max_connections` open."""
        self._warned_full_at: float | None = None

    async def request(
        self, method: str, target: str, headers: Sequence[Header] = (), *, end: bool = True
    ) -> H2Exchange:
        """Start an exchange: the head is sent, the body (if not `end`) goes by `send`.

        Raises Http2NotOffered (use HTTP/1.1) or UpstreamError."""
        if self.protocol == "http/1.1":
            raise Http2NotOffered(self.upstream.authority)
        try:
            authorization = self.upstream.authorization()
        except UpstreamCredentialsError as error:
            raise translate_error(error, "preparing the request") from error
        fields = self._fields(method, target, headers, authorization)
        while True:
            connection = await self._connection_with_room()
            if connection.has_room:
                exchange = connection.start(method, target, fields, end=end)
                if len(connection.exchanges) == 1:
                    self._update_gauges()  # it was idle: now active
                return exchange

    @property
    def open_connections(self) -> int:
        """Connections open now, those draining after a GOAWAY included."""
        return sum(1 for c in {*self.connections, *self._retired} if not c.closed)

    def close(self) -> None:
        """Abort every connection now: their exchanges fail."""
        for connection in [*self.connections, *self._retired]:
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
            connection.abort()
        self.connections.clear()
        self._retired.clear()
        self._update_gauges()

    def _fields(
        self, method: str, target: str, headers: Sequence[Header], authorization: bytes | None
    ) -> list[Header]:
        fields: list[Header] = [
            (b":method", method.encode("ascii")),
            (b":scheme", self.upstream.scheme.encode("ascii")),
            (b":authority", self.upstream.authority.encode("ascii")),
            (b":path", (self.upstream.base_path + target).encode("latin-1")),
        ]
        for name, value in headers:
            lower = name.lower()
            if lower in _NOT_IN_HTTP2 or (lower == b"te" and value.lower() != b"trailers"):
                continue
            if lower == b"authorization" and authorization is not None:
                continue
            fields.append((lower, value.strip(b" \t")))
        if authorization is not None:
            fields.append((b"authorization", authorization))
        return fields

    async def _connection_with_room(self) -> H2UpstreamConnection:
        if self._opening is None:
            self._opening = asyncio.Lock()
        while True:
            # In place: a request opening a connection appends to this very list. A connection
            # after GOAWAY still serves its streams; it is retired, to be closed with the pool.
            for connection in self.connections:
                if connection.goaway and not connection.closed:
                    self._retired.add(connection)
            self.connections[:] = [c for c in self.connections if not (c.closed or c.goaway)]
            for connection in self.connections:
                if connection.has_room:
                    return connection
            if len(self.connections) < self._max_connections:
                async with self._opening:  # one connect at a time: the others may fit on it
                    if not any(c.has_room for c in self.connections) and (
                        len(self.connections) < self._max_connections
                    ):
                        connection = await self._open()
                        self.connections.append(connection)
                continue
            self._room.clear()
            self._warn_full()
            self.waiting += 1
            try:
                await self._room.wait()
            finally:
                self.waiting -= 1

    def _warn_full(self) -> None:
        """Say, now and then, that requests wait: the limits are too low for this load."""
        now = asyncio.get_running_loop().time()
        if self._warned_full_at is not None and now - self._warned_full_at < (
            _FULL_WARNING_INTERVAL
        ):
            return
        self._warned_full_at = now
        log.warning(
            "every HTTP/2 connection to the API server is full: requests wait for a stream",
            server=self.upstream.authority,
            connections=len(self.connections),
            streams_per_connection=max((c.max_streams for c in self.connections), default=0),
            advice="raise the connection limit (the agent's --upstream-http2-max-connections) "
            "or the API server's --http2-max-streams-per-connection",
        )

    def _stream_closed(self, connection: H2UpstreamConnection) -> None:
        self._room.set()
        if connection.goaway and not connection.exchanges and not connection.closed:
            connection.close()  # the server wants it gone, and it serves nothing any more
        if connection.closed:
            self._retired.discard(connection)
        if connection.exchanges and not connection.closed:
            return  # still active: the gauges do not change
        self._update_gauges()
        if connection.closed or connection.idle_timer is not None:
            return
        # A connection without streams costs the API server and us a TLS session: it goes
        # after `idle_timeout` unless a stream starts on it meanwhile.
        loop = asyncio.get_running_loop()
        connection.idle_timer = loop.call_later(self._idle_timeout, self._close_idle, connection)

    def _close_idle(self, connection: H2UpstreamConnection) -> None:
        connection.idle_timer = None
        if connection.exchanges or connection.closed:
            return
        connection.close()
        if connection in self.connections:
            self.connections.remove(connection)
        self._retired.discard(connection)
        self._update_gauges()

    def _update_gauges(self) -> None:
        active = idle = 0
        for connection in {*self.connections, *self._retired}:
            if connection.closed:
                continue
            if connection.exchanges:
                active += 1
            else:
                idle += 1
        self._gauges.show(active=active, idle=idle)

    async def _open(self) -> H2UpstreamConnection:
        upstream = self.upstream
        doing = f"connecting to the API server at {upstream.authority} (HTTP/2)"
        try:
            context = upstream.ssl_context(ALPN)
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    upstream.host,
                    upstream.port,
                    ssl=context,
                    server_hostname=upstream.server_hostname if context is not None else None,
                    limit=http1.READ_SIZE,
                    ssl_handshake_timeout=self._connect_timeout if context is not None else None,
                )
        except _ERRORS as error:
            raise translate_error(error, doing) from error
        ssl_object = writer.get_extra_info("ssl_object")
        picked = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if picked != "h2":
            # Prior knowledge over plain http is not attempted: kube-apiserver serves TLS.
            self.protocol = "http/1.1"
            writer.transport.abort()
            raise Http2NotOffered(upstream.authority)
        self.protocol = "h2"
        self.opened += 1
        connection = H2UpstreamConnection(
            reader,
            writer,
            stream_window=self._stream_window,
            connection_window=self._connection_window,
            on_stream_closed=self._stream_closed,
        )
        try:
            async with asyncio.timeout(self._connect_timeout):
                await connection.settled.wait()
        except TimeoutError as error:
            connection.abort()
            raise translate_error(error, f"{doing}: waiting for the server's SETTINGS") from error
        if connection.closed:
            raise UpstreamError("closed", f"{doing}: the API server closed the connection")
        return connection


def connections_needed(streams: int, max_streams: int) -> int:
    """The fewest connections that carry `streams` at `max_streams` each."""
    return math.ceil(streams / max_streams)
