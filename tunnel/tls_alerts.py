"""TLS contexts whose failed handshakes tell the other side why, with the TLS alert.

asyncio's TLS layer drops the alert OpenSSL writes when a handshake fails, on either side: a
server that refuses a client's certificate, and a client that refuses the server's
(unknown_ca, bad_certificate, certificate_expired), both end in a bare close the other side
cannot tell from a network fault. An `AlertingTlsContext` hands out TLS objects that, when
their handshake fails, hand the pending alert to a sink named per connection with
`alerts_to(sink)` around the code that makes the TLS object (asyncio creates it in a callback
scheduled by `start_tls` or `create_connection`, which runs in the calling task's context).

`ClientTlsContext` is the agent's; the gateway's server side is `gateway.tls_alerts`.
`open_socket` makes the TCP connection whose duplicate descriptor a client's sink writes to.
This module only sends alerts: it never decides whether a handshake succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextvars import ContextVar

AlertSink = Callable[[bytes], None]
"""Writes a failed handshake's alert to the connection's raw byte stream."""

_ALERT_SINK: ContextVar[AlertSink | None] = ContextVar("planelink_tls_alert_sink", default=None)


class _AlertingSSLObject(ssl.SSLObject):
    _alert_bio: ssl.MemoryBIO | None = None
    _alert_sink: AlertSink | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError:
            self._send_alert()
            raise

    def _send_alert(self) -> None:
        bio, sink = self._alert_bio, self._alert_sink
        if bio is None or sink is None:
            return
        alert = bio.read()
        if alert:
            sink(alert)


class AlertingTlsContext(ssl.SSLContext):
    """An `ssl.SSLContext` whose TLS objects send a failed handshake's alert to the sink of
    `alerts_to` (no sink: as plain asyncio, nothing)."""

    sslobject_class = _AlertingSSLObject

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        wrapped = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if isinstance(wrapped, _AlertingSSLObject):
            wrapped._alert_bio = outgoing
            wrapped._alert_sink = _ALERT_SINK.get()
        return wrapped


class ClientTlsContext(AlertingTlsContext):
    """`ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)` whose failed handshakes send their alert."""

    def __new__(cls) -> ClientTlsContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)


@contextlib.contextmanager
def alerts_to(sink: AlertSink) -> Iterator[None]:
    """Within this block, TLS objects created by an `AlertingTlsContext` send a failed
    handshake's alert to `sink`."""
    token = _ALERT_SINK.set(sink)
    try:
        yield
    finally:
        _ALERT_SINK.reset(token)


def alerts_to_socket(sock: socket.socket) -> contextlib.AbstractContextManager[None]:
    """`alerts_to` a descriptor of the connection's socket (a `dup` of the one handed to
    asyncio, which closes its own at once on a failed handshake)."""

    def send(alert: bytes) -> None:
        with contextlib.suppress(OSError):  # a few bytes: the send buffer takes them
            sock.send(alert)

    return alerts_to(send)


async def open_socket(host: str, port: int) -> socket.socket:
    """A connected, non-blocking TCP socket to `host:port` (each address in turn); raises the
    last address's OSError (socket.gaierror if the name does not resolve)."""
    loop = asyncio.get_running_loop()
    infos = _literal_address(host, port) or await loop.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )
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


_AddressInfo = tuple[
    socket.AddressFamily, socket.SocketKind, int, str, tuple[str, int] | tuple[str, int, int, int]
]


def _literal_address(host: str, port: int) -> list[_AddressInfo] | None:
    """`host:port` as getaddrinfo would give it when `host` is an IP address literal; None for a
    name. asyncio resolves even a literal in its executor: a thread started for each process's
    first dial, on the way to an agent's first tunnel, and kept."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        address = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)]
    return None
