"""Serving one tunnel stream: the caller's request to the API server, and its answer back.

`Proxy.handle` is the agent session's request handler, and serves the gateway's direct planes'
in-process streams the same way (`ProxiedStream` is what it needs of either). It never buffers
a body: each piece read from one side is written to the other before the next is read, and a
write waits for room (the tunnel's window, the socket's buffer), so a slow reader slows the
writer and memory per stream stays at one piece. Watches, `logs -f` and chunked answers
therefore flow as they arrive.

What it guarantees:
- requests go only to the configured API server, with the proxy's own `Host` and credentials
  (the plan is `kubeproxy.request`'s, the header policy `http1.TO_UPSTREAM`); a refused request
  gets a 400 `Status`;
- the exchange ends only when both sides have: the caller's rest of a request body the API
  server did not wait for is read and dropped, not left in the tunnel's window;
- a failure before the response head becomes a 502 (504 for a timeout) with a Kubernetes
  `Status` body; after the head, a reset of the stream;
- a stream that ends early (the caller went away, the handler is cancelled) never returns its
  connection to the pool: the connection is aborted, so a watch upstream ends with it.

Given an `H2Pool` (the agent's `--upstream-http2`, on by default), requests but upgrades go
over HTTP/2 while the API server offers it; an HTTP/2 exchange that ends early is cancelled
(RST_STREAM), which ends that request only, and so is one whose body breaks its
Content-Length (400 before the response head, as over HTTP/1.1). Upgrades and servers without
h2 use the HTTP/1.1 pool. `upstream_requests_total{protocol}` counts which pool each request
went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog

import http1
from http1 import (
    REQUEST_ID,
    TO_GATEWAY,
    TO_UPSTREAM,
    Policy,
    header_value,
    status_body,
    status_class,
    status_headers,
)
from kubeproxy.h2pool import H2Exchange, H2Pool, H2ResponseHead, Http2NotOffered
from kubeproxy.metrics import ProxyMetrics
from kubeproxy.pool import ConnectionPool, UpstreamConnection, UpstreamError
from kubeproxy.request import BadRequest, RequestPlan, plan_request
from kubeproxy.upstream import UpstreamCredentialsError
from protocol import ErrorCode, Headers, RequestReceived
from tunnel import StreamResetError
from tunnel.deadline import DeadlineQueue

_Head = TypeVar("_Head", http1.ResponseHead, H2ResponseHead)
_BAD_LENGTH = "the request body does not match its Content-Length"


class _HeadRefused(Exception):
    """The API server's response head cannot cross the tunnel (too large, malformed)."""


class ProxiedStream(Protocol):
    """What the proxy uses of the stream it serves: a tunnel stream (the agent), or a direct
    plane's in-process stream (the gateway). Its operations raise StreamResetError once the
    stream was reset."""

    @property
    def stream_id(self) -> int: ...

    async def read(self) -> bytes | memoryview: ...

    async def write(self, data: bytes | memoryview) -> None: ...

    def respond(self, status: int, headers: Headers = (), *, end_stream: bool = False) -> None: ...

    def end(self) -> None: ...

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class _UpstreamExchange:
    """A request sent upstream and its response head: what is left is to pass it on."""

    connection: UpstreamConnection
    head: http1.ResponseHead
    body: asyncio.Task[str] | None  # still sending the request body, if there is one


@dataclass
class ProxyStats:
    """What the proxy holds now; `peak_held_bytes` is the most it ever held at once."""

    active: int = 0
    held_bytes: int = 0
    peak_held_bytes: int = 0


