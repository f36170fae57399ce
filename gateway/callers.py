"""The caller endpoint: `https://<gateway>/planes/<namespace>/<name>/k8s/...` behaves like the
plane's API server, so a kubeconfig whose `server` is that URL works with kubectl unchanged.

Each caller request becomes one stream to the plane (`CallerStream`): a tunnel stream to one of
its agents, or, for a direct-mode plane, a `kubeproxy.LocalStream` to its API server through
the gateway's own pool (`gateway.direct`). Bodies stream both ways with backpressure: a slow
caller slows the agent's reads through the tunnel's windows, and nothing is buffered whole.
Watches, `logs -f` and upgraded streams (exec, attach, port-forward) have no deadline; other
requests have `request_timeout`. When the caller goes away, the stream
is reset and the agent stops its upstream request; when the agent goes away, the caller gets a
503 at once (or, if the response had started, its connection is cut so it cannot mistake a
truncated body for a whole one).

Every byte written to a caller is framed by the gateway (`http1.framing`): an
agent's body is counted against the length its head announced, so no agent can end an answer
early and write another into the caller's connection. An agent response that cannot be framed
is a 502 (or, once the head is out, a cut connection) and resets only its stream.

Every refusal is a Kubernetes `Status` body with the matching HTTP status, a log line and a
metric, and ends the connection (`Connection: close`) without reading the request's body. Its
message is also a `Warning` (which kubectl prints where it would not show the Status's), and a
plane without an agent gets no `Retry-After` (`_CallerExchange._nowhere` says why).

Every request gets an id of the gateway's (`gateway.access_log`): in the caller's answer
(`Planelink-Request-Id`), to the agent and a peer with the request, and in the request's
`access` line, written when the request ends.

Callers authenticate with a client certificate signed by the caller CA and/or a bearer
token, and may be authorized per plane by RBAC in the control plane (`gateway.auth`), once per
request before a stream is opened. Caller-supplied `Impersonate-*` headers are refused and
`Authorization` never reaches the agent; with `impersonate` the gateway adds its own
`Impersonate-User`/`-Group` naming the authenticated caller.

Several replicas: a request for a plane this replica holds no tunnel to goes to a peer that
holds one (`Forwarder`, `gateway.peers.forward`), relayed the same way. The same endpoint, in
peer mode (`PeerPort`), is each replica's peer listener (`gateway.peers.listener`): its callers
are replicas authenticated by the peer CA, the forwarding replica vouches for the caller
(`Planelink-Forwarded-By`, `Planelink-Caller`; nobody is authenticated again), the
`Impersonate-*` it asserted passes on, and it serves only from its own tunnels and direct
planes — a forwarded request is never forwarded again. A caller's `Planelink-*` field is
refused (400) on the caller port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import structlog

from certs import InvalidPlaneRefError, PlaneRef, plane_ref
from gateway.acceptor import LINGERING_CLOSE_SECONDS, Admitted, TlsAcceptor
from gateway.access_log import AccessRecord, adopted_request_id, log_access, new_request_id
from gateway.admission import AdmissionSettings, Refusal
from gateway.agents import AgentRegistry
from gateway.auth import (
    AuthRefused,
    CallerAuth,
    CallerAuthSettings,
    CallerIdentity,
    certificate_identity,
)
from gateway.callers_h2 import H2CallerConnection, H2CallerStream
from gateway.console.refusals import RecentRefusal, RecentRefusals
from gateway.metrics import GatewayMetrics
from gateway.trust import TrustRegistry
from http1 import (
    FORWARDED_BY,
    FORWARDED_CALLER,
    FROM_PEER,
    MAX_HEADER_FIELDS,
    PEER_REFUSED,
    PLANELINK_PREFIX,
    READ_SIZE,
    REQUEST_ID,
    TO_AGENT,
    FramingError,
    HttpError,
    MessageReader,
    RequestHead,
    ResponseFramer,
    header_value,
    reason_phrase,
    response_head_bytes,
    status_body,
    status_class,
    status_headers,
    warning_header,
)
from http2.server import ConnectionFailed, ServerLimits
from http2.server import ErrorCode as H2ErrorCode
from protocol import ErrorCode, Header, Headers, HeadTooLarge, ResponseReceived
from protocol.headers import HeaderBlockError, check_value
from tunnel import SessionClosed, StreamResetError
from tunnel.deadline import Deadline, DeadlineQueue

log = structlog.get_logger("gateway.callers")

PLANES_PREFIX = "/planes/"
K8S_SEGMENT = "k8s"
_MAX_PENDING_PIECES = 48  # pieces gathered into one write at most (each up to one DATA frame)


@dataclass(frozen=True)
class CallerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - callers come from the control plane's network
    port: int = 6443
    request_timeout: float = 60.0
    """Deadline of a request that is not a watch, a follow or an upgrade."""
    retry_after: int = 5
    """Seconds a caller is told to wait when every agent of the plane is at its stream limit
    (429), or the plane's agent left in the middle of its request (503)."""
    agent_wait: float = 3.0
    """Seconds after the last agent of a plane left during which a request for the plane waits
    for one to come back, rather than being answered 503 at once (`_agent_came_back`)."""
    access_log: bool = True
    """One `access` line per request (`gateway.access_log`)."""
    max_head_bytes: int = 64 * 1024
    head_timeout: float = 10.0
    """From a request's first byte to the end of its head (a slowloris caller is cut here)."""
    idle_timeout: float = 60.0
    """A connection with no request in flight is closed after this long."""
    """Bytes of a request head, and of the chunk framing (extensions, trailer) between two body
    bytes, at most (431)."""
    max_header_fields: int = MAX_HEADER_FIELDS
    """Header fields of a request, and trailer fields apart, at most (431)."""
    http2: bool = True
    """Offer HTTP/2 in ALPN (`h2`, then `http/1.1`): kubectl and client-go then put all their
    requests and watches on one connection. Upgrades (exec, port-forward) stay on HTTP/1.1
    connections, which client-go opens for them itself."""
    http2_limits: ServerLimits = field(default_factory=ServerLimits)
    """What one HTTP/2 connection may use (`http2.server.ServerLimits`)."""
    backlog: int = 1024
    """Connections queued by the kernel before they are accepted (asyncio's default: 100)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, beside the other workers of one gateway (`--workers`)."""
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    auth: CallerAuthSettings = field(default_factory=CallerAuthSettings)


class CallerRefused(Exception):
    """A request answered by the gateway itself, with a Kubernetes Status."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        retry_after: int | None = None,
        elsewhere: bool = False,
        plain: bool = False,
    ) -> None:
        super().__init__(message)
        self.plain = plain
        """Answered in text, not as a Status: where the API server does so itself."""
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.elsewhere = elsewhere
        """Another replica may serve it (this one has no agent, or no room, for the plane):
        on the peer port the answer says so (`Planelink-Refused`), and the forwarding replica
        tries its next peer instead of passing it on."""


@dataclass(frozen=True)
class Route:
    plane: PlaneRef
    path: str
    """Origin-form target for the plane's API server: path and query."""
    long_running: bool


