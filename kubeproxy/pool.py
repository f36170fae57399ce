"""HTTP/1.1 connections to the API server, and a small pool of idle ones for reuse.

Each `UpstreamConnection` carries one exchange at a time. It goes back to the pool only when
its response was read to the end, its request was sent to the end, and neither side asked to
close; a connection that served an upgrade, failed, or was abandoned (a caller went away in
the middle of a watch) is aborted, so the API server sees its request end at once.

Bounds: at most `max_idle` idle connections are kept, each for at most `idle_timeout` seconds;
busy connections are bounded by the tunnel's concurrent streams (one per stream). A read
takes at most `http1.READ_SIZE` bytes and the socket reader pauses beyond twice that,
so a connection holds a bounded number of bytes whatever the body's size.

This is the boundary for the upstream's errors: OSError, ssl.SSLError, TimeoutError and
`http1.HttpError` become `UpstreamError`, which says what the caller should be told.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque

import http1
from kubeproxy.metrics import ConnectionShare, ProxyMetrics
from kubeproxy.upstream import Upstream, UpstreamCredentialsError
from tunnel.deadline import Deadline


class UpstreamError(Exception):
    """The API server could not be reached or broke an exchange.

    `kind` is a short class for logs and metrics (connect, tls, timeout, closed, protocol,
    credentials); `status` is what a caller gets when no response head was sent yet.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def status(self) -> int:
        return 504 if self.kind == "timeout" else 502


