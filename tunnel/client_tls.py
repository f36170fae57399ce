"""The client's half of TLS alerts: an agent that refuses the gateway's certificate says so.

asyncio's TLS layer drops the alert OpenSSL writes when a client refuses the server's
certificate (unknown_ca, bad_certificate, certificate_expired): the server sees a bare reset
and cannot tell "the agent does not trust me" from a network fault. A `ClientTlsContext` hands
out TLS objects that, when their handshake fails, send the pending alert on a descriptor of the
connection's own socket, named per connection with `alerts_to_socket(sock)` around the connect
(asyncio creates the TLS object in a callback scheduled by the connect, which runs in the
calling task's context). `open_socket` makes the TCP connection whose descriptor that is.

The gateway's side of the same fault is `gateway.tls_alerts`. This module never decides
whether a handshake succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator
from contextvars import ContextVar

_ALERT_SOCKET: ContextVar[socket.socket | None] = ContextVar(
    "planelink_tls_alert_socket", default=None
)


class _AlertingClientSSLObject(ssl.SSLObject):
    _alert_bio: ssl.MemoryBIO | None = None
    _alert_socket: socket.socket | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError:
            self._send_alert()
            raise

    def _send_alert(self) -> None:
        bio, sock = self._alert_bio, self._alert_socket
        if bio is None or sock is None:
            return
        alert = bio.read()
        if alert:
            with contextlib.suppress(OSError):  # a few bytes: the send buffer takes them
                sock.send(alert)


class ClientTlsContext(ssl.SSLContext):
    """`ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)` whose failed handshakes send their alert."""

    sslobject_class = _AlertingClientSSLObject

    def __new__(cls) -> ClientTlsContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        wrapped = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if isinstance(wrapped, _AlertingClientSSLObject):
            wrapped._alert_bio = outgoing
            wrapped._alert_socket = _ALERT_SOCKET.get()
        return wrapped


@contextlib.contextmanager
def alerts_to_socket(sock: socket.socket) -> Iterator[None]:
    """Within this block, TLS objects created by a `ClientTlsContext` send a failed
    handshake's alert on `sock` (a `dup` of the socket handed to asyncio)."""
    token = _ALERT_SOCKET.set(sock)
    try:
        yield
    finally:
        _ALERT_SOCKET.reset(token)


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket to `host:port` (each address in turn); raises the
    last address's OSError (socket.gaierror if the name does not resolve)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as error:
            sock.close()
            last = error
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last