def route(target: str) -> Route:
    """Split `/planes/<ns>/<name>/k8s/<rest>?<query>` into the plane and `/<rest>?<query>`."""
    url = urlsplit(target)
    if url.scheme or url.netloc or not url.path.startswith(PLANES_PREFIX):
        raise CallerRefused(
            404, "NotFound", f"no endpoint at {url.path}; use /planes/<ns>/<name>/k8s/"
        )
    parts = url.path[len(PLANES_PREFIX) :].split("/", 3)
    if len(parts) < 3 or parts[2] != K8S_SEGMENT:
        raise CallerRefused(
            404, "NotFound", f"no endpoint at {url.path}; use /planes/<ns>/<name>/k8s/"
        )
    plane = _checked_plane(parts[0], parts[1])
    rest = "/" + (parts[3] if len(parts) == 4 else "")
    path = rest + (f"?{url.query}" if url.query else "")
    return Route(plane=plane, path=path, long_running=_is_long_running(rest, url.query))


_PLANES_SEEN_LIMIT = 4096
_planes_seen: dict[tuple[str, str], PlaneRef] = {}
"""Planes named in request targets and found valid: checking the two labels each time was a
percent of a request. Emptied when full, so it holds at most `_PLANES_SEEN_LIMIT` whatever
callers send."""


def _checked_plane(namespace: str, name: str) -> PlaneRef:
    """The plane `namespace`/`name`, or 404 if that is no valid plane reference."""
    if (known := _planes_seen.get((namespace, name))) is not None:
        return known
    try:
        plane = plane_ref(namespace=namespace, name=name)
    except InvalidPlaneRefError as error:
        raise CallerRefused(404, "NotFound", str(error)) from error
    if len(_planes_seen) >= _PLANES_SEEN_LIMIT:
        _planes_seen.clear()
    _planes_seen[(namespace, name)] = plane
    return plane


def check_request_line(head: RequestHead) -> None:
    """Refuse what HTTP/1.1 forbids or this gateway never relays, before anything else: a
    CONNECT (the gateway is no forward proxy) and an HTTP/1.1 request without exactly one
    `Host` (RFC 9112 §3.2: a server must answer it 400)."""
    if head.method == "CONNECT":
        raise CallerRefused(405, "MethodNotAllowed", "the gateway does not relay CONNECT")
    if head.http_version == "1.1":
        hosts = sum(1 for key, _ in head.headers if key.lower() == b"host")
        if hosts != 1:
            raise CallerRefused(
                400, "BadRequest", f"an HTTP/1.1 request needs exactly one Host header, not {hosts}"
            )


def _is_long_running(path: str, query: str) -> bool:
    # The same notion as the API server's: watches and follows stream for as long as they like.
    if "watch" in query or "follow" in query:  # parsed only then: it runs for every request
        params = parse_qs(query)
        if any(value in ("true", "1") for value in params.get("watch", [])):
            return True
        if any(value in ("true", "1") for value in params.get("follow", [])):
            return True
    return "/watch/" in path or path.endswith(("/exec", "/attach", "/portforward", "/proxy"))


def forwarded_headers(head: RequestHead) -> list[Header]:
    """The caller's headers as the agent should see them (`http1.TO_AGENT`)."""
    if (refused := TO_AGENT.refused_field(head.headers)) is not None:
        # Named as HTTP/1.1 spells it, whichever version the caller spoke (HTTP/2 lowers names).
        name = "-".join(part.capitalize() for part in refused.decode("latin-1").split("-"))
        if refused.lower().startswith(PLANELINK_PREFIX):
            raise CallerRefused(
                400, "BadRequest", f"{name} is for the gateway's replicas, not for callers"
            )
        raise CallerRefused(403, "Forbidden", f"the gateway does not accept {name} from callers")
    return TO_AGENT.apply(head.headers, upgrade=head.upgrade)


def vouched_identity(head: RequestHead) -> tuple[str, CallerIdentity]:
    """The forwarding replica and the caller it vouches for, from a peer's request; a request
    without exactly one of each field is refused (400)."""
    found: dict[bytes, list[bytes]] = {FORWARDED_BY: [], FORWARDED_CALLER: []}
    for key, value in head.headers:
        if (values := found.get(key.lower())) is not None:
            values.append(value)
    for name, values in found.items():
        if len(values) != 1 or not values[0]:
            raise CallerRefused(
                400, "BadRequest", f"a peer's request needs one non-empty {name.decode()} field"
            )
    forwarded_by = found[FORWARDED_BY][0].decode("utf-8", errors="replace")
    user = found[FORWARDED_CALLER][0].decode("utf-8", errors="replace")
    return forwarded_by, CallerIdentity(user=user, method="peer")


def _identity_fields(fields: list[Header]) -> list[Header]:
    """Fields the gateway writes from a caller's identity (a certificate's names, a token's
    user), checked: a direct plane's or a peer's HTTP/1.1 head is written as is, so a name with
    CR or LF would add fields of the caller's choosing there (a tunnel refuses it anyway)."""
    for name, value in fields:
        try:
            check_value(name.decode("latin-1"), value)
        except HeaderBlockError as error:
            raise CallerRefused(
                400, "BadRequest", f"the caller's identity cannot be passed on: {error}"
            ) from error
    return fields


def unknown_plane_message(plane: PlaneRef) -> str:
    """What a caller of a plane the gateway does not know is told (404)."""
    return (
        f"dataplane {plane} not found: this gateway knows no DataPlane {plane.name!r} in "
        f"namespace {plane.namespace!r}; list the planes with `kubectl get dataplanes -A` in "
        "the control plane, or `planelink status`"
    )


def no_agent_message(
    plane: PlaneRef, *, left_at: float | None, started_at: float, now: float
) -> str:
    """What a caller of a plane without a connected agent is told (503): since when, and what
    to check."""
    if left_at is not None:
        since = f"the last one disconnected {_duration(now - left_at)} ago"
    else:
        since = f"none has connected since the gateway started {_duration(now - started_at)} ago"
    return (
        f"no agent of dataplane {plane} is connected ({since}); check that the plane's agent "
        "is running and reaches the gateway (its log says why not), and the plane's agents in "
        "`planelink status`"
    )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def plane_path(route: Route) -> str:
    """The caller's target again, as a peer replica's listener serves it."""
    return f"{PLANES_PREFIX}{route.plane.namespace}/{route.plane.name}/{K8S_SEGMENT}{route.path}"


class CallerStream(Protocol):
    """What relaying one request needs of the stream that carries it to the plane: a tunnel
    stream (`tunnel.TunnelStream`) or a direct plane's (`kubeproxy.LocalStream`). Its
    operations raise StreamResetError once either side reset it."""

    @property
    def readable_now(self) -> bool:
        """`read()` would return without waiting."""
        ...

    @property
    def at_end(self) -> bool:
        """All of the answer was read and it ended: `read()` would return b"" now."""
        ...

    @property
    def done(self) -> bool:
        """Nothing more will happen on the stream, and all of the answer was read."""
        ...

    async def response(self) -> ResponseReceived: ...

    async def read(self) -> bytes | memoryview: ...

    async def write(self, data: bytes | memoryview) -> None: ...

    def end(self) -> None: ...

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None: ...


class StreamOpener(Protocol):
    """Where a request's stream is opened: an agent's tunnel session or a direct plane."""

    def open_stream(
        self, *, method: str, path: str, headers: Headers, end_stream: bool, upgrade: bool
    ) -> CallerStream:
        """Raises StreamResetError (REFUSED_STREAM: no room now, try elsewhere; another code:
        the request cannot be carried) and SessionClosed (gone: try elsewhere)."""
        ...


class PeerBackend(StreamOpener, Protocol):
    """A peer replica holding a tunnel to the plane (`gateway.peers.forward.PeerLink`); its
    streams take the caller's whole `/planes/...` target as their path."""

    @property
    def replica_id(self) -> str: ...

    async def reachable(self) -> bool:
        """Whether a connection to it can be had now (within its connect deadline)."""
        ...


