"""The listener agents dial: TLS with client certificates, then one tunnel session each.

An agent is accepted only when the certificate it presented in the TLS handshake verifies
against the `clientCA` of the plane it names in the URL — before the WebSocket upgrade, so a
rejected agent gets an HTTP status, a one-line reason and an `X-Planelink-Rejection` header, and
the operator a log line and a metric. Its HELLO must then name the same plane.

Connections are accepted by a `TlsAcceptor` (`gateway.acceptor`): connection limits, the
ClientHello and handshake deadlines, a bounded number of handshakes at once, and a TLS alert
for a rejected certificate; a certificate rejected by OpenSSL (unknown CA, expired, no client
usage) is as visible to the operator as one rejected by the per-plane check. This module runs
the WebSocket upgrade under `upgrade_timeout`; an upgrade request websockets cannot parse (too
many or too long headers) is answered 431/400 at once.

Words: an agent is *rejected*; a caller's request, or a connection before anyone is known, is
*refused*. The log events "agent refused ..." keep their old words: operators grep for them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit
from weakref import WeakKeyDictionary

import structlog
from websockets.asyncio.server import Server, ServerConnection
from websockets.exceptions import RequestLineTooLong, SecurityError
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from certs import (
    CertificateInfo,
    CertificateRejected,
    InvalidPlaneRefError,
    PlaneRef,
    parse_plane_ref,
)
from gateway.acceptor import LINGERING_CLOSE_SECONDS, Admitted, TlsAcceptor
from gateway.admission import AdmissionSettings, Refusal
from gateway.agents import AgentConnection, AgentRegistry
from gateway.metrics import GatewayMetrics
from gateway.replica_news import LiveReplicas, ReplicaNews
from gateway.trust import TrustRegistry, verify_agent
from protocol import Connection, ErrorCode, FloodLimits, Role, Settings
from protocol.settings import RELAY_STREAM_WINDOW
from tunnel import Heartbeat, SessionClosed, TunnelSession, WebSocketChannel
from tunnel.channel import RECEIVE_QUEUE, GuardedServerConnection
from tunnel.contract import (
    AGENT_CONNECT_PATH,
    IDENTITY_AGENT_ID,
    IDENTITY_GATEWAY_ID,
    IDENTITY_PLANE,
    PLANE_QUERY_PARAMETER,
    REJECTION_HEADER,
    REJECTION_STARTING,
    SUBPROTOCOL,
)

log = structlog.get_logger("gateway.agent_listener")


@dataclass(frozen=True)
class AgentListenerSettings:
    host: str = "0.0.0.0"  # noqa: S104 - agents come from other clusters
    port: int = 8443
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    hello_timeout: float = 10.0
    upgrade_timeout: float = 5.0
    """From TLS established to the end of the upgrade request (and the answer to it)."""
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    backlog: int = 1024
    """Connections queued by the kernel before they are accepted (asyncio's default is 100:
    after a gateway restart every agent dials within seconds, and dropped SYNs cost each a
    one-second retransmit)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, beside the other workers of one gateway (`--workers`)."""
    tunnel: Settings = field(
        default_factory=lambda: Settings(initial_stream_window=RELAY_STREAM_WINDOW)
    )
    flood: FloodLimits = field(default_factory=FloodLimits)
    """What an agent may cost the gateway without useful traffic; past it, it is dropped."""


@dataclass(frozen=True)
class _Verified:
    plane: PlaneRef
    certificate: CertificateInfo
    certificate_der: bytes


class _Rejected(Exception):
    def __init__(
        self,
        status: HTTPStatus,
        reason: str,
        message: str,
        plane: PlaneRef | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.plane = plane
        """The plane the agent named, once it is one this gateway knows."""
        self.retry_after = retry_after


class AgentListener:
    """Accepts agents and registers their sessions."""

    def __init__(
        self,
        *,
        settings: AgentListenerSettings,
        trust: TrustRegistry,
        agents: AgentRegistry,
        metrics: GatewayMetrics,
        replicas: LiveReplicas,
    ) -> None:
        """`replicas` names this replica (its HELLO's `gateway-id`) and the live ones, which
        agents that offer `replicas` are told (`gateway.replica_news`)."""
        self._settings = settings
        self._trust = trust
        self._agents = agents
        self._metrics = metrics
        self.replica_news = ReplicaNews(replicas)
        # Weak: a connection refused after this check (e.g. by the handshake) leaves no entry.
        self._verified: WeakKeyDictionary[ServerConnection, _Verified] = WeakKeyDictionary()
        self._server: _Server | None = None
        self._acceptor: TlsAcceptor | None = None
        self._rejected = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._acceptor is not None
        port: int = self._acceptor.listener.getsockname()[1]
        return port

    @property
    def acceptor(self) -> TlsAcceptor:
        assert self._acceptor is not None
        return self._acceptor

    def wait_for_rejection(self) -> Coroutine[Any, Any, object]:
        """Completes at the next agent rejected after this call (for tests and tooling that
        watch rejections); like `AgentRegistry.wait_for_change`, fixed at the call."""
        return self._rejected.wait()

    def _reject(
        self,
        reason: str,
        message: str,
        *,
        detail: str,
        plane: PlaneRef | None = None,
        **context: object,
    ) -> None:
        if plane is not None:
            context["plane"] = str(plane)
        log.warning(message, reason=reason, detail=detail, **context)
        agent_id, remote = str(context.get("agent_id", "")), str(context.get("remote", ""))
        self._agents.rejected(reason, detail, plane=plane, agent_id=agent_id, address=remote)
        self._rejection_told()

    def _count_rejection(self, reason: str, detail: str) -> None:
        """An agent refused in the TLS handshake (the acceptor logged it)."""
        self._agents.rejected(reason, detail)
        self._rejection_told()

    def _rejection_told(self) -> None:
        self._rejected.set()
        self._rejected = asyncio.Event()

    async def start(self) -> None:
        settings = self._settings
        self._acceptor = TlsAcceptor(
            "agent",
            settings=settings.admission,
            tls_context=lambda: self._trust.handshake_context,
            protocol_factory=self._new_connection,
            on_tls_failure=self._count_rejection,
            tls_failure_event="agent refused in the TLS handshake",
            metrics=self._metrics,
        )
        listener = self._acceptor.listen(
            settings.host, settings.port, backlog=settings.backlog, reuse_port=settings.reuse_port
        )
        loop = asyncio.get_running_loop()
        # The websockets server tracks connections and closes them; accepting is the
        # acceptor's, so the asyncio server it wraps never serves, and has a descriptor of
        # its own to close.
        self._server = _Server(
            lambda: loop.create_server(asyncio.Protocol, sock=listener.dup(), start_serving=False),
            self._handle,
            log,
        )
        await self._server
        self.replica_news.start()
        self._acceptor.serve()

    async def stop(self, *, grace: float) -> None:
        """Ask every agent to drain, give streams `grace` seconds, then close."""
        if self._server is None or self._acceptor is None:
            return
        self._server.serving = False
        self.replica_news.stop()
        await self._acceptor.close()
        self._server.close(close_connections=False)
        agents = list(self._agents.all_agents())
        for agent in agents:
            agent.session.drain("the gateway is shutting down")
        waits = [asyncio.create_task(agent.session.wait_closed()) for agent in agents]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace)
            for task in pending:
                task.cancel()
        for agent in agents:
            agent.session.close("the gateway is shutting down")
        await self._server.wait_closed()

    # -- TLS and the upgrade request --------------------------------------------------------

    def _new_connection(self, admitted: Admitted) -> asyncio.Protocol:
        assert self._server is not None
        tunnel = self._settings.tunnel
        protocol = ServerProtocol(
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            max_size=tunnel.max_message_size,  # no extensions: bodies are often compressed
        )
        connection = _AgentWebSocket(
            protocol,
            self._server,
            ping_interval=None,  # the tunnel's own heartbeat measures RTT and finds dead peers
            max_queue=RECEIVE_QUEUE,
        )
        connection.admitted = admitted
        connection.on_bad_request = self._bad_upgrade_request
        return connection

    def _bad_upgrade_request(self, connection: _AgentWebSocket, error: Exception) -> bytes:
        if isinstance(error, RequestLineTooLong):
            status, reason = HTTPStatus.REQUEST_URI_TOO_LONG, "UpgradeRequestTooLarge"
        elif isinstance(error, SecurityError):
            status, reason = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "UpgradeRequestTooLarge"
        else:
            status, reason = HTTPStatus.BAD_REQUEST, "BadUpgradeRequest"
        detail = f"{error}: {error.__cause__}" if error.__cause__ else str(error)
        self._reject(reason, "agent refused", detail=detail, remote=connection.admitted.remote)
        response = connection.protocol.reject(status, detail + "\n")
        response.headers[REJECTION_HEADER] = reason
        return response.serialize()

    async def _handle(self, connection: ServerConnection) -> None:
        """What websockets' `serve` runs per connection, with the upgrade request's deadline."""
        assert self._server is not None
        server = self._server
        try:
            try:
                async with asyncio.timeout(self._settings.upgrade_timeout):
                    await connection.handshake(self._check_agent, None, None)
            except TimeoutError:
                if isinstance(connection, _AgentWebSocket):
                    connection.admitted.dropped(Refusal.UPGRADE_TIMEOUT, "no upgrade request")
                connection.transport.abort()
                return
            if connection.protocol.state is not OPEN:
                connection.transport.abort()
                return
            server.all_connections.add(connection)
            try:
                async with connection:
                    await self._serve(connection)
            except Exception:
                log.exception("agent connection failed", remote=_remote(connection))
            finally:
                server.all_connections.discard(connection)
        except Exception:
            connection.transport.abort()  # never leak a connection whose handshake failed
        finally:
            server.handler_tasks.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    # -- before the upgrade: who is it? ---------------------------------------------------------

    def _check_agent(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            self._verified[connection] = self._verify(connection, request)
        except _Rejected as rejected:
            self._reject(
                rejected.reason,
                "agent refused",
                detail=rejected.message,
                plane=rejected.plane,
                remote=_remote(connection),
                path=request.path,
            )
            response = connection.respond(rejected.status, rejected.message + "\n")
            response.headers[REJECTION_HEADER] = rejected.reason
            if rejected.retry_after is not None:
                response.headers["Retry-After"] = str(rejected.retry_after)
            return response
        return None

    def _verify(self, connection: ServerConnection, request: Request) -> _Verified:
        url = urlsplit(request.path)
        if url.path != AGENT_CONNECT_PATH:
            raise _Rejected(HTTPStatus.NOT_FOUND, "NotFound", f"no agent endpoint at {url.path}")
        values = parse_qs(url.query).get(PLANE_QUERY_PARAMETER, [])
        if len(values) != 1:
            raise _Rejected(
                HTTPStatus.BAD_REQUEST,
                "PlaneMissing",
                f"name the plane once: ?{PLANE_QUERY_PARAMETER}=<namespace>/<name>",
            )
        try:
            plane = parse_plane_ref(values[0])
        except InvalidPlaneRefError as error:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "PlaneInvalid", str(error)) from error
        ssl_object = connection.transport.get_extra_info("ssl_object")
        trust = self._trust.get(plane)
        self._reject_while_starting(ssl_object, known=trust is not None)
        if trust is None:
            raise _Rejected(
                HTTPStatus.NOT_FOUND,
                "UnknownPlane",
                f"no DataPlane {plane} is known to this gateway",
            )
        der = (
            ssl_object.getpeercert(binary_form=True)
            if isinstance(ssl_object, ssl.SSLObject)
            else None
        )
        try:
            info = verify_agent(trust, der)
        except CertificateRejected as rejected:
            raise _Rejected(
                HTTPStatus.FORBIDDEN,
                rejected.reason.value,
                f"plane {plane}: {rejected.message}",
                plane,
            ) from rejected
        assert der is not None
        return _Verified(plane=plane, certificate=info, certificate_der=der)

    def _reject_while_starting(self, ssl_object: object, *, known: bool) -> None:
        """Until the gateway knows its planes, "come back soon", never "unknown plane"; and a
        connection whose TLS asked no certificate (the starting context) is never accepted."""
        startup = self._trust.startup
        starting = startup.starting
        if self._trust.handshaken_while_starting(ssl_object) or (not known and starting):
            raise _Rejected(
                HTTPStatus.SERVICE_UNAVAILABLE,
                REJECTION_STARTING,
                starting or "the gateway was starting when this connection began",
                retry_after=startup.retry_after,
            )

    # -- after the upgrade: the session ---------------------------------------------------------

    async def _serve(self, connection: ServerConnection) -> None:
        verified = self._verified.pop(connection)
        bound = log.bind(plane=str(verified.plane), remote=_remote(connection))
        session = TunnelSession(
            WebSocketChannel(connection),
            Connection(
                Role.GATEWAY,
                settings=self._settings.tunnel,
                flood=self._settings.flood,
                identity={IDENTITY_GATEWAY_ID: self.replica_news.own_id},
            ),
            heartbeat=self._settings.heartbeat,
            logger=bound,
        )
        running = asyncio.create_task(session.run(), name=f"agent-session-{verified.plane}")
        agent: AgentConnection | None = None
        try:
            peer = await asyncio.wait_for(session.wait_ready(), self._settings.hello_timeout)
            claimed = peer.identity.get(IDENTITY_PLANE, str(verified.plane))
            if claimed != str(verified.plane):
                self._reject(
                    "PlaneMismatch",
                    "agent refused",
                    detail=f"its HELLO names plane {claimed}, its URL {verified.plane}",
                    plane=verified.plane,
                    remote=_remote(connection),
                    agent_id=peer.identity.get(IDENTITY_AGENT_ID, ""),
                )
                session.close(
                    f"HELLO names plane {claimed}, the URL {verified.plane}",
                    ErrorCode.PROTOCOL_ERROR,
                )
            else:
                agent = AgentConnection(
                    plane=verified.plane,
                    agent_id=peer.identity.get(IDENTITY_AGENT_ID) or _remote(connection),
                    session=session,
                    certificate=verified.certificate,
                    certificate_der=verified.certificate_der,
                    remote_address=_remote(connection),
                    identity=dict(peer.identity),
                )
                self._agents.add(agent)
                self.replica_news.joined(session)
        except (TimeoutError, SessionClosed) as error:
            self._reject(
                "NoHello",
                "agent refused",
                detail=f"no HELLO: {error or 'timeout'}",
                plane=verified.plane,
                remote=_remote(connection),
            )
            session.close("no HELLO in time", ErrorCode.PROTOCOL_ERROR)
        try:
            reason = await running
        finally:
            self.replica_news.left(session)
        if agent is not None:
            self._agents.remove(agent, reason)


def _remote(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else "unknown"


class _Server(Server):
    """The websockets server of the agent port; serving until the listener stops."""

    serving = True

    def is_serving(self) -> bool:
        return self.serving


class _AgentWebSocket(GuardedServerConnection):
    """An agent's WebSocket connection, which knows its admission and answers an upgrade
    request websockets cannot parse (too many or too long headers, not HTTP) with a refusal
    the operator sees too, then closes after a lingering close (what the agent still sends is
    dropped unread meanwhile)."""

    admitted: Admitted
    on_bad_request: Callable[[_AgentWebSocket, Exception], bytes]
    answered = False

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # the rest of a refused upgrade request: dropped, never parsed
        super().data_received(data)

    def send_data(self) -> None:
        error = self.protocol.handshake_exc
        if self.request is None and error is not None and not self.answered:
            self.answered = True
            self.protocol.data_to_send()  # websockets' own answer and end, replaced by ours
            if isinstance(error.__cause__, EOFError):  # the agent left: nobody to tell
                self.transport.close()
                return
            self.transport.write(self.on_bad_request(self, error))
            self.loop.call_later(LINGERING_CLOSE_SECONDS, self.transport.close)
            return
        super().send_data()
