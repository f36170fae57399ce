"""Server TLS contexts whose failed handshakes tell the client why, with a TLS alert.

asyncio's TLS layer drops a failed server-side handshake without sending the alert OpenSSL
wrote for it: a client whose certificate is refused sees a bare EOF (kubectl retries for a
minute, then prints `EOF`) instead of `unknown certificate authority`. A `ServerTlsContext`
hands out TLS objects that, when their handshake fails, write the pending alert to the
connection's raw transport before asyncio closes it. The transport is named per connection with
`alerts_to(transport)` around `loop.start_tls` (asyncio creates the TLS object in a callback
scheduled by `start_tls`, which runs in the calling task's context).

This module only adds the alert: it never decides whether a handshake succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from contextvars import ContextVar

_RAW_TRANSPORT: ContextVar[asyncio.BaseTransport | None] = ContextVar(
    "planelink_tls_raw_transport", default=None
)


class _AlertingSSLObject(ssl.SSLObject):
    _alert_bio: ssl.MemoryBIO | None = None
    _alert_transport: asyncio.BaseTransport | None = None

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError:
            self._send_alert()
            raise

    def _send_alert(self) -> None:
        bio, transport = self._alert_bio, self._alert_transport
        if bio is None or transport is None or transport.is_closing():
            return
        alert = bio.read()
        if alert and isinstance(transport, asyncio.WriteTransport):
            transport.write(alert)


class ServerTlsContext(ssl.SSLContext):
    """`ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)` whose failed handshakes send their alert."""

    sslobject_class = _AlertingSSLObject

    def __new__(cls) -> ServerTlsContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

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
            wrapped._alert_transport = _RAW_TRANSPORT.get()
        return wrapped


@contextlib.contextmanager
def alerts_to(transport: asyncio.BaseTransport) -> Iterator[None]:
    """Within this block, TLS objects created by a `ServerTlsContext` (as `loop.start_tls`
    creates them) send a failed handshake's alert on `transport`."""
    token = _RAW_TRANSPORT.set(transport)
    try:
        yield
    finally:
        _RAW_TRANSPORT.reset(token)