class Forwarder(Protocol):
    """Where a request goes when this replica holds no tunnel to its plane
    (`gateway.peers.forward.PeerForwarder`)."""

    @property
    def own_id(self) -> str: ...

    def peers_for(self, plane: PlaneRef) -> Sequence[PeerBackend]:
        """The peers holding a tunnel to `plane`, in the order to try them."""
        ...


Document = tuple[bytes, bytes]
"""A peer endpoint's answer: its content type and body."""


@dataclass(frozen=True)
class PeerPort:
    """The endpoint as a replica's peer listener: its connections come from peer replicas
    (the TLS handshake demanded a certificate from the peer CA), which vouch for their callers.
    `documents` are the GET paths it answers itself (`/peer/v1/planes`, `/peer/v1/metrics`)."""

    documents: Mapping[str, Callable[[], Document]] = field(default_factory=dict)


class DirectBackends(Protocol):
    """The planes the gateway reaches directly (`gateway.direct.DirectPlanes`)."""

    def backend(self, plane: PlaneRef) -> StreamOpener | None: ...


class CallerEndpoint:
    """Serves callers over HTTPS (HTTP/1.1, and HTTP/2 where ALPN picked it) and relays their
    requests to their planes."""

    def __init__(
        self,
        *,
        settings: CallerSettings,
        ssl_context: ssl.SSLContext,
        trust: TrustRegistry,
        agents: AgentRegistry,
        metrics: GatewayMetrics,
        direct: DirectBackends | None = None,
        forwarder: Forwarder | None = None,
        peer_port: PeerPort | None = None,
        refusals: RecentRefusals | None = None,
        replica: str = "",
    ) -> None:
        """`forwarder`: the peers to forward to (None: none); `peer_port`: serve as the peer
        listener (never together with a forwarder: at most one hop); `refusals`: where refused
        callers are kept for the console; `replica`: this replica's id, for the access log."""
        if forwarder is not None and peer_port is not None:
            raise ValueError("the peer listener never forwards")
        self.name = "peer" if peer_port is not None else "caller"
        self._settings = settings
        self._ssl = ssl_context
        self._trust = trust
        self._agents = agents
        self._direct = direct
        self._forwarder = forwarder
        self._peer_port = peer_port
        self.replica = replica
        self._metrics = metrics
        self._refusals = refusals
        self.auth = CallerAuth(settings.auth, metrics)
        self._acceptor: TlsAcceptor | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._h2_connections: set[H2CallerConnection] = set()
        self._exchanges = 0
        """Requests being relayed now (what a stop waits for)."""
        self._no_exchanges = asyncio.Event()
        self._no_exchanges.set()
        self._closing = False

    @property
    def port(self) -> int:
        port: int = self.acceptor.listener.getsockname()[1]
        return port

    @property
    def acceptor(self) -> TlsAcceptor:
        assert self._acceptor is not None
        return self._acceptor

    @property
    def closing(self) -> bool:
        """Stopped accepting; finishing the requests in flight."""
        return self._closing

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        settings = self._settings
        self._acceptor = TlsAcceptor(
            self.name,
            settings=settings.admission,
            tls_context=lambda: self._ssl,
            protocol_factory=self._new_connection,
            on_tls_failure=self._tls_refused,
            tls_failure_event=f"{self.name} refused in the TLS handshake",
            metrics=self._metrics,
        )
        self._acceptor.listen(
            settings.host, settings.port, backlog=settings.backlog, reuse_port=settings.reuse_port
        )
        self._acceptor.serve()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop accepting; the requests in flight get up to `grace` seconds to finish (a watch
        is cut after that), then every connection closes. No connection starts another request
        meanwhile."""
        if self._acceptor is None:
            return
        await self._acceptor.close()
        self._closing = True
        for connection in self._h2_connections:
            connection.goaway()  # the caller sends its next requests elsewhere
        if self._exchanges:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._no_exchanges.wait()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _new_connection(self, admitted: Admitted) -> asyncio.Protocol:
        reader = asyncio.StreamReader(limit=READ_SIZE)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve_connection(reader, writer, admitted)

        return asyncio.StreamReaderProtocol(reader, serve)

    def _tls_refused(self, reason: str, detail: str) -> None:
        if self._peer_port is None:  # the peer port's count: connections_refused{port="peer"}
            self._metrics.caller_errors.labels(reason=reason).inc()

    # -- one caller connection ------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, admitted: Admitted
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        caller = _caller_name(writer)
        # The TLS session's certificate is the same for every request on the connection.
        certificate = certificate_identity(writer.get_extra_info("peercert"))
        tls = writer.get_extra_info("ssl_object")
        try:
            if tls is not None and tls.selected_alpn_protocol() == "h2":
                await self._serve_h2(reader, writer, admitted, caller, certificate)
            else:
                await self._serve_h1(reader, writer, admitted, caller, certificate)
        except (ConnectionError, ssl.SSLError):
            pass  # the caller went away; its streams were reset by the exchange
        except Exception:
            # A bug, not the caller: say so, and close this one connection cleanly.
            log.exception("caller connection failed", caller=caller)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=5)

    async def _serve_h1(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        admitted: Admitted,
        caller: str,
        certificate: CallerIdentity | None,
    ) -> None:
        """An HTTP/1.1 connection: one exchange after the other, in this task."""
        on_caller_port = self._peer_port is None
        if on_caller_port:
            self._metrics.caller_connections_by_protocol.labels("http1").inc()
        requests = self._metrics.requests_by_protocol.labels("http1")
        http = MessageReader(
            reader,
            "request",
            max_head_bytes=self._settings.max_head_bytes,
            max_header_fields=self._settings.max_header_fields,
        )
        # The idle, head and request deadlines of every request, on one timer.
        deadline = Deadline(asyncio.current_task())
        try:
            while (head := await self._next_request(http, writer, admitted, deadline)) is not None:
                if on_caller_port:
                    requests.inc()
                exchange = _Http1Exchange(
                    self, http, writer, head, caller=caller, certificate=certificate
                )
                exchange.deadline = deadline
                exchange.on_admitted = admitted.authenticate
                if not await self._run_exchange(exchange) or self._closing:
                    break
        except HttpError as error:
            await _write_status(
                writer, CallerRefused(error.status, "BadRequest", error.message), close=True
            )
            await _linger(http, writer)
            self._metrics.caller_errors.labels(reason="BadRequest").inc()
            log.info("bad request from caller", caller=caller, detail=error.message)
        finally:
            deadline.close()

    async def _run_exchange(self, exchange: _CallerExchange) -> bool:
        """Run one exchange, counted among those a stop waits for."""
        self._exchanges += 1
        self._no_exchanges.clear()
        try:
            return await exchange.run()
        finally:
            self._exchanges -= 1
            if not self._exchanges:
                self._no_exchanges.set()

    async def _serve_h2(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        admitted: Admitted,
        caller: str,
        certificate: CallerIdentity | None,
    ) -> None:
        """An HTTP/2 connection: each stream is one exchange, run by the connection's task."""
        settings = self._settings
        address = _peer_address(writer)
        metrics = self._metrics
        requests = metrics.requests_by_protocol.labels("http2")
        deadlines = DeadlineQueue()  # the streams' request deadlines, on one timer

        async def exchange(channel: H2CallerStream) -> None:
            if self._closing:
                channel.reset(H2ErrorCode.REFUSED_STREAM)  # retried on another connection
                return
            arrived = channel.head
            head = RequestHead(
                method=arrived.method.decode("latin-1"),
                target=arrived.path.decode("latin-1"),
                headers=arrived.headers,
                keep_alive=True,
                upgrade=False,
                has_body=not arrived.end_stream,
                http_version="2",
            )
            requests.inc()
            relay = _Http2Exchange(
                self,
                channel,
                head,
                caller=caller,
                certificate=certificate,
                address=address,
                authenticated=lambda: admitted.authenticated,
            )
            relay.on_admitted = admitted.authenticate
            relay.deadline = deadlines
            try:
                await self._run_exchange(relay)
            except (ConnectionError, ssl.SSLError):
                pass  # the caller reset the stream or left; the exchange reset its stream
            except Exception:
                log.exception("caller stream failed", caller=caller, request_id=relay.request_id)
            if relay.goaway_after:
                connection.goaway()

        def idle() -> None:
            admitted.dropped(Refusal.IDLE_TIMEOUT, f"no request for {settings.idle_timeout}s")

        def failed(failure: ConnectionFailed) -> None:
            try:
                code = H2ErrorCode(failure.code).name
            except ValueError:
                code = "UNKNOWN"
            metrics.http2_connection_errors.labels(code=code).inc()
            log.warning(
                "caller's HTTP/2 connection ended",
                caller=caller,
                address=address,
                reason=failure.reason,
                code=code,
            )

        connection = H2CallerConnection(
            reader,
            writer,
            limits=settings.http2_limits,
            on_request=exchange,
            idle_timeout=settings.idle_timeout,
            on_idle=idle,
            on_failure=failed,
        )
        self._h2_connections.add(connection)
        metrics.caller_connections_by_protocol.labels("http2").inc()
        try:
            await connection.serve()
        finally:
            self._h2_connections.discard(connection)
            deadlines.close()

    async def _next_request(
        self,
        http: MessageReader,
        writer: asyncio.StreamWriter,
        admitted: Admitted,
        deadline: Deadline,
    ) -> RequestHead | None:
        """The next request's head under the idle and head deadlines (on the connection's
        `deadline`); None when the caller closed or idled out (a slow head is answered 408
        first)."""
        settings = self._settings
        try:
            async with deadline.within(settings.idle_timeout):
                if not await http.wait_for_message():
                    return None
        except TimeoutError:
            admitted.dropped(Refusal.IDLE_TIMEOUT, f"no request for {settings.idle_timeout}s")
            return None
        try:
            async with deadline.within(settings.head_timeout):
                return await http.next_request()
        except TimeoutError:
            detail = f"the request head took over {settings.head_timeout}s"
            admitted.dropped(Refusal.HEAD_TIMEOUT, detail)
            self._metrics.caller_errors.labels(reason="Timeout").inc()
            await _write_status(writer, CallerRefused(408, "Timeout", detail), close=True)
            return None


