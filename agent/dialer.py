"""Dialing the gateway: one WebSocket over mutual TLS, with the credentials read afresh.

The client certificate, its key and the gateway's CA are read from their files at every
attempt, so a certificate renewed by cert-manager is presented on the next connection without
a restart. This is the boundary for websockets', ssl's and the OS's errors: they all become
`DialFailed`, whose `reason` is a short class for metrics and whose message is for the log
(`GatewayRejected` carries the gateway's status, rejection reason and body).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

import structlog
from cryptography import x509
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

import certs
from agent.settings import AgentTlsFiles
from tunnel.channel import RECEIVE_QUEUE, GuardedClientConnection
from tunnel.contract import REJECTION_HEADER, SUBPROTOCOL

_BODY_LIMIT = 300  # characters of a rejection body worth a log line


class DialFailed(Exception):
    """A connection attempt failed; `reason` is a short class (refused, tls, timeout, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class GatewayRejected(DialFailed):
    """The gateway answered the WebSocket handshake with an HTTP error."""

    def __init__(
        self, status: int, rejection: str | None, body: str, *, retry_after: float | None = None
    ) -> None:
        detail = f"HTTP {status}" + (f" {rejection}" if rejection else "")
        super().__init__(
            f"rejected:{rejection}" if rejection else f"rejected:{status}",
            f"the gateway rejected the agent: {detail}" + (f": {body}" if body else ""),
        )
        self.status = status
        self.rejection = rejection
        self.body = body
        self.retry_after = retry_after
        """Seconds the gateway asked the agent to wait (a 503 or 429 `Retry-After`), if any."""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """The TLS material of one attempt: a context, and the certificate it presents."""

    context: ssl.SSLContext
    certificate: x509.Certificate


def client_context(files: AgentTlsFiles) -> ClientCredentials:
    """The TLS context of one dial, from the files as they are now; raises WrongFileError
    naming the file that does not hold what it should."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the gateway and its name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    certs.load_verify_locations(context, files.gateway_ca)
    certificate = certs.load_cert_chain(
        context, files.certificate, files.key, role=certs.FileRole.CLIENT_CERTIFICATE
    )
    return ClientCredentials(context=context, certificate=certificate)


def load_client_credentials(files: AgentTlsFiles) -> ClientCredentials:
    """Read the certificate, key and gateway CA now; raises DialFailed("credentials")."""
    try:
        return client_context(files)
    except certs.WrongFileError as error:
        raise DialFailed("credentials", f"cannot load the agent's TLS files: {error}") from None


async def dial(
    url: str,
    credentials: ClientCredentials,
    *,
    open_timeout: float,
    max_message_size: int,
    user_agent: str,
) -> ClientConnection:
    """Open the WebSocket to the gateway; raises DialFailed (GatewayRejected for an HTTP
    error answer). Keepalive pings are off: the tunnel's heartbeat does that job."""
    try:
        websocket = await connect(
            url,
            ssl=credentials.context,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            user_agent_header=user_agent,
            compression=None,  # bodies are often compressed already; keep CPU and memory flat
            proxy=None,
            open_timeout=open_timeout,
            ping_interval=None,
            ping_timeout=None,
            # A tunnel found dead by heartbeat will not answer a close: give up on it soon.
            close_timeout=2,
            max_size=max_message_size,
            max_queue=RECEIVE_QUEUE,
            create_connection=GuardedClientConnection,
        )
    except BaseException as error:
        translated = _translate(error)
        if translated is None:
            raise
        raise translated from error
    if websocket.subprotocol != SUBPROTOCOL:
        await websocket.close(1002, "subprotocol planelink.v1 required")
        raise DialFailed("handshake", f"the gateway did not accept subprotocol {SUBPROTOCOL!r}")
    structlog.get_logger().debug("websocket open", url=url)
    return websocket


def _retry_after(status: int, value: str | None) -> float | None:
    """`Retry-After` in seconds, for the statuses that mean "later" (an HTTP-date is ignored:
    the agent's clock need not agree with the gateway's)."""
    if status not in (429, 503) or value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _translate(error: BaseException) -> DialFailed | None:  # noqa: PLR0911 - one case each
    if isinstance(error, InvalidStatus):
        response = error.response
        body = response.body.decode("utf-8", "replace").strip() if response.body else ""
        return GatewayRejected(
            response.status_code,
            response.headers.get(REJECTION_HEADER),
            body[:_BODY_LIMIT],
            retry_after=_retry_after(response.status_code, response.headers.get("Retry-After")),
        )
    if isinstance(error, InvalidMessage):
        # With TLS 1.3 the server checks our certificate after the TLS handshake; asyncio
        # turns its alert into a plain end of stream while we wait for the HTTP answer.
        cause = error.__cause__
        if isinstance(cause, ssl.SSLError):
            return DialFailed("tls", f"the gateway refused the agent's certificate: {cause}")
        if isinstance(cause, EOFError):
            return DialFailed(
                "closed",
                "the gateway closed the connection before answering the WebSocket handshake "
                "(as it does when it does not accept the agent's client certificate)",
            )
    if isinstance(error, (InvalidHandshake, InvalidURI)):
        return DialFailed("handshake", f"WebSocket handshake failed: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return DialFailed("tls", f"the gateway's certificate is not trusted: {error}")
    if isinstance(error, ssl.SSLError):
        return DialFailed("tls", f"TLS with the gateway failed: {error}")
    if isinstance(error, TimeoutError):
        return DialFailed("timeout", "timed out connecting to the gateway")
    if isinstance(error, socket.gaierror):
        return DialFailed("dns", f"cannot resolve the gateway's host: {error}")
    if isinstance(error, ConnectionRefusedError):
        return DialFailed("refused", "cannot connect to the gateway: connection refused")
    if isinstance(error, OSError):
        return DialFailed("network", f"cannot reach the gateway: {error}")
    return None
