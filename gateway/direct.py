"""Direct-mode planes: the gateway dials the plane's API server itself, with kubeproxy.

From a plane's resolved `DirectCredentials` (handed over by the reconciler through
`gateway.interfaces.DirectPlaneSink`) to a kubeproxy `Upstream`, `ConnectionPool` and `Proxy` —
the same pool and proxy an agent runs in its cluster. A caller's request to a direct plane is a
`DirectStream`: the caller endpoint relays it exactly as it relays a tunnel stream (same routing,
authentication, statuses, upgrades), and `Proxy.handle` serves its other end in this process.
There is no tunnel, session or heartbeat in between, and nothing is registered as an agent.
The reconciler's probe (`DirectPlanes.fetch`) goes through the same pool.

Life cycle: new credentials serve the plane at once; changed credentials (a rotated token, a new
CA) serve new requests with the new ones, while open streams (a watch, say) may finish for
`drain_grace` seconds; a plane removed is closed at once. This module never touches trust and
never accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from cryptography import x509

import certs
from certs import PlaneRef
from gateway.interfaces import DirectCredentials, PlaneAnswer, PlaneUnreachable
from gateway.metrics import AgentSample, GatewayMetrics
from kubeproxy import (
    ConnectionPool,
    Proxy,
    ProxyMetrics,
    TLSSettings,
    Upstream,
    UpstreamConfigError,
    UpstreamCredentialsError,
    UpstreamError,
)
from protocol import ErrorCode, RequestReceived, ResponseReceived
from tunnel import StreamResetError
from tunnel.contract import IDENTITY_AGENT_ID, IDENTITY_PLANE
from tunnel.http1 import Headers

log = structlog.get_logger("gateway.direct")

DIRECT_AGENT_ID = "direct"
"""How /planes and the agent metrics name a direct plane's one "agent": the gateway itself."""
_PROBE_BODY_LIMIT = 300
"""Characters of a probe's answer kept for the condition's message."""


@dataclass(frozen=True)
class DirectSettings:
    """How the gateway proxies to direct-mode planes (the agent's defaults)."""

    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    pool_max_idle: int = 16
    pool_idle_timeout: float = 60.0
    drain_grace: float = 30.0
    max_streams: int = 512
    """Requests open at once per plane (an agent's tunnel default); more are refused (429)."""
    buffer_bytes: int = 256 * 1024
    """Bytes buffered per direction of a request before its writer waits for the reader."""
    plane_buffer_bytes: int = 16 * 1024 * 1024
    """Bytes buffered in all of a plane's requests at once (an agent tunnel's connection
    window): however many callers stop reading, a plane holds no more."""


def upstream_for(plane: PlaneRef, credentials: DirectCredentials) -> Upstream:
    """The kubeproxy upstream of a direct plane: its server, CA, client certificate, token.
    Raises UpstreamConfigError when they cannot make one."""
    server = urlsplit(credentials.server.rstrip("/"))
    if server.hostname is None:
        raise UpstreamConfigError(f"direct plane {plane}: bad server {credentials.server!r}")
    upstream = Upstream(
        scheme=server.scheme,
        host=server.hostname,
        port=server.port or (443 if server.scheme == "https" else 80),
        base_path=server.path,
        tls=TLSSettings(
            ca_data=credentials.ca_pem,
            ca_file=None,
            client_cert_pem=credentials.client_cert_pem,
            client_key_pem=credentials.client_key_pem,
        ),
        token=credentials.bearer_token,
        source=f"DataPlane {plane} spec.kubernetesCluster",
    )
    upstream.ssl_context()  # fail now if the TLS material is unusable
    return upstream


# -- one request in-process ---------------------------------------------------------------------