class _CallerExchange:
    """One caller request relayed through one stream: what HTTP/1.1 and HTTP/2 share (routing,
    authentication, opening the stream, retries, metrics, the access line). How the answer is
    written is the subclass's: `_Http1Exchange`, `_Http2Exchange`."""

    protocol = "http1"
    """The caller's HTTP version, as metrics name it."""

    def __init__(
        self,
        endpoint: CallerEndpoint,
        head: RequestHead,
        *,
        caller: str,
        certificate: CallerIdentity | None,
        address: str,
    ) -> None:
        self.endpoint = endpoint
        self.certificate = certificate
        self.address = address
        """The caller's `address:port`."""
        self.head = head
        self.caller = caller
        self.started = time.monotonic()
        self.head_written = False
        self.status = 0
        self.plane = "unrouted"
        self.on_admitted: Callable[[], None] = _nothing
        """Told when the caller is authenticated (its connection leaves the anonymous budget)."""
        self.body_error: HttpError | None = None
        self.sending: asyncio.Task[None] | None = None
        self.tried: set[int] = set()
        """The backends (ids) asked for this request so far."""
        self.opened_on: int | None = None
        """The local backend (id) of the stream now open; None for a peer's."""
        """Reads the request body into the stream while the response comes back."""
        self.forwarded_by = ""
        """On the peer port: the replica that forwarded this request."""
        self.forwarded_to = ""
        """The peer replica this request was forwarded to, if it was."""
        self.access = AccessRecord(
            request_id=new_request_id(),
            replica=endpoint.replica,
            method=head.method,
            target=head.target,
            caller=caller,
            protocol=self.protocol,
        )
        """The access log's record of this request (its id is also the caller's and agent's)."""
        self.logged = True
        """Whether the request gets an access line."""
        self.deadline: Deadline | DeadlineQueue | None = None
        """Where the request deadline is kept: the connection's `Deadline` (HTTP/1.1, one
        exchange at a time in its task) or its `DeadlineQueue` (HTTP/2, a task per stream);
        None: an `asyncio.timeout` of its own."""

    def _keep_refusal(self, refused: CallerRefused) -> None:
        """Among the recent refusals the console shows."""
        if self.endpoint._refusals is not None:
            self.endpoint._refusals.note(
                RecentRefusal(
                    "caller",
                    refused.reason,
                    refused.message,
                    plane=self.plane,
                    who=self.caller,
                    address=self.address,
                )
            )

    @property
    def request_id(self) -> str:
        return self.access.request_id

    def _own_fields(self) -> list[Header]:
        """The gateway's fields in every answer to the caller."""
        return [(b"Planelink-Request-Id", self.request_id.encode())]

    async def run(self) -> bool:
        """Relay the request; True if the connection may carry another one. Whatever the
        outcome, the request has its access line once it ends."""
        try:
            return await self._run()
        finally:
            if self.endpoint._settings.access_log and self.logged:
                access = self.access
                access.caller = self.caller
                access.plane = "" if self.plane == "unrouted" else self.plane
                access.status = self.status
                access.forwarded_to = self.forwarded_to
                access.forwarded_by = self.forwarded_by
                log_access(access, seconds=time.monotonic() - self.started)

    async def _run(self) -> bool:  # noqa: PLR0911 - one per outcome
        endpoint = self.endpoint
        try:
            self._check_head()
            if (document := self._document()) is not None:
                self.logged = False  # a replica's own document, not a caller's request
                return await self._answer_document(document)
            target = route(self.head.target)
            self.plane = str(target.plane)
            self.access.path = target.path
            identity = await self._admit(target.plane)
            stream = await self._open(target, identity)
        except CallerRefused as refused:
            endpoint._metrics.caller_errors.labels(reason=refused.reason).inc()
            log.info(
                "caller refused",
                caller=self.caller,
                status=refused.status,
                reason=refused.reason,
                detail=refused.message,
                target=self.head.target[:200],
                request_id=self.request_id,
            )
            self._keep_refusal(refused)
            elsewhere = refused.elsewhere and endpoint._peer_port is not None
            extra = [
                *self._own_fields(),
                *([(PEER_REFUSED, refused.reason.encode())] if elsewhere else []),
            ]
            # Its body is never read: a refused caller must not make the gateway work or
            # buffer for it.
            return await self._refuse(
                refused, plain=_wants_plain_refusal(self.head, refused), extra=extra
            )
        metrics = endpoint._metrics
        metrics.streams_active.labels(self.plane).inc()
        try:
            while True:
                try:
                    if target.long_running:
                        return await self._relay(stream)
                    return await self._relay_in_time(stream)
                except StreamResetError as error:
                    if not self._unprocessed(error):
                        raise
                    # The agent refused it unprocessed (its gateway-side tunnel is going away,
                    # or the agent is at its limit): another tunnel or peer may serve it.
                    log.info(
                        "stream refused unprocessed: trying another",
                        detail=error.message,
                        request_id=self.request_id,
                    )
                    stream = await self._open(target, identity)
        except CallerRefused as refused:
            return await self._fail(refused)
        except TimeoutError:
            stream.reset(ErrorCode.CANCEL, "the gateway's request deadline passed")
            return await self._fail(
                CallerRefused(
                    504,
                    "Timeout",
                    f"dataplane {self.plane} did not answer within "
                    f"{endpoint._settings.request_timeout:g}s (the gateway's --request-timeout, "
                    "for requests other than watches, follows and exec): its agent is "
                    "connected, so its API server is slow or does not answer",
                )
            )
        except StreamResetError as error:
            if self.body_error is not None:
                return await self._fail(
                    CallerRefused(self.body_error.status, "BadRequest", self.body_error.message)
                )
            return await self._fail(self._explain_reset(error))
        finally:
            metrics.streams_active.labels(self.plane).dec()
            if not stream.done:
                stream.reset(ErrorCode.CANCEL, "the caller's request ended")

    async def _relay_in_time(self, stream: CallerStream) -> bool:
        """`_relay` under the request deadline (TimeoutError when it passes)."""
        seconds = self.endpoint._settings.request_timeout
        if self.deadline is None:
            async with asyncio.timeout(seconds):
                return await self._relay(stream)
        async with self.deadline.within(seconds):
            return await self._relay(stream)

    def _document(self) -> Callable[[], Document] | None:
        """On the peer port, the answer of a `PeerPort.documents` path; None otherwise."""
        peer_port = self.endpoint._peer_port
        if peer_port is None:
            return None
        document = peer_port.documents.get(urlsplit(self.head.target).path)
        if document is not None and self.head.method != "GET":
            raise CallerRefused(405, "MethodNotAllowed", f"{self.head.target} answers GET only")
        return document

    async def _admit(self, plane: PlaneRef) -> CallerIdentity:
        if self.endpoint._peer_port is not None:
            # TLS proved a peer replica; it authenticated and authorized the caller.
            self.forwarded_by, identity = vouched_identity(self.head)
            self.caller = f"{identity.user} (via {self.forwarded_by})"
            self.access.auth = identity.method
            adopted = adopted_request_id(header_value(self.head.headers, REQUEST_ID))
            if adopted is not None:
                self.access.request_id = adopted  # one id across the replicas
            self.on_admitted()
            return identity
        try:
            identity = await self.endpoint.auth.admit(self.head.headers, self.certificate, plane)
        except AuthRefused as refused:
            raise CallerRefused(
                refused.status,
                refused.reason,
                refused.message,
                retry_after=self.endpoint._settings.retry_after if refused.status == 503 else None,
            ) from refused
        self.caller = identity.user
        self.access.auth = identity.method
        self.on_admitted()
        return identity

    def _headers(self, identity: CallerIdentity) -> list[Header]:
        """The request's fields for the plane: a caller's as TO_AGENT passes them plus the
        gateway's own impersonation; a peer's as FROM_PEER passes them (its impersonation)."""
        own: Header = (REQUEST_ID, self.request_id.encode())
        if self.endpoint._peer_port is not None:
            return [*FROM_PEER.apply(self.head.headers, upgrade=self.head.upgrade), own]
        identity_headers = self.endpoint.auth.forwarded_identity_headers(identity)
        return [*forwarded_headers(self.head), *_identity_fields(identity_headers), own]

    async def _open(self, target: Route, identity: CallerIdentity) -> CallerStream:
        if self.endpoint._trust.get(target.plane) is None:
            self._refuse_while_starting()
            raise CallerRefused(404, "NotFound", unknown_plane_message(target.plane))
        headers = self._headers(identity)
        while True:
            stream, at_limit = await self._open_somewhere(target, headers, identity)
            if stream is not None:
                return stream
            if at_limit or not await self._agent_came_back(target.plane):
                raise self._nowhere(target.plane, at_limit=at_limit)
            self.tried.clear()  # what failed before the wait was gone

    async def _open_somewhere(
        self, target: Route, headers: list[Header], identity: CallerIdentity
    ) -> tuple[CallerStream | None, bool]:
        """A stream on one of this replica's backends, else through a peer; else None, and
        whether an agent was there but at its stream limit."""
        tried = self.tried  # across attempts: a backend that refused it is not asked again
        at_limit = False
        self.opened_on = None
        while (backend := self._backend(target.plane, tried)) is not None:
            tried.add(id(backend))
            try:
                stream = self._open_on(backend, target.path, headers)
            except StreamResetError as error:
                if error.code != ErrorCode.REFUSED_STREAM:
                    # The request itself cannot be carried (its head is too large for the
                    # tunnel, or not valid in it): every replica would refuse it the same way.
                    raise _unrelayable(error) from error
                at_limit = True  # at its stream limit: try another replica
            except SessionClosed:
                pass  # just gone: try another replica
            else:
                self.opened_on = id(backend)
                return stream, at_limit
        return await self._forward(target, headers, identity), at_limit

    async def _agent_came_back(self, plane: PlaneRef) -> bool:
        """Whether to look for an agent again: the plane's last agent left under `agent_wait`
        seconds ago (it is most likely dialling back in), and an agent came or went before
        that time was up. Never on the peer port: the forwarding replica is the one waiting."""
        endpoint = self.endpoint
        left_at = endpoint._agents.left_at(plane)
        if endpoint._peer_port is not None or left_at is None:
            return False
        remaining = left_at + endpoint._settings.agent_wait - time.monotonic()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await endpoint._agents.wait_for_change()
        except TimeoutError:
            return False
        return True

    def _nowhere(self, plane: PlaneRef, *, at_limit: bool) -> CallerRefused:
        """The refusal of a request that no agent, here or at a peer, can take.

        No agent: 503, and a `Retry-After` only while agents are known to be on their way
        back (the gateway has just started). client-go retries any 429 or 5xx that carries
        an integer `Retry-After` (rest/with_retry.go `checkWait`, `retryAfterSeconds`), up to
        10 times (rest/request.go, `maxRetries: 10`), and only then hands the answer to
        kubectl: with the 5 s this answer once had, one kubectl command took minutes and
        ended in "context deadline exceeded", never showing this message. Without it,
        kubectl fails at once and shows why (the message also goes out as a `Warning`, see
        `_write_status`); 503 still tells a tool of its own that trying later may work. An
        agent that is merely reconnecting was waited for already (`_agent_came_back`).

        At its stream limit: 429 with `retry_after`, which client-go should obey: the plane
        is busy, not gone."""
        endpoint = self.endpoint
        startup = endpoint._trust.startup
        returning = startup.retry_after if startup.agents_returning else None
        if at_limit:
            return CallerRefused(
                429,
                "TooManyRequests",
                f"every agent of dataplane {plane} is at its stream limit",
                retry_after=returning or endpoint._settings.retry_after,
                elsewhere=True,
            )
        return CallerRefused(
            503,
            "ServiceUnavailable",
            no_agent_message(
                plane,
                left_at=endpoint._agents.left_at(plane),
                started_at=endpoint._agents.started_at,
                now=time.monotonic(),
            ),
            retry_after=returning,
            elsewhere=True,
        )

    def _unprocessed(self, error: StreamResetError) -> bool:
        """Whether a stream reset may be retried elsewhere: refused unprocessed by a tunnel
        (never by a peer, which says so itself), before any byte of a request without a body
        went out or any answer came back."""
        return (
            error.code == ErrorCode.REFUSED_STREAM
            and self.opened_on is not None
            and not self.head.has_body
            and not self.head.upgrade
            and not self.head_written
        )

    def _refuse_while_starting(self) -> None:
        """A plane unknown while the gateway starts may exist: 503 and retry soon, not 404.
        client-go obeys the `Retry-After` (up to ten times a request), so kubectl waits a
        short start out by itself; the message, printed once it gives up, says what a long
        one means."""
        startup = self.endpoint._trust.startup
        if (starting := startup.starting) is not None:
            raise CallerRefused(
                503,
                "ServiceUnavailable",
                f"{starting}; if this lasts, the gateway cannot list its planes (its log and "
                "/readyz say why: usually its control plane is unreachable)",
                retry_after=startup.retry_after,
                elsewhere=True,
            )

    def _backend(self, plane: PlaneRef, tried: set[int]) -> StreamOpener | None:
        """The direct plane, else the agent with the most room; none already tried."""
        endpoint = self.endpoint
        direct = endpoint._direct.backend(plane) if endpoint._direct is not None else None
        if direct is not None:
            return None if id(direct) in tried else direct
        agent = endpoint._agents.pick(plane, exclude=frozenset(tried))
        return None if agent is None else agent.session

    async def _forward(
        self, target: Route, headers: list[Header], identity: CallerIdentity
    ) -> CallerStream | None:
        """The request's stream through a peer holding a tunnel to the plane; None when there is
        none, or none can be reached or take it (each is tried once). A request without a body
        waits here for the peer's answer: one that says another replica may serve it
        (`Planelink-Refused`: the peer's presence was stale) moves on to the next peer. With a
        body, the peer's answer is the caller's (the body is read only once)."""
        forwarder = self.endpoint._forwarder
        if forwarder is None:
            return None
        vouching = [
            *headers,
            *_identity_fields(
                [
                    (FORWARDED_BY, forwarder.own_id.encode()),
                    (FORWARDED_CALLER, identity.user.encode()),
                ]
            ),
        ]
        for peer in forwarder.peers_for(target.plane):
            if not await peer.reachable():
                continue
            try:
                stream = self._open_on(peer, plane_path(target), vouching)
            except StreamResetError as error:
                if error.code != ErrorCode.REFUSED_STREAM:
                    raise _unrelayable(error) from error
                continue  # at its stream limit: try another peer
            if self.head.has_body or not await _refused_by_peer(stream):
                self.forwarded_to = peer.replica_id
                return stream
        return None

    def _open_on(self, backend: StreamOpener, path: str, headers: Headers) -> CallerStream:
        return backend.open_stream(
            method=self.head.method,
            path=path,
            headers=headers,
            end_stream=not self.head.has_body and not self.head.upgrade,
            upgrade=self.head.upgrade,
        )

    async def _refuse_response(self, stream: CallerStream, error: FramingError) -> bool:
        """The agent's response breaks HTTP/1.1 framing: reset its stream, tell the caller."""
        stream.reset(ErrorCode.PROTOCOL_ERROR, f"unacceptable response: {error}")
        metrics = self.endpoint._metrics
        metrics.relay_errors.labels(self.plane, "agent_response").inc()
        return await self._fail(
            CallerRefused(
                502,
                "InternalError",
                f"the agent of dataplane {self.plane} sent an unacceptable response: {error}",
            )
        )

    async def _fail(self, refused: CallerRefused) -> bool:
        log.warning(
            "request failed",
            caller=self.caller,
            plane=self.plane,
            status=refused.status,
            detail=refused.message,
            head_written=self.head_written,
            request_id=self.request_id,
        )
        return await self._answer_failure(refused)

    # -- what each HTTP version does its own way ---------------------------------------------

    def _check_head(self) -> None:
        """Refuse a request its HTTP version does not allow, before anything else."""
        check_request_line(self.head)

    async def _refuse(self, refused: CallerRefused, *, plain: bool, extra: Headers) -> bool:
        """Answer a request refused before it reached a plane."""
        raise NotImplementedError

    async def _answer_document(self, document: Callable[[], Document]) -> bool:
        """Answer a `PeerPort.documents` path (the peer port speaks HTTP/1.1 only)."""
        raise NotImplementedError

    async def _relay(self, stream: CallerStream) -> bool:
        """Send the request body to the stream and its answer to the caller."""
        raise NotImplementedError

    async def _answer_failure(self, refused: CallerRefused) -> bool:
        """A request that failed on its way: its Status, or a cut answer once the head is out."""
        raise NotImplementedError

    def _explain_reset(self, error: StreamResetError) -> CallerRefused:
        if error.code in (ErrorCode.CONNECTION_LOST, ErrorCode.NO_ERROR, ErrorCode.REFUSED_STREAM):
            return CallerRefused(
                503,
                "ServiceUnavailable",
                f"the agent of dataplane {self.plane} disconnected: {error.message}",
                retry_after=self.endpoint._settings.retry_after,
            )
        return CallerRefused(502, "InternalError", f"the tunnel to {self.plane} failed: {error}")

    def _count(self, status: int) -> None:
        self.status = status
        metrics = self.endpoint._metrics
        code = status_class(status)
        if self.forwarded_by:
            # Served for a peer: the forwarding replica counts the caller's request.
            metrics.peer_requests.labels(self.forwarded_by, self.plane, code).inc()
            return
        if self.forwarded_to:
            metrics.forwarded_requests.labels(self.forwarded_to, self.plane, code).inc()
        metrics.requests.labels(self.plane, code).inc()
        metrics.request_duration.labels(self.plane, code).observe(time.monotonic() - self.started)