class Proxy:
    """Proxies tunnel streams to the API server behind `pool`."""

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        metrics: ProxyMetrics,
        response_timeout: float,
        logger: structlog.stdlib.BoundLogger | None = None,
        log_streams: bool = False,
        policy: Policy = TO_UPSTREAM,
        h2_pool: H2Pool | None = None,
    ) -> None:
        """`log_streams`: one info line per stream, when the API server answered (the agent's;
        a gateway's direct planes and peer links have the access log); `h2_pool`: HTTP/2 for
        requests but upgrades, when the API server offers it."""
        self._pool = pool
        self._h2_pool = h2_pool
        self._log_streams = log_streams
        self._policy = policy
        self._metrics = metrics
        self._response_timeout = response_timeout
        self._h2_deadlines = DeadlineQueue()
        """The HTTP/2 exchanges' deadlines, all of one length: one timer for all."""
        self._log: structlog.stdlib.BoundLogger = logger or structlog.get_logger()
        self.stats = ProxyStats()
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no stream is being served."""
        await self._idle.wait()

    async def handle(self, stream: ProxiedStream, request: RequestReceived) -> None:
        """The session's request handler: serve `stream` until the exchange is over."""
        ids: dict[str, object] = {"stream_id": stream.stream_id}
        if (request_id := header_value(request.headers, REQUEST_ID)) is not None:
            # The gateway's id for the caller's request, as its access line and the caller's
            # Planelink-Request-Id say it.
            ids["request_id"] = request_id.decode("latin-1")
        self.stats.active += 1
        self._idle.clear()
        self._metrics.active_streams.inc()
        outcome = "error"
        try:
            outcome = await self._serve(stream, request, ids)
        except (StreamResetError, asyncio.CancelledError):
            # The caller went away (or the tunnel did): the upstream exchange is abandoned.
            self._log.debug("stream ended before the exchange", **ids)
            outcome = "reset"
            raise
        finally:
            self.stats.active -= 1
            if not self.stats.active:
                self._idle.set()
            self._metrics.active_streams.dec()
            self._metrics.streams.labels(outcome).inc()

    # -- one exchange -------------------------------------------------------------------------

    async def _serve(
        self, stream: ProxiedStream, request: RequestReceived, ids: dict[str, object]
    ) -> str:
        try:
            plan = plan_request(request, policy=self._policy)
        except BadRequest as refused:
            self._log.info("request refused", reason=str(refused), **ids)
            await self._respond_error(stream, 400, str(refused))
            return "bad_request"
        # One bind per stream, once its request is known: each bind copies the context.
        log = self._log.bind(**ids, method=plan.method, path=plan.target)
        h2_pool = self._h2_pool
        if h2_pool is not None and not plan.upgrade and h2_pool.protocol != "http/1.1":
            with contextlib.suppress(Http2NotOffered):  # raised before anything was sent
                return await self._serve_h2(h2_pool, stream, plan, log)
        first = b""
        if plan.length is None and not plan.upgrade:
            # No Content-Length: a body, if any, goes chunked. Its first piece (or the end,
            # which arrives with the head of a bodiless request) tells which.
            first = bytes(await stream.read())
        metrics = self._metrics
        started = time.monotonic()
        try:
            exchange = await self._start(stream, plan, first)
        except (UpstreamError, BadRequest) as failure:
            return await self._failed_before_head(stream, failure, started, log)
        duration = time.monotonic() - started
        status = exchange.head.status
        metrics.upstream_duration.labels(status_class(status)).observe(duration)
        answered = log.info if self._log_streams else log.debug
        answered("upstream answered", status=status, seconds=round(duration, 4))
        return await self._answer(stream, plan, exchange, log)

    async def _failed_before_head(
        self,
        stream: ProxiedStream,
        failure: UpstreamError | BadRequest,
        started: float,
        log: structlog.stdlib.BoundLogger,
    ) -> str:
        """Answer a request that got no response head, over either protocol; its outcome."""
        metrics = self._metrics
        metrics.upstream_duration.labels("error").observe(time.monotonic() - started)
        if isinstance(failure, BadRequest):
            log.info("request refused", reason=str(failure))
            await self._respond_error(stream, 400, str(failure))
            return "bad_request"
        log.warning("upstream request failed", kind=failure.kind, error=failure.message)
        await self._respond_error(stream, failure.status, failure.message)
        return "upstream_error"

    async def _serve_h2(
        self,
        h2_pool: H2Pool,
        stream: ProxiedStream,
        plan: RequestPlan,
        log: structlog.stdlib.BoundLogger,
    ) -> str:
        """One exchange over HTTP/2; raises Http2NotOffered before anything was sent."""
        metrics = self._metrics
        headers = list(plan.headers)
        if plan.length is not None:
            headers.append((b"content-length", str(plan.length).encode()))
        # No Content-Length: the first piece (or the end) tells whether there is a body.
        first = b"" if plan.length is not None else bytes(await stream.read())
        has_body = bool(first) or bool(plan.length)
        started = time.monotonic()
        exchange: H2Exchange | None = None
        sending: asyncio.Task[str] | None = None
        waiting_for = "stream"
        deadlines, seconds = self._h2_deadlines, self._response_timeout
        try:
            try:
                # Waiting for room on a connection and for the answer are each bounded by the
                # response timeout.
                async with deadlines.within(seconds):
                    exchange = await h2_pool.request(
                        plan.method, plan.target, headers, end=not has_body
                    )
                metrics.http2_requests.inc()
                if has_body:
                    sending = asyncio.create_task(self._send_body_h2(stream, exchange, plan, first))
                waiting_for = "head"
                async with deadlines.within(seconds):
                    head = await self._head_h2(exchange, sending)
            except TimeoutError:
                failure = self._h2_timeout(waiting_for)
                return await self._failed_before_head(stream, failure, started, log)
            except (UpstreamError, BadRequest) as failure:
                return await self._failed_before_head(stream, failure, started, log)
            duration = time.monotonic() - started
            metrics.upstream_duration.labels(status_class(head.status)).observe(duration)
            answered = log.info if self._log_streams else log.debug
            answered("upstream answered", status=head.status, seconds=round(duration, 4), h2=True)
            try:
                _respond_head(stream, head.status, TO_GATEWAY.apply(head.headers))
                while piece := await exchange.body_piece():
                    with self._holding(len(piece)):
                        await stream.write(piece)
                    metrics.to_gateway.inc(len(piece))
            except (_HeadRefused, UpstreamError) as failure:
                return await self._failed_response(stream, failure, log)
            stream.end()
        finally:
            if sending is not None:
                sending.cancel()
            if exchange is not None:
                exchange.cancel()  # a no-op once the stream is over; else only it ends
        await _discard(stream)
        return "ok"

    def _h2_timeout(self, waiting_for: str) -> UpstreamError:
        """The failure of an exchange whose stream ("stream": every connection was full) or
        response head ("head") did not come within the response timeout."""
        if waiting_for == "stream":
            message = f"no stream to the API server within {self._response_timeout:g} s"
        else:
            message = f"no response from the API server within {self._response_timeout:g} s"
        return UpstreamError("timeout", message)

    async def _head_h2(
        self, exchange: H2Exchange, body: asyncio.Task[str] | None
    ) -> H2ResponseHead:
        """The response head; raises BadRequest when the request body breaks its
        Content-Length first (the body task has cancelled the exchange then). The caller
        bounds the wait."""
        if body is None:
            return await exchange.response_head()
        reading = asyncio.create_task(exchange.response_head())
        return await self._head_or_bad_body(reading, body)

    async def _send_body_h2(
        self, stream: ProxiedStream, exchange: H2Exchange, plan: RequestPlan, first: bytes
    ) -> str:
        """Copy the request body to its stream; returns sent, bad_length, reset or
        upstream_error. Anything but sent cancels the exchange (the API server never takes a
        body cut short or run long as whole), which the response side then reports."""
        sent = 0
        outcome = "sent"
        try:
            piece: bytes | memoryview = first or await stream.read()
            while piece:
                sent += len(piece)
                if plan.length is not None and sent > plan.length:
                    outcome = "bad_length"
                    break
                with self._holding(len(piece)):
                    await exchange.send(bytes(piece))
                self._metrics.to_upstream.inc(len(piece))
                piece = await stream.read()
            else:
                if plan.length is not None and sent != plan.length:
                    outcome = "bad_length"
                else:
                    await exchange.send(b"", end=True)
        except StreamResetError:
            outcome = "reset"
        except UpstreamError:
            outcome = "upstream_error"
        if outcome == "bad_length":
            exchange.cancel(_BAD_LENGTH)
        elif outcome != "sent":
            exchange.cancel()
        return outcome

    async def _answer(
        self,
        stream: ProxiedStream,
        plan: RequestPlan,
        exchange: _UpstreamExchange,
        log: structlog.stdlib.BoundLogger,
    ) -> str:
        """Pass the response (or, after a 101, the byte streams) on to the caller."""
        connection, head, body = exchange.connection, exchange.head, exchange.body
        reusable = False
        try:
            if head.status == 101:
                _respond_head(stream, 101, TO_GATEWAY.apply(head.headers, upgrade=True))
                await self._pipe(stream, connection)
                return "upgraded"
            reusable = await self._relay(stream, connection, head, body)
        except (_HeadRefused, UpstreamError) as failure:
            return await self._failed_response(stream, failure, log)
        finally:
            if body is not None:
                body.cancel()
            self._pool.release(connection, reusable=reusable and not plan.upgrade)
        # The exchange is over once the caller has ended its side too: after a refused
        # upgrade it can only end; after a request body it has ended already; a body the API
        # server did not wait for is read here and dropped.
        await _discard(stream)
        return "ok"

    async def fetch(self, path: str, *, body_limit: int) -> tuple[int, bytes]:
        """GET `path` the way a caller's request goes (the same pool, credentials and retry)
        and keep the first `body_limit` bytes of the answer: a probe of the API server.
        Raises UpstreamError."""
        plan = RequestPlan(method="GET", target=path, headers=[], length=None, upgrade=False)
        h2_pool = self._h2_pool
        if h2_pool is not None and h2_pool.protocol != "http/1.1":
            with contextlib.suppress(Http2NotOffered):  # raised before anything was sent
                return await self._fetch_h2(h2_pool, plan, body_limit)
        exchange = await self._start(None, plan, b"")
        body = b""
        reusable = False
        try:
            while piece := await exchange.connection.body_piece():
                if len(body) >= body_limit:
                    break  # the rest is not read: the connection cannot be reused
                body += piece[: body_limit - len(body)]
            else:
                reusable = exchange.head.keep_alive
        finally:
            self._pool.release(exchange.connection, reusable=reusable)
        return exchange.head.status, body

    async def _fetch_h2(
        self, h2_pool: H2Pool, plan: RequestPlan, body_limit: int
    ) -> tuple[int, bytes]:
        """`fetch` over HTTP/2: a stream of the callers' connections, cancelled once
        `body_limit` bytes are in."""
        try:
            async with asyncio.timeout(self._response_timeout):
                exchange = await h2_pool.request(plan.method, plan.target, [], end=True)
        except TimeoutError:
            raise self._h2_timeout("stream") from None
        self._metrics.http2_requests.inc()
        try:
            try:
                async with asyncio.timeout(self._response_timeout):
                    head = await exchange.response_head()
            except TimeoutError:
                raise self._h2_timeout("head") from None
            body = b""
            while len(body) < body_limit and (piece := await exchange.body_piece()):
                body += piece[: body_limit - len(body)]
        finally:
            exchange.cancel()  # the rest is not wanted (nothing happens once it has ended)
        return head.status, body

    async def _start(
        self, stream: ProxiedStream | None, plan: RequestPlan, first: bytes
    ) -> _UpstreamExchange:
        """Send the request and wait for the response head. Raises UpstreamError (and
        BadRequest when the body contradicts its Content-Length). `stream` is read only for
        a request body."""
        chunked = plan.length is None and bool(first)
        try:
            request_head = plan.head(
                chunked=chunked,
                authorization=self._pool.upstream.authorization(),
                host=self._pool.upstream.authority.encode("ascii"),
                base_path=self._pool.upstream.base_path,
            )
        except UpstreamCredentialsError as error:
            raise UpstreamError("credentials", str(error)) from None
        has_body = chunked or bool(plan.length)
        self._metrics.http1_requests.inc()
        fresh = False
        while True:
            connection = await self._pool.acquire(fresh=fresh)
            body: asyncio.Task[str] | None = None
            try:
                await connection.send(request_head)
                if has_body:
                    assert stream is not None
                    body = asyncio.create_task(self._send_body(stream, connection, plan, first))
                head = await self._await_head(connection, body, plan)
                if not (200 <= head.status <= 599 or (head.status == 101 and plan.upgrade)):
                    raise UpstreamError("protocol", f"unexpected status {head.status}")
                return _UpstreamExchange(connection, head, body)
            except BaseException as error:
                if body is not None:
                    body.cancel()
                self._pool.release(connection, reusable=False)
                # A kept-alive connection the server closed meanwhile: retry once on a new
                # one, when no body byte was taken from the caller (safe to send again).
                retry = (
                    isinstance(error, UpstreamError)
                    and error.kind == "closed"
                    and connection.reused
                    and not has_body
                )
                if not retry:
                    raise
                fresh = True

    async def _await_head(
        self, connection: UpstreamConnection, body: asyncio.Task[str] | None, plan: RequestPlan
    ) -> http1.ResponseHead:
        reading = connection.response_head(head_request=plan.method == "HEAD")
        try:
            async with connection.deadline.within(self._response_timeout):
                if body is None:  # the common case: nothing else to watch, so no task
                    return await reading
                return await self._head_or_bad_body(asyncio.create_task(reading), body)
        except TimeoutError:
            raise UpstreamError(
                "timeout", f"no response from the API server within {self._response_timeout:g} s"
            ) from None

    @staticmethod
    async def _head_or_bad_body(head: asyncio.Task[_Head], body: asyncio.Task[str]) -> _Head:
        """The response head, unless the request body breaks its Content-Length first."""
        try:
            await asyncio.wait({head, body}, return_when=asyncio.FIRST_COMPLETED)
            if body.done() and body.result() == "bad_length":
                raise BadRequest(_BAD_LENGTH)
            return await head
        finally:
            if not head.done():
                head.cancel()
            elif not head.cancelled():
                head.exception()  # seen: it is re-raised above or irrelevant now

    async def _send_body(
        self, stream: ProxiedStream, connection: UpstreamConnection, plan: RequestPlan, first: bytes
    ) -> str:
        """Copy the request body to the API server; returns sent, bad_length, reset or
        upstream_error (never raises: the response side decides what the caller sees)."""
        chunked = plan.length is None
        sent = 0
        try:
            piece: bytes | memoryview = first or await stream.read()
            while piece:
                sent += len(piece)
                if plan.length is not None and sent > plan.length:
                    return "bad_length"
                with self._holding(len(piece)):
                    await connection.send(http1.chunk(bytes(piece)) if chunked else piece)
                self._metrics.to_upstream.inc(len(piece))
                piece = await stream.read()
            if chunked:
                await connection.send(http1.LAST_CHUNK)
            elif sent != plan.length:
                return "bad_length"
        except StreamResetError:
            return "reset"
        except UpstreamError:
            return "upstream_error"
        return "sent"

    async def _relay(
        self,
        stream: ProxiedStream,
        connection: UpstreamConnection,
        head: http1.ResponseHead,
        body: asyncio.Task[str] | None,
    ) -> bool:
        """Send the response to the caller as it arrives; returns whether the connection may
        carry another exchange."""
        _respond_head(stream, head.status, TO_GATEWAY.apply(head.headers))
        while piece := await connection.body_piece():
            with self._holding(len(piece)):
                await stream.write(piece)
            self._metrics.to_gateway.inc(len(piece))
        stream.end()
        # A request body not sent to its end (the API server answered first: a 413, a 403)
        # leaves the connection mid-request: never reuse it.
        request_sent = body is None or (body.done() and body.result() == "sent")
        return head.keep_alive and request_sent

    async def _pipe(self, stream: ProxiedStream, connection: UpstreamConnection) -> None:
        """After a 101: bytes both ways until each side has ended its direction."""
        upstream_ended = False

        async def to_gateway() -> None:
            nonlocal upstream_ended
            while data := await connection.raw_read():
                with self._holding(len(data)):
                    await stream.write(data)
                self._metrics.to_gateway.inc(len(data))
            upstream_ended = True
            stream.end()

        async def to_upstream() -> None:
            try:
                while data := await stream.read():
                    with self._holding(len(data)):
                        await connection.send(data)
                    self._metrics.to_upstream.inc(len(data))
            except UpstreamError:
                if not upstream_ended:
                    raise
                await _discard(stream)  # the server is done; the caller's last bytes go nowhere
            connection.half_close()

        await _both(to_gateway(), to_upstream())

    # -- helpers ----------------------------------------------------------------------------

    async def _failed_response(
        self,
        stream: ProxiedStream,
        failure: _HeadRefused | UpstreamError,
        log: structlog.stdlib.BoundLogger,
    ) -> str:
        """Answer a response the API server broke (over HTTP/1.1 or HTTP/2 alike): a head that
        cannot be passed on is a 502; a failure after the head resets the stream."""
        if isinstance(failure, _HeadRefused):
            message = f"the API server's response head cannot be passed on: {failure}"
            log.warning("upstream response refused", error=message)
            await self._respond_error(stream, 502, message)
        else:
            log.warning("upstream failed mid-response", kind=failure.kind, error=failure.message)
            stream.reset(ErrorCode.CONNECT_ERROR, failure.message)
        return "upstream_error"

    async def _respond_error(self, stream: ProxiedStream, status: int, message: str) -> None:
        body = status_body(status, message)
        stream.respond(status, tuple(status_headers(body)))
        await stream.write(body)
        stream.end()
        await _discard(stream)

    def _holding(self, size: int) -> _Held:
        return _Held(self.stats, size)


