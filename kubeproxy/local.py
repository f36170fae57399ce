"""Requests served by `Proxy` in this process: stream pairs with no tunnel in between.

The gateway reaches a direct-mode plane's API server itself, with the proxy and pool an agent
runs in its cluster. `LocalStreams.open_stream` starts one request: its `LocalStream` is what a
tunnel stream is to the side that opened it (response head, body both ways, end, reset), and
a handler (`Proxy.handle`) serves the other end in a task of its own. Nothing is framed or
encoded.

Bounds, as a tunnel gives them: at most `max_streams` requests at once (more are refused with
REFUSED_STREAM, safe to retry elsewhere); a writer waits while `buffer_bytes` of its direction
are unread, or while `budget_bytes` are unread in all the streams together, so however many
readers stop reading, memory stays bounded. A requester's reset cancels the handler, so the API
server sees its request end at once. `LocalProxy` puts an upstream's pool and proxy behind such
streams (the gateway's direct planes, and its peer replicas). This module never opens a
connection itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from http1 import TO_UPSTREAM, Policy
from kubeproxy.h2pool import H2Pool
from kubeproxy.metrics import ProxyMetrics
from kubeproxy.pool import ConnectionPool
from kubeproxy.proxy import ProxiedStream, Proxy
from kubeproxy.upstream import Upstream
from protocol import ErrorCode, Headers, RequestReceived, ResponseReceived
from tunnel import StreamResetError


class _Budget:
    """Bytes unread in all the streams of one `LocalStreams`, and the writers waiting."""

    __slots__ = ("_waiters", "held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def full(self) -> bool:
        return self.held >= self.limit

    def wait_for_room(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.append(waiter)

    def release(self, size: int) -> None:
        if size:
            self.held -= size
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                _wake(waiter)


class _Pipe:
    """One direction of a `LocalStream`: pieces in order, then an end; a writer waits while
    `limit` bytes are unread, or while the plane's `budget` is spent. Once failed, reads and
    writes raise (a piece sent before the end stays readable, as in a tunnel stream)."""

    __slots__ = (
        "_budget",
        "_chunks",
        "_held",
        "_limit",
        "_reader",
        "_writer",
        "discarding",
        "ended",
        "error",
    )

    def __init__(self, limit: int, budget: _Budget) -> None:
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._limit = limit
        self._budget = budget
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self.ended = False
        self.discarding = False
        self.error: StreamResetError | None = None

    @property
    def readable_now(self) -> bool:
        return bool(self._chunks) or self.ended or self.error is not None

    @property
    def drained(self) -> bool:
        return not self._chunks

    async def read(self) -> bytes:
        while not self._chunks:
            if self.ended:
                return b""
            if self.error is not None:
                raise self.error
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        chunk = self._chunks.popleft()
        self._held -= len(chunk)
        _wake(self._writer)
        self._budget.release(len(chunk))
        return chunk

    async def write(self, data: bytes | memoryview) -> int:
        """Queue `data` once there is room; the bytes queued (0 when it is discarded)."""
        while True:
            if self.error is not None:
                raise self.error
            if self.ended:
                raise StreamResetError(
                    ErrorCode.STREAM_CLOSED, "written after its end", remote=False
                )
            if self.discarding:
                return 0
            if self._held < self._limit and not self._budget.full:
                break
            self._writer = asyncio.get_running_loop().create_future()
            if self._budget.full:
                self._budget.wait_for_room(self._writer)
            try:
                await self._writer
            finally:
                self._writer = None
        if data:
            self._chunks.append(bytes(data))
            self._held += len(data)
            self._budget.held += len(data)
            _wake(self._reader)
        return len(data)

    def end(self) -> None:
        if not self.ended and self.error is None:
            self.ended = True
            _wake(self._reader)

    def discard(self) -> None:
        """Nobody reads any more: what comes is dropped, writers never wait."""
        self.discarding = True
        self.drop()
        _wake(self._writer)

    def fail(self, error: StreamResetError) -> None:
        if self.error is not None:
            return
        self.error = error
        if not self.ended:
            self.drop()  # an incomplete message is worthless
        for waiter in (self._reader, self._writer):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)

    def drop(self) -> None:
        """Forget what is unread."""
        self._chunks.clear()
        self._budget.release(self._held)
        self._held = 0


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class LocalStream:
    """One request served in this process: the requester's end (what a tunnel stream offers
    the side that opened it: `response`, `read`, `write`, `end`, `reset`); `proxy_end` is the
    end `Proxy` serves. Resetting one end fails the other at once."""

    def __init__(self, stream_id: int, *, buffer_bytes: int, budget: _Budget) -> None:
        self.stream_id = stream_id
        self.request = _Pipe(buffer_bytes, budget)
        self.response_body = _Pipe(buffer_bytes, budget)
        self._head: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self.serving: asyncio.Task[None] | None = None
        """The task serving the other end: cancelled when the requester resets."""
        self.proxy_end = _ProxyEnd(self)
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def readable_now(self) -> bool:
        return self.response_body.readable_now

    @property
    def at_end(self) -> bool:
        """Every byte of the answer was read and it ended: `read()` would return b""."""
        return self.response_body.ended and self.response_body.drained

    @property
    def done(self) -> bool:
        """Nothing more will happen, and every byte of the answer was read."""
        if self.response_body.error is not None:
            return True
        return self.request.ended and self.response_body.ended and self.response_body.drained

    async def response(self) -> ResponseReceived:
        return await self._head

    async def read(self) -> bytes:
        return await self.response_body.read()

    async def write(self, data: bytes | memoryview) -> None:
        self.bytes_sent += await self.request.write(data)

    def end(self) -> None:
        self.request.end()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        """The requester gives up: the proxy's end fails and its work is cancelled."""
        if self._fail(code, message, by_requester=True) and self.serving is not None:
            self.serving.cancel()

    def respond(self, status: int, headers: Headers, *, end_stream: bool) -> None:
        """The proxy's response head."""
        if self.request.error is not None:
            raise self.request.error
        if self._head.cancelled():  # the caller stopped waiting: it resets the stream next
            raise StreamResetError(ErrorCode.CANCEL, "the caller went away", remote=True)
        if self._head.done():
            raise StreamResetError(ErrorCode.PROTOCOL_ERROR, "answered twice", remote=False)
        self._head.set_result(ResponseReceived(self.stream_id, status, tuple(headers)))
        if end_stream:
            self.response_body.end()

    def _fail(self, code: ErrorCode, message: str, *, by_requester: bool) -> bool:
        """Fail both ends (each sees the error as its peer's or its own); False if failed.
        What the side giving up has not read goes at once."""
        if self.response_body.error is not None:
            return False
        (self.response_body if by_requester else self.request).drop()
        self.response_body.fail(StreamResetError(code, message, remote=not by_requester))
        self.request.fail(StreamResetError(code, message, remote=by_requester))
        if not self._head.done():
            self._head.set_exception(StreamResetError(code, message, remote=not by_requester))
            self._head.exception()  # nobody may await it any more: mark it seen
        return True