class _Http1Exchange(_CallerExchange):
    """A request on an HTTP/1.1 connection: its answer is framed by the gateway
    (`http1.framing`) and written to the connection, which carries one request at a time."""

    def __init__(
        self,
        endpoint: CallerEndpoint,
        http: MessageReader,
        writer: asyncio.StreamWriter,
        head: RequestHead,
        *,
        caller: str,
        certificate: CallerIdentity | None,
    ) -> None:
        super().__init__(
            endpoint, head, caller=caller, certificate=certificate, address=_peer_address(writer)
        )
        self.http = http
        self.writer = writer

    async def _answer_document(self, document: Callable[[], Document]) -> bool:
        content_type, body = document()
        headers: list[Header] = [
            (b"Content-Type", content_type),
            (b"Content-Length", b"%d" % len(body)),
        ]
        keep_alive = self.head.keep_alive and not self.head.has_body
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        self.writer.write(response_head_bytes(200, reason_phrase(200), headers) + body)
        await self.writer.drain()
        return keep_alive

    async def _relay(self, stream: CallerStream) -> bool:
        sending = self.sending = (
            asyncio.create_task(self._send_body(stream))
            if self.head.has_body and not self.head.upgrade
            else None
        )
        try:
            response = await stream.response()
            # An answer that comes before the whole request body was read (the agent answered
            # early) ends the connection: the rest of the body must not be read as a request.
            body_unread = sending is not None and not sending.done()
            try:
                framer = self._framer(response.status, response.headers, reusable=not body_unread)
            except FramingError as error:
                return await self._refuse_response(stream, error)
            if response.upgraded:
                await self._write_head(framer)
                await self._pipe(stream)
                return False
            keep_alive = await self._relay_response(stream, framer)
        finally:
            if sending is not None:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamResetError):
                    await sending
        return keep_alive

    def _framer(self, status: int, headers: Headers, *, reusable: bool) -> ResponseFramer:
        head = self.head
        return ResponseFramer(
            method=head.method,
            status=status,
            headers=headers,
            upgrade_requested=head.upgrade,
            # After an upgrade request answered without a 101 the caller's next bytes may be
            # the rest of what it meant for the upgraded stream: never read them as a request.
            keep_alive=reusable and head.keep_alive and not head.upgrade,
            http_1_0=head.http_version == "1.0",
            own=self._own_fields(),
        )

    async def _send_body(self, stream: CallerStream) -> None:
        sent = 0
        try:
            while chunk := await self.http.read_body():
                await stream.write(chunk)
                sent += len(chunk)
                self.access.bytes_in = sent
        except HttpError as error:
            # Answered now, not at the request's deadline: the reset wakes the relay at once,
            # and the agent stops the upstream request.
            self.body_error = error
            stream.reset(ErrorCode.CANCEL, "the caller's request body was malformed")
            metrics = self.endpoint._metrics
            metrics.relay_errors.labels(self.plane, "caller_body").inc()
            return
        stream.end()
        metrics = self.endpoint._metrics
        metrics.bytes.labels(self.plane, "to_agent").inc(sent)

    async def _relay_response(self, stream: CallerStream, framer: ResponseFramer) -> bool:
        pending: list[bytes | memoryview] = [self._head_bytes(framer)]
        gone: asyncio.Task[None] | None = None
        try:
            relayed, gone = await self._relay_body(stream, pending, framer)
            caller_left = gone is not None and gone.done()
        except FramingError as error:
            return await self._refuse_response(stream, error)
        finally:
            if gone is not None:
                # Awaited, not just cancelled: the next request's read must not race this one.
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gone
        metrics = self.endpoint._metrics
        metrics.bytes.labels(self.plane, "to_caller").inc(relayed)
        return framer.keep_alive and not caller_left

    async def _relay_body(
        self, stream: CallerStream, pending: list[bytes | memoryview], framer: ResponseFramer
    ) -> tuple[int, asyncio.Task[None] | None]:
        """Write the head and body as they come. What is already here goes out in one write
        (a small answer is one syscall and one TLS record); before waiting for more, what is
        pending is flushed, and from then on a caller that leaves is noticed (an idle watch
        writes nothing, so a failed write would never tell). Every byte passes the framer, so
        none goes past the length the head announced."""
        writer = self.writer
        relayed = 0
        gone: asyncio.Task[None] | None = None
        while True:
            if not stream.readable_now:
                writer.writelines(pending)
                pending.clear()
                await writer.drain()
                if gone is None:
                    gone = self._watch_caller(stream)
            chunk = await self._read_unless_gone(stream, gone)
            if not chunk:
                break
            pending += framer.body(chunk)
            relayed += len(chunk)
            self.access.bytes_out = relayed  # so far: a cut answer is logged with its part
            if len(pending) > _MAX_PENDING_PIECES:
                writer.writelines(pending)
                pending.clear()
                await writer.drain()
        pending.append(framer.end())
        writer.writelines(pending)
        await writer.drain()
        return relayed, gone

    async def _caller_gone(self) -> None:
        """Returns when the caller closed its side. Only once the request body is read: the
        connection has one reader at a time, and while the body is still coming, a caller
        that leaves is noticed by the body's reader."""
        if self.sending is not None:
            await asyncio.wait({self.sending})
        await self.http.watch_for_close()

    def _watch_caller(self, stream: CallerStream) -> asyncio.Task[None]:
        """From now on, a caller that leaves resets the stream, which ends a read waiting on it
        (one task for the whole answer: a task per piece would cost more than the piece)."""
        gone = asyncio.create_task(self._caller_gone())

        def caller_left(task: asyncio.Task[None]) -> None:
            if not task.cancelled():
                stream.reset(ErrorCode.CANCEL, "the caller went away")

        gone.add_done_callback(caller_left)
        return gone

    @staticmethod
    async def _read_unless_gone(
        stream: CallerStream, gone: asyncio.Task[None] | None
    ) -> bytes | memoryview:
        try:
            chunk = await stream.read()
        except StreamResetError:
            if gone is None or not gone.done():
                raise
            chunk = b""
        if gone is not None and gone.done():  # the caller left: its stream is reset
            raise ConnectionResetError("the caller closed its connection")
        return chunk

    async def _pipe(self, stream: CallerStream) -> None:
        """After a 101: bytes flow both ways until each side ends."""

        caller_closed = False

        async def caller_to_agent() -> None:
            nonlocal caller_closed
            while data := await self.http.read_raw():
                await stream.write(data)
                self.access.bytes_in += len(data)
            stream.end()
            if self.forwarded_to:
                # The peer cannot be told that one direction ended (its connection is TLS
                # too), and the caller's connection is closed for good: the exchange ends.
                caller_closed = True
                stream.reset(ErrorCode.CANCEL, "the caller closed its connection")

        async def agent_to_caller() -> None:
            while data := await stream.read():
                self.writer.write(data)
                self.access.bytes_out += len(data)
                await self.writer.drain()

        # TLS has no half-close: when the agent's side ends, the caller's connection ends too;
        # when the caller's side ends first, the agent is told and its side finishes the pipe.
        up = asyncio.create_task(caller_to_agent())
        try:
            await agent_to_caller()
        except StreamResetError:
            if not caller_closed:
                raise
        finally:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamResetError, ConnectionError):
                await up

    def _head_bytes(self, framer: ResponseFramer) -> bytes:
        self.head_written = True
        self._count(framer.status)
        return framer.head_bytes()

    async def _write_head(self, framer: ResponseFramer) -> None:
        self.writer.write(self._head_bytes(framer))
        await self.writer.drain()

    async def _answer_failure(self, refused: CallerRefused) -> bool:
        if self.head_written:
            # Too late for a status: cut the connection so the caller sees a broken body.
            self.writer.transport.abort()
            return False
        await _write_status(self.writer, refused, close=True, extra=self._own_fields())
        self._count(refused.status)
        await _linger(self.http, self.writer)
        return False

    async def _refuse(self, refused: CallerRefused, *, plain: bool, extra: Headers) -> bool:
        # The connection closes after the answer: whatever the caller sends next is unread.
        await _write_status(self.writer, refused, plain=plain, close=True, extra=extra)
        self._count(refused.status)
        await _linger(self.http, self.writer)
        return False