class _Budget:
    """Bytes held in the pipes of one plane, and the writers waiting for some to go."""

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
    """One direction of a `DirectStream`: pieces in order, then an end; a writer waits while
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


class DirectStream:
    """One caller request to a direct plane: the caller's end (what a tunnel stream offers the
    caller endpoint: `response`, `read`, `write`, `end`, `reset`); `proxy_end` is the end that
    `kubeproxy.Proxy` serves. Resetting one end fails the other at once."""

    def __init__(self, stream_id: int, *, buffer_bytes: int, budget: _Budget) -> None:
        self.stream_id = stream_id
        self.request = _Pipe(buffer_bytes, budget)
        self.response_body = _Pipe(buffer_bytes, budget)
        self._head: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self.handler: asyncio.Task[None] | None = None
        """The proxy serving the other end: cancelled when the caller resets."""
        self.proxy_end = _ProxyEnd(self)
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def readable_now(self) -> bool:
        return self.response_body.readable_now

    @property
    def done(self) -> bool:
        """Nothing more will happen, and every byte of the answer was read."""
        if self.response_body.error is not None:
            return True
        return self.request.ended and self.response_body.ended and self.response_body.drained

    async def response(self) -> ResponseReceived:
        return await self._head

    async def read(self) -> bytes:
        chunk = await self.response_body.read()
        self.bytes_received += len(chunk)
        return chunk

    async def write(self, data: bytes | memoryview) -> None:
        self.bytes_sent += await self.request.write(data)

    def end(self) -> None:
        self.request.end()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        """The caller gives the request up: the proxy's end fails and its work is cancelled."""
        if self._fail(code, message, by_caller=True) and self.handler is not None:
            self.handler.cancel()

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

    def _fail(self, code: ErrorCode, message: str, *, by_caller: bool) -> bool:
        """Fail both ends (each sees the error as its peer's or its own); False if failed.
        What the side giving up has not read goes at once."""
        if self.response_body.error is not None:
            return False
        (self.response_body if by_caller else self.request).drop()
        self.response_body.fail(StreamResetError(code, message, remote=not by_caller))
        self.request.fail(StreamResetError(code, message, remote=by_caller))
        if not self._head.done():
            self._head.set_exception(StreamResetError(code, message, remote=not by_caller))
            self._head.exception()  # nobody may await it any more: mark it seen
        return True