def translate_error(error: BaseException, doing: str) -> UpstreamError:  # noqa: PLR0911 - a case each
    # Order matters: SSL errors and timeouts are OSErrors too.
    if isinstance(error, UpstreamError):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        return UpstreamError("tls", f"{doing}: API server certificate not trusted: {error}")
    if isinstance(error, ssl.SSLError):
        return UpstreamError("tls", f"{doing}: TLS error: {error}")
    if isinstance(error, TimeoutError):
        return UpstreamError("timeout", f"{doing}: timed out")
    if isinstance(error, http1.HttpError):
        kind = "closed" if error.status == 502 else "protocol"  # 502: closed before a head
        return UpstreamError(kind, f"{doing}: {error.message}")
    if isinstance(error, UpstreamCredentialsError):
        return UpstreamError("credentials", f"{doing}: {error}")
    if isinstance(error, ConnectionRefusedError):
        return UpstreamError("connect", f"{doing}: connection refused")
    if isinstance(error, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        return UpstreamError("closed", f"{doing}: the API server closed the connection")
    return UpstreamError("connect", f"{doing}: {error}")


_UPSTREAM_ERRORS = (OSError, TimeoutError, http1.HttpError, asyncio.IncompleteReadError)


class UpstreamConnection:
    """One HTTP/1.1 connection to the API server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.messages = http1.MessageReader(reader, "response")
        self.exchanges = 0
        """Exchanges started on this connection (more than 1: it was reused)."""
        self.closed = False
        self.idle_since = 0.0
        """Loop time of its return to the pool (while idle)."""
        self.deadline = Deadline()
        """For the response head of each exchange in turn (one at a time): one timer kept
        across them, not one scheduled and cancelled per request."""

    @property
    def reused(self) -> bool:
        return self.exchanges > 1

    @property
    def usable(self) -> bool:
        """Still open from both sides, as far as the socket knows."""
        return not (self.closed or self._writer.is_closing() or self._reader.at_eof())

    async def send(self, data: bytes | memoryview) -> None:
        """Write and wait until the socket's buffer is below its high-water mark."""
        try:
            self._writer.write(data)
            await self._writer.drain()
        except _UPSTREAM_ERRORS as error:
            raise translate_error(error, "sending the request") from error

    async def response_head(self, *, head_request: bool) -> http1.ResponseHead:
        """The next final response head; informational (1xx but 101) heads are skipped."""
        try:
            while True:
                head = await self.messages.next_response(head_request=head_request)
                if head.status >= 200 or head.status == 101:
                    return head
        except _UPSTREAM_ERRORS as error:
            raise translate_error(error, "reading the response head") from error

    async def body_piece(self) -> bytes:
        """The next piece of the response body; b"" at its end."""
        try:
            return await self.messages.read_body()
        except _UPSTREAM_ERRORS as error:
            raise translate_error(error, "reading the response body") from error

    async def raw_read(self) -> bytes:
        """After a 101: the next bytes of the upgraded stream; b"" when the server ended it."""
        tail = self.messages.take_upgrade_tail()
        if tail:
            return tail
        try:
            return await self._reader.read(http1.READ_SIZE)
        except _UPSTREAM_ERRORS as error:
            raise translate_error(error, "reading the upgraded stream") from error

    def half_close(self) -> None:
        """After a 101: no more bytes to the server (a no-op over TLS, which cannot half-close:
        the server ends the exchange when its side is done)."""
        with contextlib.suppress(OSError):
            if self._writer.can_write_eof():
                self._writer.write_eof()

    def abort(self) -> None:
        """Close now, discarding buffers: the server sees the request end at once."""
        self.closed = True
        self.deadline.close()
        self._writer.transport.abort()

    def close(self) -> None:
        """Close gracefully (an idle connection)."""
        self.closed = True
        self.deadline.close()
        self._writer.close()


class ConnectionPool:
    """Opens connections to `upstream` and keeps a few idle ones for reuse."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        max_idle: int = 16,
        idle_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.upstream = upstream
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._gauges = ConnectionShare(metrics or ProxyMetrics())
        self._idle: deque[UpstreamConnection] = deque()
        """Least recently used first."""
        self._sweeper: asyncio.TimerHandle | None = None
        self.active = 0
        """Connections handed out and not yet released."""
        self.opened = 0
        """Connections opened in this pool's life (a test sees reuse as no increase)."""

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self, *, fresh: bool = False) -> UpstreamConnection:
        """A connection for one exchange: the most recently used idle one that is still
        open, else a new one (`fresh`: always a new one). Raises UpstreamError."""
        connection = None if fresh else self._take_idle()
        if connection is None:
            connection = await self._open()
        connection.exchanges += 1
        self.active += 1
        self._update_gauges()
        return connection

    def release(self, connection: UpstreamConnection, *, reusable: bool) -> None:
        """Give a connection back; it is kept only if `reusable` and still open."""
        self.active -= 1
        if reusable and connection.usable and self._max_idle > 0:
            while len(self._idle) >= self._max_idle:
                self._idle.popleft().close()  # the least recently used goes
            loop = asyncio.get_running_loop()
            connection.idle_since = loop.time()
            self._idle.append(connection)
            if self._sweeper is None:
                # One timer for the pool, not one per release: idle connections are swept
                # when the oldest of them reaches its timeout.
                self._sweeper = loop.call_later(self._idle_timeout, self._sweep)
        else:
            connection.abort()
        self._update_gauges()

    def close(self) -> None:
        """Close every idle connection now (busy ones close as their exchanges end)."""
        while self._idle:
            # Abort, not a TLS goodbye: the process may be about to end its event loop.
            self._idle.pop().abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._update_gauges()

    def _take_idle(self) -> UpstreamConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.usable:
                return connection
            connection.close()
        return None

    def _sweep(self) -> None:
        """Close the connections idle for `idle_timeout`; come back for the next oldest."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired_before = loop.time() - self._idle_timeout
        swept = False
        while self._idle and self._idle[0].idle_since <= expired_before:
            self._idle.popleft().close()
            swept = True
        if self._idle:
            due = self._idle[0].idle_since + self._idle_timeout
            self._sweeper = loop.call_at(due, self._sweep)
        if swept:
            self._update_gauges()

    async def _open(self) -> UpstreamConnection:
        upstream = self.upstream
        doing = f"connecting to the API server at {upstream.authority}"
        try:
            context = upstream.ssl_context()
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    upstream.host,
                    upstream.port,
                    ssl=context,
                    server_hostname=upstream.server_hostname if context is not None else None,
                    limit=http1.READ_SIZE,
                    ssl_handshake_timeout=self._connect_timeout if context is not None else None,
                )
        except (*_UPSTREAM_ERRORS, UpstreamCredentialsError) as error:
            raise translate_error(error, doing) from error
        self.opened += 1
        return UpstreamConnection(reader, writer)

    def _update_gauges(self) -> None:
        self._gauges.show(active=self.active, idle=len(self._idle))