class _Http2Exchange(_CallerExchange):
    """A request on a stream of an HTTP/2 connection (`gateway.callers_h2`): the answer's body
    goes out in DATA frames as the caller's windows allow, a failure resets this stream alone,
    and a caller that resets it resets the plane's stream at once. Upgrades do not exist here
    (HTTP/2 has no `Upgrade`; the fields that would ask for one make the request malformed)."""

    protocol = "http2"

    def __init__(
        self,
        endpoint: CallerEndpoint,
        channel: H2CallerStream,
        head: RequestHead,
        *,
        caller: str,
        certificate: CallerIdentity | None,
        address: str,
        authenticated: Callable[[], bool],
    ) -> None:
        super().__init__(endpoint, head, caller=caller, certificate=certificate, address=address)
        self.channel = channel
        self._authenticated = authenticated
        self.goaway_after = False
        """The connection is to take no new stream after this one (`_refuse`)."""

    def _check_head(self) -> None:
        if invalid := self.channel.head.invalid:
            # As kube-apiserver answers a connection field over HTTP/2: 400, in its words.
            raise CallerRefused(400, "BadRequest", invalid, plain=True)
        super()._check_head()

    async def _refuse(self, refused: CallerRefused, *, plain: bool, extra: Headers) -> bool:
        headers, body = _status_answer(refused, plain=plain)
        await self._answer(refused.status, [*headers, *extra], body)
        # A connection that never authenticated takes no more requests, as HTTP/1.1's closes:
        # an anonymous caller must not have the gateway answer refusals for free.
        self.goaway_after = not self._authenticated()
        return False

    async def _answer(self, status: int, headers: Headers, body: bytes) -> None:
        self._count(status)
        channel = self.channel
        channel.send_head(status, headers)
        await channel.send(body, end=True)

    async def _answer_failure(self, refused: CallerRefused) -> bool:
        if self.channel.gone:
            return False
        if self.head_written:
            # Too late for a status: this stream alone is cut, the caller sees it unfinished.
            self.channel.reset(H2ErrorCode.INTERNAL_ERROR)
            return False
        headers, body = _status_answer(refused, plain=False)
        await self._answer(refused.status, [*headers, *self._own_fields()], body)
        return False

    async def _relay(self, stream: CallerStream) -> bool:
        channel = self.channel

        def caller_gone() -> None:
            stream.reset(ErrorCode.CANCEL, "the caller reset its stream")

        channel.on_gone = caller_gone
        if channel.gone:
            raise ConnectionResetError("the caller reset its stream")
        sending = self.sending = (
            asyncio.create_task(self._send_body(stream)) if self.head.has_body else None
        )
        try:
            response = await stream.response()
            try:
                framer = ResponseFramer(
                    method=self.head.method,
                    status=response.status,
                    headers=response.headers,
                    upgrade_requested=False,
                    keep_alive=True,
                    unframed=True,
                    own=self._own_fields(),
                )
            except FramingError as error:
                return await self._refuse_response(stream, error)
            self.head_written = True
            self._count(framer.status)
            channel.send_head(framer.status, framer.headers)
            relayed = 0
            ended = False
            try:
                while not ended and (chunk := await stream.read()):
                    framer.body(chunk)
                    # The agent's end is often here with the last bytes: one DATA frame
                    # carries both to the caller.
                    if ended := stream.at_end:
                        framer.end()
                    await channel.send(bytes(chunk), end=ended)
                    relayed += len(chunk)
                    self.access.bytes_out = relayed
                if not ended:
                    framer.end()
            except FramingError as error:
                return await self._refuse_response(stream, error)
            if not ended:
                await channel.send(b"", end=True)
        except StreamResetError:
            if channel.gone:
                raise ConnectionResetError("the caller reset its stream") from None
            raise
        finally:
            channel.on_gone = None
            if sending is not None:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StreamResetError, ConnectionError):
                    await sending
        metrics = self.endpoint._metrics
        metrics.bytes.labels(self.plane, "to_caller").inc(relayed)
        return True

    async def _send_body(self, stream: CallerStream) -> None:
        channel = self.channel
        sent = 0
        while chunk := await channel.read_body():
            try:
                await stream.write(chunk)
            finally:
                channel.consumed(len(chunk))  # passed on or dropped: the window reopens
            sent += len(chunk)
            self.access.bytes_in = sent
        stream.end()
        metrics = self.endpoint._metrics
        metrics.bytes.labels(self.plane, "to_agent").inc(sent)