class _ProxyEnd:
    """The end of a `DirectStream` that `kubeproxy.Proxy` serves (a `ProxiedStream`)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: DirectStream) -> None:
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
        await self._stream.response_body.write(data)

    def respond(self, status: int, headers: Headers = (), *, end_stream: bool = False) -> None:
        self._stream.respond(status, headers, end_stream=end_stream)

    def end(self) -> None:
        self._stream.response_body.end()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        self._stream._fail(code, message, by_caller=False)


# -- one plane ----------------------------------------------------------------------------------


class DirectPlane:
    """One direct plane's credentials as an upstream, its pool and its proxy, and the requests
    open through them."""

    def __init__(
        self, plane: PlaneRef, credentials: DirectCredentials, settings: DirectSettings
    ) -> None:
        self.plane = plane
        self.credentials = credentials
        self.server = credentials.server.rstrip("/")
        self._settings = settings
        self._log: structlog.stdlib.BoundLogger = log.bind(plane=str(plane), server=self.server)
        self.upstream = upstream_for(plane, credentials)
        self.metrics = ProxyMetrics(prefix="planelink_gateway_direct")
        """A registry of its own per plane: the pool's gauges are per pool."""
        self.pool = ConnectionPool(
            self.upstream,
            max_idle=settings.pool_max_idle,
            idle_timeout=settings.pool_idle_timeout,
            connect_timeout=settings.connect_timeout,
            metrics=self.metrics,
        )
        self.proxy = Proxy(
            pool=self.pool,
            metrics=self.metrics,
            response_timeout=settings.response_timeout,
            logger=self._log,
        )
        self._ca = x509.load_pem_x509_certificates(credentials.ca_pem)[0]
        self._streams: dict[DirectStream, asyncio.Task[None]] = {}
        self._budget = _Budget(settings.plane_buffer_bytes)
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_id = 1
        self.streams_opened = 0
        self._bytes_done = (0, 0)
        """Bytes (to the plane, from the plane) of the streams already ended."""
        self.connected_at = time.time()
        self.draining = False
        self.closed = False

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def open_stream(
        self, *, method: str, path: str, headers: Headers, end_stream: bool, upgrade: bool
    ) -> DirectStream:
        """Start serving one request. Raises StreamResetError(REFUSED_STREAM) when the plane
        has `max_streams` open, or is closing (safe to retry)."""
        if self.closed or self.draining:
            raise StreamResetError(ErrorCode.REFUSED_STREAM, "the plane is closing", remote=True)
        if len(self._streams) >= self._settings.max_streams:
            raise StreamResetError(
                ErrorCode.REFUSED_STREAM,
                f"{self._settings.max_streams} requests are open to the plane",
                remote=True,
            )
        stream_id, self._next_id = self._next_id, self._next_id + 1
        stream = DirectStream(
            stream_id, buffer_bytes=self._settings.buffer_bytes, budget=self._budget
        )
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
        task = asyncio.create_task(self._serve(stream, request), name=f"direct-{stream_id}")
        stream.handler = task
        self._streams[stream] = task
        self._idle.clear()
        self.streams_opened += 1
        return stream

    async def _serve(self, stream: DirectStream, request: RequestReceived) -> None:
        """Run the proxy on the stream's far end; whatever way it ends, the caller hears."""
        end = stream.proxy_end
        try:
            await self.proxy.handle(end, request)
        except StreamResetError as error:
            end.reset(error.code, error.message)
        except Exception:
            self._log.exception("direct request failed", stream_id=stream.stream_id)
            end.reset(ErrorCode.INTERNAL_ERROR, "the gateway failed to handle the request")
        else:
            if end.answered:
                stream.request.discard()  # the rest of an upload is not needed
            elif not stream.done:
                end.reset(ErrorCode.INTERNAL_ERROR, "the proxy returned without answering")
        finally:
            del self._streams[stream]
            sent, received = self._bytes_done
            self._bytes_done = (sent + stream.bytes_sent, received + stream.bytes_received)
            if not self._streams:
                self._idle.set()

    async def fetch(self, path: str, *, limit: float) -> PlaneAnswer:
        """GET `path` through the pool within `limit` seconds. Raises PlaneUnreachable."""
        try:
            async with asyncio.timeout(limit):
                status, body = await self.proxy.fetch(path, body_limit=_PROBE_BODY_LIMIT * 4)
        except UpstreamError as error:
            raise PlaneUnreachable(error.kind, f"{self.server}: {error.message}") from error
        except UpstreamCredentialsError as error:
            raise PlaneUnreachable("credentials", f"{self.server}: {error}") from error
        except TimeoutError:
            raise PlaneUnreachable(
                "timeout", f"{self.server}: no answer within {limit:g} s"
            ) from None
        text = body.decode("utf-8", errors="replace")[:_PROBE_BODY_LIMIT].strip()
        return PlaneAnswer(url=self.server + path, status=status, body=text)

    def drain(self) -> None:
        """No new requests; the open ones go on."""
        self.draining = True

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def close(self, reason: str) -> list[asyncio.Task[None]]:
        """End every open request now (their callers hear the plane went away) and the idle
        connections; the handlers to await."""
        self.closed = True
        tasks = list(self._streams.values())
        for stream in list(self._streams):
            stream.proxy_end.reset(ErrorCode.CONNECTION_LOST, reason)
        for task in tasks:
            task.cancel()
        self.pool.close()
        return tasks

    def describe(self) -> dict[str, object]:
        """This plane as /planes shows an agent (the gateway is its one agent)."""
        sent, received = self._bytes_done
        for stream in self._streams:
            sent, received = sent + stream.bytes_sent, received + stream.bytes_received
        ca = certs.describe(self._ca)
        return {
            "agentId": DIRECT_AGENT_ID,
            "direct": True,
            "remoteAddress": self.server,
            "connectedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_at)),
            "lastHeartbeatSecondsAgo": 0.0,
            "rttSeconds": None,
            "openStreams": self.open_streams,
            "streamsOpened": self.streams_opened,
            "bytesToAgent": sent,
            "bytesFromAgent": received,
            "draining": self.draining,
            "identity": {IDENTITY_PLANE: str(self.plane), IDENTITY_AGENT_ID: DIRECT_AGENT_ID},
            "certificate": {
                "subject": ca.subject,
                "notAfter": ca.not_after.isoformat(),
                "sha256": ca.sha256_fingerprint,
            },
        }