class _ProxyEnd:
    """The end of a `LocalStream` that `Proxy` serves (a `ProxiedStream`)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: LocalStream) -> None:
        self._stream = stream

    @property
    def stream_id(self) -> int:
        return self._stream.stream_id

    @property
    def answered(self) -> bool:
        return self._stream.response_body.ended

    async def read(self) -> bytes:
        return await self._stream.request.read()

    async def write(self, data: bytes | memoryview) -> None:
        self._stream.bytes_received += await self._stream.response_body.write(data)

    def respond(self, status: int, headers: Headers = (), *, end_stream: bool = False) -> None:
        self._stream.respond(status, headers, end_stream=end_stream)

    def end(self) -> None:
        self._stream.response_body.end()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        self._stream._fail(code, message, by_requester=False)


Handler = Callable[[ProxiedStream, RequestReceived], Awaitable[None]]
"""Serves one request on its stream (`Proxy.handle`)."""


class LocalStreams:
    """Opens `LocalStream`s that `handler` serves, and ends them all on `close`."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_streams: int,
        buffer_bytes: int,
        budget_bytes: int,
        logger: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._handler = handler
        self._max_streams = max_streams
        self._buffer_bytes = buffer_bytes
        self._budget = _Budget(budget_bytes)
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self._streams: dict[LocalStream, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_id = 1
        self.opened = 0
        self._bytes_done = (0, 0)
        """Bytes (sent, received) of the streams already ended."""
        self.closed = False

    @property
    def open(self) -> int:
        return len(self._streams)

    @property
    def bytes_moved(self) -> tuple[int, int]:
        """Bytes sent to the proxy and received from it, over every stream so far."""
        sent, received = self._bytes_done
        for stream in self._streams:
            sent, received = sent + stream.bytes_sent, received + stream.bytes_received
        return sent, received

    def open_stream(
        self, *, method: str, path: str, headers: Headers, end_stream: bool, upgrade: bool
    ) -> LocalStream:
        """Start serving one request. Raises StreamResetError(REFUSED_STREAM) when
        `max_streams` are open, or once closed (safe to retry elsewhere)."""
        if self.closed:
            raise StreamResetError(ErrorCode.REFUSED_STREAM, "closed", remote=True)
        if len(self._streams) >= self._max_streams:
            raise StreamResetError(
                ErrorCode.REFUSED_STREAM, f"{self._max_streams} requests are open", remote=True
            )
        stream_id, self._next_id = self._next_id, self._next_id + 1
        stream = LocalStream(stream_id, buffer_bytes=self._buffer_bytes, budget=self._budget)
        if end_stream:
            stream.end()
        request = RequestReceived(
            stream_id=stream_id,
            method=method.encode("ascii"),
            path=path.encode("latin-1"),
            headers=tuple(headers),
            target=b"",
            upgrade=upgrade,
            end_stream=end_stream,
        )
        task = asyncio.create_task(self._serve(stream, request), name=f"local-{stream_id}")
        stream.serving = task
        self._streams[stream] = task
        self._idle.clear()
        self.opened += 1
        return stream

    async def wait_idle(self) -> None:
        """Until no stream is open."""
        await self._idle.wait()

    def close(self, reason: str) -> list[asyncio.Task[None]]:
        """Reset every open stream (the requesters hear CONNECTION_LOST) and cancel its
        handler; the tasks to await."""
        self.closed = True
        tasks = list(self._streams.values())
        for stream in list(self._streams):
            stream.proxy_end.reset(ErrorCode.CONNECTION_LOST, reason)
        for task in tasks:
            task.cancel()
        return tasks

    async def _serve(self, stream: LocalStream, request: RequestReceived) -> None:
        """Run the handler on the stream's far end; whatever way it ends, the requester hears."""
        end = stream.proxy_end
        try:
            await self._handler(end, request)
        except StreamResetError as error:
            end.reset(error.code, error.message)
        except Exception:
            self._log.exception("local request failed", stream_id=stream.stream_id)
            end.reset(ErrorCode.INTERNAL_ERROR, "the gateway failed to handle the request")
        else:
            if end.answered:
                stream.request.discard()  # the rest of an upload is not needed
            elif not stream.done:
                end.reset(ErrorCode.INTERNAL_ERROR, "the handler returned without answering")
        finally:
            del self._streams[stream]
            sent, received = self._bytes_done
            self._bytes_done = (sent + stream.bytes_sent, received + stream.bytes_received)
            if not self._streams:
                self._idle.set()


@dataclass(frozen=True)
class LocalLimits:
    """The bounds of an upstream served in this process (an agent tunnel's defaults)."""

    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    pool_max_idle: int = 16
    pool_idle_timeout: float = 60.0
    upstream_http2: bool = True
    """Requests but upgrades go over HTTP/2 while the server offers h2 in ALPN (`H2Pool`):
    many on each connection, up to the server's stream limit."""
    upstream_http2_max_connections: int = 64
    """HTTP/2 connections at most; beyond their streams requests wait."""
    max_streams: int = 512
    """Requests open at once; more are refused (REFUSED_STREAM)."""
    buffer_bytes: int = 256 * 1024
    """Bytes buffered per direction of a request before its writer waits for the reader."""
    budget_bytes: int = 16 * 1024 * 1024
    """Bytes buffered in all the requests at once (an agent tunnel's connection window)."""


class LocalProxy:
    """An upstream served in this process: its pools (HTTP/1.1, and HTTP/2 unless the limits
    turn it off), the proxy, and the `LocalStreams` whose requests the proxy serves."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        limits: LocalLimits,
        metrics: ProxyMetrics,
        logger: structlog.stdlib.BoundLogger,
        policy: Policy = TO_UPSTREAM,
    ) -> None:
        """`policy`: the request fields passed on upstream."""
        self.upstream = upstream
        self.metrics = metrics
        self.pool = ConnectionPool(
            upstream,
            max_idle=limits.pool_max_idle,
            idle_timeout=limits.pool_idle_timeout,
            connect_timeout=limits.connect_timeout,
            metrics=metrics,
        )
        self.h2_pool = (
            H2Pool(
                upstream,
                max_connections=limits.upstream_http2_max_connections,
                idle_timeout=limits.pool_idle_timeout,
                connect_timeout=limits.connect_timeout,
                metrics=metrics,
            )
            if limits.upstream_http2
            else None
        )
        self.proxy = Proxy(
            pool=self.pool,
            h2_pool=self.h2_pool,
            metrics=metrics,
            response_timeout=limits.response_timeout,
            logger=logger,
            policy=policy,
        )
        self.streams = LocalStreams(
            self.proxy.handle,
            max_streams=limits.max_streams,
            buffer_bytes=limits.buffer_bytes,
            budget_bytes=limits.budget_bytes,
            logger=logger,
        )

    def close(self, reason: str) -> list[asyncio.Task[None]]:
        """End every open request now (their requesters hear CONNECTION_LOST) and the idle
        connections (every HTTP/2 one: their streams end with the requests); the handlers to
        await."""
        handlers = self.streams.close(reason)
        self.pool.close()
        if self.h2_pool is not None:
            self.h2_pool.close()
        return handlers