async def _refused_by_peer(stream: CallerStream) -> bool:
    """Whether a forwarded request's answer says another replica may serve it (the stream is
    then reset) or the stream broke before an answer."""
    try:
        response = await stream.response()
    except StreamResetError:
        return True
    if header_value(response.headers, PEER_REFUSED) is None:
        return False
    stream.reset(ErrorCode.CANCEL, "refused by the peer: trying another")
    return True


async def _write_status(
    writer: asyncio.StreamWriter,
    refused: CallerRefused,
    *,
    plain: bool = False,
    close: bool,
    extra: Headers = (),
) -> None:
    """Answer with the gateway's own Status; `close` says the connection ends after it.

    The message also goes out as a `Warning`, but for a 403: kubectl's discovery (every
    command's first requests) reads an error answer raw, without decoding its Status
    (client-go discovery/discovery_client.go `downloadLegacy`, `downloadAPIs`: `.Raw()`), and
    rest/request.go `newUnstructuredResponseError` then puts client-go's own words in place of
    the message for every status but 403 (apimachinery errors.go `NewGenericServerResponse`:
    404 becomes "the server could not find the requested resource", 503 "the server is
    currently unable to handle the request"). Warnings of any response, an error's too, reach
    the warning handler (rest/request.go `transformResponse`, `handleWarnings`), which kubectl
    prints on stderr as `Warning: <message>`, each once. A request whose Status is decoded
    shows the message twice, as the warning and as the error."""
    headers, body = _status_answer(refused, plain=plain)
    if close:
        headers = [*headers, (b"Connection", b"close")]
    headers = [*headers, *extra]
    writer.write(response_head_bytes(refused.status, reason_phrase(refused.status), headers) + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def _status_answer(refused: CallerRefused, *, plain: bool) -> tuple[list[Header], bytes]:
    """The head fields and body of the gateway's own answer (`_write_status` says why each)."""
    if plain:
        body = refused.message.encode()
        headers: list[Header] = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Content-Length", str(len(body)).encode()),
        ]
    else:
        body = status_body(refused.status, refused.message, reason=refused.reason)
        headers = list(status_headers(body, retry_after=refused.retry_after))
    if refused.status != 403:
        headers.append(warning_header(refused.message))
    return headers, body


