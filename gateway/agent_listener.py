"""The listener agents dial: TLS with client certificates, then one tunnel session each.

An agent is accepted only when the certificate it presented in the TLS handshake verifies
against the `clientCA` of the plane it names in the URL — before the WebSocket upgrade, so a
refused agent gets an HTTP status, a one-line reason and an `X-Planelink-Rejection` header, and
the operator a log line and a metric. Its HELLO must then name the same plane.

TLS is started by this module, not by the server socket: asyncio drops a failed server-side
handshake without a word, and a certificate refused by OpenSSL (unknown CA, expired, no client
usage) must be as visible to the operator as one refused by the per-plane check. Starting TLS
here also bounds how many handshakes run at once, so a storm of reconnecting agents after a
restart queues instead of starving the event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit
from weakref import WeakKeyDictionary

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from certs import CertificateInfo, CertificateRejected, InvalidPlaneRefError, PlaneRef
from gateway.agents import AgentConnection, AgentRegistry
from gateway.metrics import GatewayMetrics
from gateway.trust import TrustRegistry, verify_agent
from protocol import Connection, ErrorCode, Role, Settings
from tunnel import Heartbeat, SessionClosed, TunnelSession, WebSocketChannel
from tunnel.contract import (
    AGENT_CONNECT_PATH,
    IDENTITY_AGENT_ID,
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
    tls_handshake_timeout: float = 10.0
    max_concurrent_handshakes: int = 64
    backlog: int = 1024
    """Connections queued by the kernel before they are accepted (asyncio's default is 100:
    after a gateway restart every agent dials within seconds, and dropped SYNs cost each a
    one-second retransmit)."""
    tunnel: Settings = field(default_factory=Settings)


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
    ) -> None:
        self._settings = settings
        self._trust = trust
        self._agents = agents
        self._metrics = metrics
        # Weak: a connection refused after this check (e.g. by the handshake) leaves no entry.
        self._verified: WeakKeyDictionary[ServerConnection, _Verified] = WeakKeyDictionary()
        self._server: Server | None = None
        self._handshakes = asyncio.Semaphore(settings.max_concurrent_handshakes)
        self._rejected = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def wait_for_rejection(self) -> Coroutine[Any, Any, object]:
        """Completes at the next agent refused after this call (for tests and tooling that
        watch refusals); like `AgentRegistry.wait_for_change`, fixed at the call."""
        return self._rejected.wait()

    def _refuse(
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
        self._agents.refused(reason, detail, plane=plane)
        self._rejected.set()
        self._rejected = asyncio.Event()

    async def start(self) -> None:
        tunnel = self._settings.tunnel
        self._server = await serve(
            self._serve,
            self._settings.host,
            self._settings.port,
            create_connection=self._connection_class(),
            process_request=self._check_agent,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            max_size=tunnel.max_message_size,
            ping_interval=None,  # the tunnel's own heartbeat measures RTT and finds dead peers
            compression=None,  # bodies are often compressed already; CPU matters more
            server_header=None,
            backlog=self._settings.backlog,
        )

    async def stop(self, *, grace: float) -> None:
        """Ask every agent to drain, give streams `grace` seconds, then close."""
        if self._server is None:
            return
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

    # -- TLS ----------------------------------------------------------------------------------

    def _connection_class(self) -> type[ServerConnection]:
        listener = self

        class TlsServerConnection(ServerConnection):
            """A WebSocket connection that first completes TLS under the listener's eye."""

            established = False

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                # A stream transport (uvloop's are not asyncio.Transport subclasses).
                transport = cast(asyncio.Transport, transport)
                transport.pause_reading()  # the ClientHello is for TLS, not for WebSocket
                self._tls = asyncio.get_running_loop().create_task(
                    listener._start_tls(self, transport)
                )

            def tls_established(self, transport: asyncio.Transport) -> None:
                self.established = True
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                # A failed handshake ends a connection the WebSocket layer never saw begin.
                if self.established:
                    super().connection_lost(exc)

        return TlsServerConnection

    async def _start_tls(self, connection: ServerConnection, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        loop = asyncio.get_running_loop()
        try:
            async with self._handshakes:
                tls = await loop.start_tls(
                    transport,
                    connection,
                    self._trust.handshake_context,
                    server_side=True,
                    ssl_handshake_timeout=self._settings.tls_handshake_timeout,
                )
        except (OSError, TimeoutError) as error:
            reason, detail = _tls_failure(error)
            self._refuse(reason, "agent refused in the TLS handshake", detail=detail, remote=remote)
            transport.abort()
            return
        if tls is None:  # pragma: no cover - start_tls returns None only on a closing loop
            transport.abort()
            return
        connection.tls_established(tls)  # type: ignore[attr-defined]

    # -- before the upgrade: who is it? ---------------------------------------------------------

    def _check_agent(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            self._verified[connection] = self._verify(connection, request)
        except _Rejected as rejected:
            self._refuse(
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
            plane = PlaneRef.parse(values[0])
        except InvalidPlaneRefError as error:
            raise _Rejected(HTTPStatus.BAD_REQUEST, "PlaneInvalid", str(error)) from error
        ssl_object = connection.transport.get_extra_info("ssl_object")
        trust = self._trust.get(plane)
        self._refuse_while_starting(ssl_object, known=trust is not None)
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

    def _refuse_while_starting(self, ssl_object: object, *, known: bool) -> None:
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
            Connection(Role.GATEWAY, settings=self._settings.tunnel),
            heartbeat=self._settings.heartbeat,
            logger=bound,
        )
        running = asyncio.create_task(session.run(), name=f"agent-session-{verified.plane}")
        agent: AgentConnection | None = None
        try:
            peer = await asyncio.wait_for(session.wait_ready(), self._settings.hello_timeout)
            claimed = peer.identity.get(IDENTITY_PLANE, str(verified.plane))
            if claimed != str(verified.plane):
                self._refuse(
                    "PlaneMismatch",
                    "agent refused",
                    detail=f"its HELLO names plane {claimed}, its URL {verified.plane}",
                    plane=verified.plane,
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
        except (TimeoutError, SessionClosed) as error:
            self._refuse(
                "NoHello",
                "agent refused",
                detail=f"no HELLO: {error or 'timeout'}",
                plane=verified.plane,
            )
            session.close("no HELLO in time", ErrorCode.PROTOCOL_ERROR)
        reason = await running
        if agent is not None:
            self._agents.remove(agent, reason)


_VERIFY_FAILURES = (
    # (what OpenSSL's verify message contains, reason, what to add for the operator)
    ("expired", "Expired", ""),
    ("not yet valid", "NotYetValid", " (check the clocks)"),
    ("purpose", "NotClientAuth", " (the certificate lacks the clientAuth usage)"),
    ("signature", "BadSignature", " (the certificate is corrupt or forged)"),
)


def _tls_failure(error: BaseException) -> tuple[str, str]:
    """A reason (CamelCase, for metrics) and a detail (for the log) for a failed handshake."""
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or str(error)
        for fragment, reason, hint in _VERIFY_FAILURES:
            if fragment in message:
                return reason, message + hint
        return "Untrusted", f"{message} (issued by no CA of any known plane)"
    if isinstance(error, ssl.SSLError) and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in (
        error.reason or ""
    ):
        return "NoCertificate", "the agent presented no client certificate"
    if isinstance(error, TimeoutError):
        return "TLSTimeout", "the TLS handshake did not finish in time"
    return "TLSError", str(error) or type(error).__name__


def _remote(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else "unknown"