@dataclass(frozen=True)
class _Unservable:
    """Credentials that make no upstream (a bad server URL, an unusable CA)."""

    credentials: DirectCredentials
    problem: str


# -- every plane ----------------------------------------------------------------------------------


class DirectPlanes:
    """The direct planes the reconciler resolved, each served through its own pool: the
    reconciler's `gateway.interfaces.DirectPlaneSink`, and the caller endpoint's backends."""

    def __init__(
        self, *, settings: DirectSettings | None = None, metrics: GatewayMetrics | None = None
    ) -> None:
        self._settings = settings or DirectSettings()
        self._metrics = metrics
        self._current: dict[PlaneRef, DirectPlane | _Unservable] = {}
        self._retiring: set[DirectPlane] = set()
        """Replaced planes still finishing their open requests."""
        self._tasks: set[asyncio.Task[None]] = set()
        if metrics is not None:
            metrics.watch_agents(self.samples)

    # -- the reconciler's port ----------------------------------------------------------------

    def set(self, plane: PlaneRef, credentials: DirectCredentials) -> bool:
        current = self._current.get(plane)
        if current is not None and current.credentials == credentials:
            return False
        served: DirectPlane | _Unservable
        try:
            served = DirectPlane(plane, credentials, self._settings)
        except (UpstreamConfigError, ValueError) as error:
            log.error("cannot serve direct plane", plane=str(plane), error=str(error))
            served = _Unservable(credentials, str(error))
        self._current[plane] = served
        if isinstance(current, DirectPlane):
            self._retire(current)
        if isinstance(served, DirectPlane):
            log.info("direct plane served", plane=str(plane), server=served.server)
            if self._metrics is not None:
                self._metrics.agent_connects.labels(plane=str(plane)).inc()
        return True

    def remove(self, plane: PlaneRef) -> bool:
        current = self._current.pop(plane, None)
        if current is None:
            return False
        if isinstance(current, DirectPlane):
            log.info("direct plane removed: closing it", plane=str(plane))
            self._await(current.close("the plane is no longer reached directly"))
        return True

    def serves(self, plane: PlaneRef) -> bool:
        return plane in self._current

    async def fetch(self, plane: PlaneRef, path: str, *, limit: float) -> PlaneAnswer:
        current = self._current[plane]
        if isinstance(current, _Unservable):
            raise PlaneUnreachable("config", f"{current.credentials.server}: {current.problem}")
        return await current.fetch(path, limit=limit)

    # -- the caller endpoint's and the operator's view ---------------------------------------

    def backend(self, plane: PlaneRef) -> DirectPlane | None:
        """The plane's current `DirectPlane`, if it is direct and can be served."""
        current = self._current.get(plane)
        return current if isinstance(current, DirectPlane) else None

    def served(self) -> Iterator[DirectPlane]:
        for current in self._current.values():
            if isinstance(current, DirectPlane):
                yield current

    def samples(self) -> Iterator[AgentSample]:
        for served in self.served():
            yield AgentSample(
                plane=str(served.plane),
                agent_id=DIRECT_AGENT_ID,
                rtt=None,
                open_streams=served.open_streams,
            )

    async def stop(self) -> None:
        """Close every plane and wait until their requests have ended."""
        for served in (*self.served(), *self._retiring):
            self._await(served.close("gateway stopping"))
        self._current.clear()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- retiring -----------------------------------------------------------------------------

    def _retire(self, previous: DirectPlane) -> None:
        previous.drain()
        self._retiring.add(previous)
        self._spawn(self._close_after_grace(previous), f"direct-drain-{previous.plane}")

    async def _close_after_grace(self, previous: DirectPlane) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.drain_grace):
                    await previous.wait_idle()
            await asyncio.gather(*previous.close("drain grace over"), return_exceptions=True)
        finally:
            self._retiring.discard(previous)

    def _await(self, handlers: list[asyncio.Task[None]]) -> None:
        if handlers:
            self._spawn(_gathered(handlers), "direct-close")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _gathered(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