def _unrelayable(error: StreamResetError) -> CallerRefused:
    """The refusal of a request head that the tunnel cannot carry (HEADER_ERROR): 431 when it
    is larger than the agent accepts, 400 when it cannot be encoded."""
    # The session raises the stream error from the protocol's, which says why by its type.
    status = 431 if isinstance(error.__cause__, HeadTooLarge) else 400
    return CallerRefused(status, "BadRequest", f"the request cannot be relayed: {error.message}")


async def _linger(http: MessageReader, writer: asyncio.StreamWriter) -> None:
    """After a refusal, before closing: let the caller read the answer. What the caller is
    still sending is read and dropped, unparsed, one read at a time, for at most
    `LINGERING_CLOSE_SECONDS`. A caller still sending then is cut off: a TLS close would go on
    reading it."""
    try:
        async with asyncio.timeout(LINGERING_CLOSE_SECONDS):
            await http.discard_until_close()
    except TimeoutError:
        writer.transport.abort()
    except (ConnectionError, ssl.SSLError):
        pass


def _wants_plain_refusal(head: RequestHead, refused: CallerRefused) -> bool:
    """kubectl's discovery client cannot decode a JSON Status (it prints "unknown"), but shows
    a text body as the message: discovery requests are refused in text, the others in JSON
    (and what the API server itself refuses in text, in text)."""
    if refused.plain:
        return True
    if refused.status not in (401, 403) or head.method != "GET":
        return False
    try:
        path = urlsplit(route(head.target).path).path
    except CallerRefused:
        return False
    return _is_discovery(path)


def _is_discovery(path: str) -> bool:
    path = path.rstrip("/")
    segments = path.split("/")[1:]
    if path in ("/api", "/apis", "/version"):
        return True
    # /api/v1 and /apis/<group>/<version>: resource lists.
    return (segments[:1] == ["api"] and len(segments) == 2) or (
        segments[:1] == ["apis"] and len(segments) in (2, 3)
    )


def _nothing() -> None:
    pass


def _caller_name(writer: asyncio.StreamWriter) -> str:
    certificate = writer.get_extra_info("peercert") or {}
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return _peer_address(writer)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"