class _Held:
    """Counts `size` bytes as held by the proxy for the duration of a `with` block."""

    __slots__ = ("_size", "_stats")

    def __init__(self, stats: ProxyStats, size: int) -> None:
        self._stats = stats
        self._size = size

    def __enter__(self) -> None:
        stats = self._stats
        stats.held_bytes += self._size
        stats.peak_held_bytes = max(stats.peak_held_bytes, stats.held_bytes)

    def __exit__(self, *exc: object) -> None:
        self._stats.held_bytes -= self._size


def _respond_head(stream: ProxiedStream, status: int, headers: Headers) -> None:
    try:
        stream.respond(status, tuple(headers))
    except StreamResetError as error:
        # The protocol refused the head (larger than the gateway accepts, or not encodable)
        # and changed nothing: the caller can still be told with a small one.
        if error.code is not ErrorCode.HEADER_ERROR:
            raise
        raise _HeadRefused(error.message) from None


async def _discard(stream: ProxiedStream) -> None:
    """Read and drop what the caller still sends, until it ends its side."""
    while await stream.read():
        pass


async def _both(first: Coroutine[Any, Any, None], second: Coroutine[Any, Any, None]) -> None:
    """Run both to completion; the first failure cancels the other and is raised."""
    tasks = [asyncio.create_task(first), asyncio.create_task(second)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if (error := task.exception()) is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
