"""A caller's HTTP/2 connection: the asyncio side of `http2.server.ServerConnection`.

One task (`H2CallerConnection.serve`) reads the connection and feeds the protocol; each request
becomes an `H2CallerStream`, handed to `on_request`, whose task (the caller endpoint's exchange)
reads the request body and sends the response through it. The connection's task owns those
tasks: when the connection ends, every stream is gone and every task is awaited.

Bounds, each set by `ServerLimits` or `H2CallerConnection`'s arguments, never by the traffic:
- request body bytes held: a stream's `Body` pieces wait in its queue until the exchange took
  them and `consumed()` gave them back to the caller's windows; the connection window
  (`ServerLimits.connection_window`) bounds them all together.
- response bytes held: `send` waits for the caller's window with the one piece it was given, so
  an unread stream stops its own source (the tunnel's credit, then the agent) and no other.
- time: a connection without streams for `idle_timeout` gets a GOAWAY and is closed.

A caller's RST_STREAM or a lost connection makes the stream `gone`: its waits raise
ConnectionResetError and its `on_gone` callback runs (the exchange resets its tunnel stream
there, which wakes a relay waiting on the agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from http1 import READ_SIZE
from http2.server import (
    Body,
    BodyEnd,
    ConnectionEnded,
    ConnectionFailed,
    ErrorCode,
    Http2Error,
    RequestHead,
    Reset,
    ServerConnection,
    ServerLimits,
    WindowOpened,
)
from protocol import Headers

__all__ = ["H2CallerConnection", "H2CallerStream"]

log = structlog.get_logger("gateway.callers")

_WRITE_BUFFER_HIGH = 256 * 1024
"""Bytes queued for the socket past which a sending stream waits for it to drain."""


class H2CallerStream:
    """One request of an HTTP/2 caller, as the exchange that answers it sees it."""

    __slots__ = (
        "_arrived",
        "_body",
        "_body_ended",
        "_connection",
        "_window",
        "gone",
        "head",
        "on_gone",
        "stream_id",
    )

    def __init__(self, connection: H2CallerConnection, head: RequestHead) -> None:
        self._connection = connection
        self.stream_id = head.stream_id
        self.head = head
        self._body: deque[bytes] | None = None
        """Made when a body piece arrives: most requests (GETs, watches) have none."""
        self._body_ended = head.end_stream
        self._arrived: asyncio.Event | None = None
        self._window: asyncio.Event | None = None
        self.gone = False
        """The caller reset the stream, or the connection is lost."""
        self.on_gone: Callable[[], None] | None = None

    # -- the request body -------------------------------------------------------------------

    async def read_body(self) -> bytes:
        """The next piece of the request body, b"" at its end; give it back with `consumed`."""
        while not self._body:
            if self._body_ended:
                return b""
            if self.gone:
                raise ConnectionResetError("the caller reset its stream")
            if self._arrived is None:
                self._arrived = asyncio.Event()
            self._arrived.clear()
            await self._arrived.wait()
        assert self._body is not None
        return self._body.popleft()

    def consumed(self, size: int) -> None:
        """`size` bytes of the body were passed on: the caller may send as many more."""
        connection = self._connection
        connection.protocol.consumed(self.stream_id, size)
        connection.flush()

    # -- the response -----------------------------------------------------------------------

    def send_head(self, status: int, headers: Headers, *, end_stream: bool = False) -> None:
        if self.gone:
            raise ConnectionResetError("the caller reset its stream")
        connection = self._connection
        connection.protocol.send_head(self.stream_id, status, headers, end_stream=end_stream)
        connection.flush()

    async def send(self, data: bytes, *, end: bool = False) -> None:
        """Send body bytes as the caller's windows allow. Returns once they are queued for the
        socket, waiting for it only when its buffer is full: the head, body and end of a small
        answer then leave in one write."""
        connection = self._connection
        sent = 0
        while True:
            if self.gone:
                raise ConnectionResetError("the caller reset its stream")
            try:
                sent += connection.protocol.send_data(self.stream_id, data[sent:], end=end)
            except Http2Error as error:
                raise ConnectionResetError(str(error)) from None
            connection.flush()
            if sent == len(data):
                break
            if self._window is None:
                self._window = asyncio.Event()
            self._window.clear()
            connection.waiting_for_window.add(self)
            await self._window.wait()
        await connection.drain()

    def reset(self, code: int = ErrorCode.CANCEL) -> None:
        """Our side gives up on the stream (a cut answer: the caller must not take it whole)."""
        connection = self._connection
        connection.protocol.reset(self.stream_id, code)
        connection.flush()

    # -- driven by the connection -----------------------------------------------------------

    def _received(self, data: bytes) -> None:
        if self._body is None:
            self._body = deque()
        self._body.append(data)
        self._wake()

    def _ended(self) -> None:
        self._body_ended = True
        self._wake()

    def _lose(self) -> None:
        if self.gone:
            return
        self.gone = True
        self._wake()
        self.window_opened()
        if self.on_gone is not None:
            self.on_gone()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    def window_opened(self) -> None:
        if self._window is not None:
            self._window.set()


StreamHandler = Callable[[H2CallerStream], Awaitable[None]]


class H2CallerConnection:
    """One caller's HTTP/2 connection: reads it, hands each request to `on_request`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        limits: ServerLimits,
        on_request: StreamHandler,
        idle_timeout: float,
        on_idle: Callable[[], None],
        on_failure: Callable[[ConnectionFailed], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.protocol = ServerConnection(limits)
        self._on_request = on_request
        self._idle_timeout = idle_timeout
        self._on_idle = on_idle
        self._on_failure = on_failure
        self._streams: dict[int, H2CallerStream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.waiting_for_window: set[H2CallerStream] = set()
        self._idle: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._out = bytearray()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def flush(self) -> None:
        """Take what the protocol queued; it is written at the end of this loop iteration, in
        one write with whatever the connection's streams queue meanwhile."""
        self._out += self.protocol.data_to_send()
        if self._out and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        if self._out:
            if not self._writer.transport.is_closing():  # else nobody is there to read it
                self._writer.write(self._out)
            self._out = bytearray()

    async def drain(self) -> None:
        """Wait for the socket only when what is queued for it is over the high-water mark."""
        queued = len(self._out) + self._writer.transport.get_write_buffer_size()
        if queued <= _WRITE_BUFFER_HIGH:
            return
        self._flush_now()
        try:
            await self._writer.drain()
        except (ConnectionError, ssl.SSLError) as error:
            raise ConnectionResetError(str(error)) from None

    def goaway(self) -> None:
        """No new stream: the ones open finish (the gateway is stopping)."""
        self.protocol.goaway(ErrorCode.NO_ERROR, b"the gateway is stopping")
        self.flush()
        if not self._streams:
            self._close()

    async def serve(self) -> None:
        self.flush()  # our SETTINGS first
        self._idle_from_now()
        try:
            await self._read_loop()
        finally:
            if self._idle is not None:
                self._idle.cancel()
            for stream in list(self._streams.values()):
                stream._lose()
            self._flush_now()
            await self._finish_tasks()

    async def _read_loop(self) -> None:
        reader, protocol, loop = self._reader, self.protocol, self._loop
        while data := await reader.read(READ_SIZE):
            try:
                events = protocol.receive(data, loop.time())
            except ConnectionFailed as failure:
                self.flush()
                self._on_failure(failure)
                return
            for event in events:
                self._dispatch(event)
            self.flush()

    def _dispatch(self, event: object) -> None:
        if isinstance(event, Body):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream._received(event.data)
            return
        if isinstance(event, RequestHead):
            self._start(event)
            return
        if isinstance(event, WindowOpened):
            self._window_opened(event.stream_id)
            return
        if isinstance(event, BodyEnd):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream._ended()
            return
        if isinstance(event, Reset):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream._lose()
            return
        if isinstance(event, ConnectionEnded):
            # The caller opens no more streams; those open go on until they end.
            return

    def _window_opened(self, stream_id: int) -> None:
        waiting = self.waiting_for_window
        if not waiting:
            return
        if stream_id == 0:
            for stream in waiting:
                stream.window_opened()
            waiting.clear()
        elif (one := self._streams.get(stream_id)) is not None and one in waiting:
            waiting.discard(one)
            one.window_opened()

    def _start(self, head: RequestHead) -> None:
        stream = H2CallerStream(self, head)
        self._streams[head.stream_id] = stream
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        task = self._loop.create_task(self._run(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, stream: H2CallerStream) -> None:
        try:
            await self._on_request(stream)
        finally:
            del self._streams[stream.stream_id]
            self.waiting_for_window.discard(stream)
            if stream._body:
                # Body nobody will read: the connection's window must not lose it for good.
                self.protocol.consumed(stream.stream_id, sum(map(len, stream._body)))
                stream._body = None
            if not stream.gone:
                if self.protocol.responding(stream.stream_id):
                    # The exchange ended without ending its answer: it must not look whole.
                    stream.reset(ErrorCode.INTERNAL_ERROR)
                elif not stream._body_ended:
                    # Answered before the whole body came (RFC 9113 §8.1): the caller may stop.
                    stream.reset(ErrorCode.NO_ERROR)
            if not self._streams:
                if self.protocol.draining:
                    self._close()
                else:
                    self._idle_from_now()

    def _idle_from_now(self) -> None:
        self._idle = self._loop.call_later(self._idle_timeout, self._idle_out)

    def _idle_out(self) -> None:
        self._idle = None
        self._on_idle()
        self.protocol.goaway(ErrorCode.NO_ERROR, b"idle")
        self.flush()
        self._close()

    def _close(self) -> None:
        self._flush_now()
        self._writer.close()

    async def _finish_tasks(self) -> None:
        """Every stream is gone: its task ends at its next wait. Cancelled meanwhile (the
        gateway stops), they are cancelled too."""
        if not self._tasks:
            return
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
