"""Dialing the gateway: one WebSocket over mutual TLS, with the credentials read afresh.

The client certificate, its key and the gateway's CA are read from their files at every
attempt, so a certificate renewed by cert-manager is presented on the next connection without
a restart. This is the boundary for websockets', ssl's and the OS's errors: they all become
`DialFailed`, whose `reason` is a short class for metrics and whose message is for the log
(`GatewayRejected` carries the gateway's status, rejection reason and body). A gateway whose
certificate the agent does not accept is named (subject, issuer, fingerprint, its names) with
the setting that fixes it, from a second, unverified look at its certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

import certs
import certs.ssl_first
from agent.settings import AgentTlsFiles
from tunnel.channel import RECEIVE_QUEUE, GuardedClientConnection
from tunnel.contract import REJECTION_HEADER, SUBPROTOCOL
from tunnel.tls_alerts import ClientTlsContext, alerts_to_socket, open_socket

if TYPE_CHECKING:
    from cryptography import x509

_BODY_LIMIT = 300  # characters of a rejection body worth a log line
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


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
    """The TLS material of one attempt: a context, the certificate it presents, the CAs it
    trusts for the gateway and the files all of it came from."""

    context: ssl.SSLContext
    certificate: certs.CertificateFields
    gateway_cas: tuple[certs.CertificateFields, ...]
    files: AgentTlsFiles


def client_context(files: AgentTlsFiles) -> ClientCredentials:
    """The TLS context of one dial, from the files as they are now; raises WrongFileError
    naming the file that does not hold what it should."""
    context = ClientTlsContext()  # verifies the gateway and its name; says why it refuses
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    gateway_cas = certs.ssl_first.load_verify_locations(context, files.gateway_ca)
    certificate = certs.ssl_first.load_cert_chain(
        context, files.certificate, files.key, role=certs.FileRole.CLIENT_CERTIFICATE
    )
    return ClientCredentials(
        context=context, certificate=certificate, gateway_cas=tuple(gateway_cas), files=files
    )


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
    loop = asyncio.get_running_loop()
    deadline = loop.time() + open_timeout
    parts = urlsplit(url)
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout_at(deadline):
            sock = await open_socket(parts.hostname or "", parts.port or 443)
        # A second descriptor of the socket, for the alert of a refused gateway certificate
        # (asyncio would drop it): the gateway learns that the agent does not trust it.
        with sock.dup() as spare, alerts_to_socket(spare):
            websocket = await _connect(
                url,
                sock,
                credentials,
                open_timeout=max(deadline - loop.time(), 0.001),
                max_message_size=max_message_size,
                user_agent=user_agent,
            )
    except ssl.SSLCertVerificationError as error:
        # Which certificate the gateway showed is worth a second, unverified look: the
        # operator must learn which CA to give the agent, or which name to dial.
        shown = await _gateway_certificate(url, credentials, within=open_timeout)
        raise distrusted_gateway(error, shown, credentials=credentials, url=url) from error
    except BaseException as error:
        if sock is not None:
            sock.close()  # asyncio closes it once it owns it; before, it is ours to close
        translated = _translate(error)
        if translated is None:
            raise
        raise translated from error
    if websocket.subprotocol != SUBPROTOCOL:
        await websocket.close(1002, "subprotocol planelink.v1 required")
        raise DialFailed("handshake", f"the gateway did not accept subprotocol {SUBPROTOCOL!r}")
    structlog.get_logger().debug("websocket open", url=url)
    return websocket


async def _connect(
    url: str,
    sock: socket.socket,
    credentials: ClientCredentials,
    *,
    open_timeout: float,
    max_message_size: int,
    user_agent: str,
) -> ClientConnection:
    return await connect(
        url,
        sock=sock,
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


def distrusted_gateway(
    error: ssl.SSLCertVerificationError,
    shown: x509.Certificate | None,
    *,
    credentials: ClientCredentials,
    url: str,
) -> DialFailed:
    """The failure of a dial whose gateway certificate the agent does not accept: which
    certificate, why (not issued by a trusted CA, expired, not for the dialled name), and the
    setting that fixes it. `shown` is the gateway's certificate, if a second look got it."""
    host = urlsplit(url).hostname or url
    verify_message = error.verify_message or str(error)
    if shown is None:
        return DialFailed(
            "gateway_untrusted",
            f"the agent does not trust the gateway's certificate ({verify_message})"
            + _trust_hint(credentials),
        )
    info = certs.describe(shown)
    label = f"{info.label} [SHA-256 {info.sha256_fingerprint[:23]}...]"
    if error.verify_code == _HOSTNAME_MISMATCH:
        names = ", ".join((*info.dns_names, *info.ip_addresses)) or "none"
        return DialFailed(
            "gateway_name_mismatch",
            f"the gateway's certificate {label} is not for {host!r}: its names are [{names}] "
            f"(dial one of them in --gateway-url / PLANELINK_GATEWAY_URL, or re-issue the "
            f"gateway's certificate with --dns {host})",
        )
    try:
        certs.verify_certificate_chain(
            shown,
            trusted=[certs.load_certificate(ca.der) for ca in credentials.gateway_cas],
            kind="the gateway's certificate",
        )
    except certs.CertificateRejected as rejected:
        why = rejected.message.replace(info.label, label, 1)
    else:  # what OpenSSL refused is not what planelink checks (a missing intermediate?)
        why = f"the gateway's certificate {label} was refused by TLS: {verify_message}"
    return DialFailed(
        "gateway_untrusted",
        f"the agent does not trust the gateway: {why}" + _trust_hint(credentials),
    )


def _trust_hint(credentials: ClientCredentials) -> str:
    ca = credentials.files.gateway_ca
    return (
        f"; the agent trusts the CA certificates of {ca.setting.flag} {ca.path}: give it the CA "
        f"that issued the gateway's certificate (set with {ca.setting.hint()})"
    )


async def _gateway_certificate(
    url: str, credentials: ClientCredentials, *, within: float
) -> x509.Certificate | None:
    """The certificate the gateway at `url` presents, fetched without verifying it (and
    without a word sent past TLS), or None if it cannot be had `within` seconds."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to look at the certificate: nothing is sent
    files = credentials.files
    # The agent's certificate, as in any dial: without it the gateway would count this look
    # as an agent refused for presenting none. A certificate is public (TLS 1.2 sends it in
    # the clear), and the proof of its key signs this handshake alone: nothing to replay.
    with contextlib.suppress(ssl.SSLError, OSError):
        context.load_cert_chain(files.certificate.path, files.key.path)
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(
                parts.hostname,
                parts.port or 443,
                ssl=context,
                server_hostname=parts.hostname,
            )
    except (OSError, TimeoutError):
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.transport.abort()
    # cryptography for a gateway the agent refused, to say why: never on a dial that succeeds
    from cryptography import x509  # noqa: PLC0415

    return x509.load_der_x509_certificate(der) if der else None


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
