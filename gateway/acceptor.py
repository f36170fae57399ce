"""The accept path of a TLS port: admission, the ClientHello and handshake deadlines, TLS.

Both the agent and the caller port accept through a `TlsAcceptor`; each hands it a factory
for the protocol that serves a connection once TLS is up. For every accepted socket:

1. The port's `ConnectionBudget` decides (per-address and global limits; a newcomer may evict
   the oldest unauthenticated connection). A refusal closes the socket at once.
2. Until the first byte of the ClientHello the connection is a bare socket watched by the
   loop, with a timer: no task, no transport, no TLS state. Silent sockets cost a descriptor
   and cannot hold a handshake slot.
3. The handshake takes one of `max_concurrent_handshakes` slots, under one deadline for the
   wait and the handshake. A failed handshake sends its TLS alert (`gateway.tls_alerts`), is
   logged as the port's `tls_failure_event` and counted by the port before the socket closes
   - unless the client aborted it because it does not trust the gateway's certificate: that
   is logged as "<port> did not trust the gateway's certificate" and counted as
   `untrusted_by_peer`, never as a refusal of the client.
4. A peer that presented a certificate that verified is authenticated; the port's protocol may
   authenticate a connection later (a caller with a token). The slot is released when the
   connection is lost, however it ends.

Every limit that bites, deadline that passes and handshake that fails is counted in
`planelink_gateway_connections_refused_total{port,reason}` and logged, at most once per
`LOG_INTERVAL` per port, event and reason (a flood must not become a flood of log lines).

This module never reads or writes application bytes: what flows after TLS is the port's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Callable
from typing import cast

import structlog

from gateway.admission import AdmissionSettings, ConnectionBudget, Refusal, Slot
from gateway.metrics import ConnectionCounts, GatewayMetrics
from gateway.tls_alerts import untrusted_by_peer
from tunnel.tls_alerts import alerts_to_socket

log = structlog.get_logger("gateway.acceptor")

LOG_INTERVAL = 10.0
LINGERING_CLOSE_SECONDS = 1.0
"""After a refusal, how long a peer's further bytes are read and dropped before the close
(RFC 9112 §9.6): closing a socket with unread bytes makes the kernel send a reset, which can
destroy the refusal before the peer has read it."""
"""Seconds between two log lines of one port and reason when a limit keeps biting."""

_ACCEPT_PAUSE = 0.1  # after EMFILE and the like: let connections end before accepting again
_ACCEPT_BATCH = 128  # connections taken from the backlog at once, beyond the one awaited
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

TlsFailureHandler = Callable[[str, str], None]
"""Called with (reason, detail) when a handshake fails, for the port's own count; the acceptor
logs the failure (rate-limited: a flood of bad handshakes must not flood the log)."""


class Admitted:
    """A connection past TLS, as its port's protocol sees it."""

    def __init__(self, acceptor: TlsAcceptor, slot: Slot, remote: str) -> None:
        self._acceptor = acceptor
        self._slot = slot
        self.remote = remote
        """`address:port` of the peer."""
        self.transport: asyncio.Transport | None = None

    @property
    def authenticated(self) -> bool:
        return self._slot.authenticated

    def authenticate(self) -> None:
        """The peer proved who it is (e.g. a token): it can no longer be evicted."""
        self._acceptor._budget.authenticate(self._slot)

    def dropped(self, reason: Refusal, detail: str) -> None:
        """The port ended this connection for `reason` (a deadline): count and log it."""
        self._acceptor.report(reason, detail=detail, remote=self.remote)

    def _evict(self) -> None:
        if self.transport is not None:
            self.transport.abort()


ProtocolFactory = Callable[[Admitted], asyncio.Protocol]


class _Tracked(asyncio.Protocol):
    """The port's protocol, told the connection is made once TLS is up, with its slot
    released when the connection is lost.

    The loop's TLS layer makes the connection when the handshake completes, before it hands
    over any application bytes (TLS 1.3 clients send their request with their last handshake
    message) and before `connect_accepted_socket` returns: `on_made` records it then.
    """

    def __init__(
        self,
        inner: asyncio.Protocol,
        on_made: Callable[[asyncio.Transport], None],
        release: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._on_made = on_made
        self._release = release
        self._made = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._made = True
        self._on_made(cast(asyncio.Transport, transport))
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        if self._made:  # pragma: no cover - both loops tell only a protocol they made
            self._inner.connection_lost(exc)


class _Pending:
    """An accepted socket before TLS is up: waiting for its ClientHello, then handshaking."""

    def __init__(self, acceptor: TlsAcceptor, sock: socket.socket, slot: Slot, remote: str):
        self.acceptor = acceptor
        self.sock = sock
        self.slot = slot
        self.remote = remote
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.admitted: Admitted | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        loop.add_reader(self.sock.fileno(), self._hello_arrived)
        self.timer = loop.call_later(timeout, self._hello_late)

    def _stop_watching(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            asyncio.get_running_loop().remove_reader(self.sock.fileno())

    def _hello_arrived(self) -> None:
        self._stop_watching()
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except OSError:
            first = b""
        if not first:  # the peer left before saying anything: nothing to report
            self.end()
            return
        self.task = asyncio.get_running_loop().create_task(self.acceptor._handshake(self))

    def _hello_late(self) -> None:
        self.timer = None
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.acceptor.report(
            Refusal.CLIENT_HELLO_TIMEOUT, detail="no ClientHello", remote=self.remote
        )
        self.end()

    def evict(self) -> None:
        self.acceptor.report(Refusal.EVICTED, detail="oldest unauthenticated", remote=self.remote)
        if self.admitted is not None:
            self.admitted._evict()
        elif self.task is not None:
            self.task.cancel()
        else:
            self.end()

    def end(self) -> None:
        """Close the bare socket (before a transport owns it) and free the slot."""
        self._stop_watching()
        self.sock.close()
        self.acceptor._forget(self)


class TlsAcceptor:
    """Accepts the connections of one port (`name`: "agent" or "caller")."""

    def __init__(
        self,
        name: str,
        *,
        settings: AdmissionSettings,
        tls_context: Callable[[], ssl.SSLContext],
        protocol_factory: ProtocolFactory,
        on_tls_failure: TlsFailureHandler,
        tls_failure_event: str,
        metrics: GatewayMetrics,
    ) -> None:
        self.name = name
        self._tls_failure_event = tls_failure_event
        self._settings = settings
        self._tls_context = tls_context
        """The context of the next handshake (the agent port's changes once start-up ends)."""
        self._protocol_factory = protocol_factory
        self._on_tls_failure = on_tls_failure
        self._metrics = metrics
        self._budget = ConnectionBudget(settings)
        self._pending: dict[Slot, _Pending] = {}
        self._handshakes = asyncio.Semaphore(settings.max_concurrent_handshakes)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._last_logged: dict[tuple[str, str], tuple[float, int]] = {}
        metrics.watch_connections(name, self._counts)

    @property
    def budget(self) -> ConnectionBudget:
        return self._budget

    def _counts(self) -> ConnectionCounts:
        unauthenticated = self._budget.unauthenticated
        return ConnectionCounts(self._budget.total - unauthenticated, unauthenticated)

    @property
    def listener(self) -> socket.socket:
        assert self._listener is not None
        return self._listener

    def listen(
        self, host: str, port: int, *, backlog: int, reuse_port: bool = False
    ) -> socket.socket:
        """Bind the port (0: the kernel picks one); `serve` then accepts on it.

        With `reuse_port` (SO_REUSEPORT), the worker processes of one gateway each bind the
        same port and the kernel spreads new connections among them.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server(
            (host, port), family=family, backlog=backlog, reuse_port=reuse_port
        )
        self._listener.setblocking(False)
        return self._listener

    def serve(self) -> None:
        self._accepting = asyncio.get_running_loop().create_task(
            self._accept_forever(), name=f"accept-{self.name}"
        )

    async def close(self) -> None:
        """Stop accepting and end every connection still before TLS."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
        tasks = []
        for pending in list(self._pending.values()):
            if pending.task is not None:
                pending.task.cancel()
                tasks.append(pending.task)
            elif pending.admitted is None:
                pending.end()
        await asyncio.gather(*tasks, return_exceptions=True)

    def report(self, reason: Refusal, *, detail: str, remote: str) -> None:
        """Count a refusal or drop, and log it unless this reason was logged just now."""
        self._metrics.connections_refused.labels(port=self.name, reason=reason.value).inc()
        self._log("connection refused", reason.value, detail=detail, remote=remote)

    def _log(self, event: str, reason: str, *, detail: str, remote: str) -> None:
        """Log `event` for `reason`, at most once per `LOG_INTERVAL`; the next line says how
        many were left out meanwhile."""
        now = time.monotonic()
        key = (event, reason)
        logged_at, suppressed = self._last_logged.get(key, (-LOG_INTERVAL, 0))
        if now - logged_at < LOG_INTERVAL:
            self._last_logged[key] = (logged_at, suppressed + 1)
            return
        self._last_logged[key] = (now, 0)
        log.warning(
            event,
            port=self.name,
            reason=reason,
            detail=detail,
            remote=remote,
            suppressed_since_last=suppressed,
        )

    # -- accepting ------------------------------------------------------------------------------

    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        listener = self.listener
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
                self._admit(loop, sock, f"{address[0]}:{address[1]}", address[0])
                # uvloop's sock_accept takes one connection per turn of the loop, after a poll:
                # take what else waits in the backlog now. asyncio's takes the whole backlog
                # without yielding (5,000 waiting dials: a second of nothing else): a batch,
                # then the loop's other work gets its turn.
                for _ in range(_ACCEPT_BATCH):
                    try:
                        sock, address = listener.accept()
                    except BlockingIOError:
                        break
                    self._admit(loop, sock, f"{address[0]}:{address[1]}", address[0])
                else:
                    await asyncio.sleep(0)
            except OSError as error:
                if error.errno not in _RESOURCE_ERRORS:
                    raise
                self.report(Refusal.GLOBAL_LIMIT, detail=f"accept: {error}", remote="unknown")
                await asyncio.sleep(_ACCEPT_PAUSE)

    def _admit(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, remote: str, ip: str
    ) -> None:
        decision = self._budget.admit(ip)
        if decision.evicted is not None:
            evicted = self._pending.get(decision.evicted)
            if evicted is not None:
                evicted.evict()
        if decision.slot is None:
            assert decision.refusal is not None
            sock.close()
            self.report(decision.refusal, detail="limit reached", remote=remote)
            return
        sock.setblocking(False)
        # asyncio disables Nagle only on sockets whose `proto` says TCP, and an accepted socket
        # of `socket.create_server` says 0: without this, a small write that follows another
        # (an HTTP/2 response's DATA after its HEADERS, a tunnel message after one in flight)
        # waits for the peer's delayed ACK, 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = _Pending(self, sock, decision.slot, remote)
        self._pending[decision.slot] = pending
        pending.watch(loop, self._settings.client_hello_timeout)

    def _forget(self, pending: _Pending) -> None:
        self._pending.pop(pending.slot, None)
        self._budget.release(pending.slot)

    # -- TLS ------------------------------------------------------------------------------------

    async def _handshake(self, pending: _Pending) -> None:
        """TLS on the accepted socket, by the loop's own TLS layer (asyncio's or uvloop's: a
        raw transport handed to `start_tls` does not work under uvloop, which reads the socket
        whatever the raw protocol paused). A failed handshake's alert goes out on a duplicate
        of the socket, whose own descriptor the loop closes at once."""
        loop = asyncio.get_running_loop()
        timeout = self._settings.tls_handshake_timeout
        handed_over = False  # from then on the loop owns the socket, and closes it
        try:
            async with asyncio.timeout(timeout):
                async with self._handshakes:
                    admitted = Admitted(self, pending.slot, pending.remote)

                    def made(tls: asyncio.Transport) -> None:
                        admitted.transport = tls
                        pending.admitted = admitted
                        if tls.get_extra_info("peercert"):
                            # OpenSSL verified it against the port's CAs, or the handshake
                            # would have failed.
                            admitted.authenticate()

                    tracked = _Tracked(
                        self._protocol_factory(admitted), made, lambda: self._forget(pending)
                    )
                    with pending.sock.dup() as spare, alerts_to_socket(spare):
                        handed_over = True
                        await loop.connect_accepted_socket(
                            lambda: tracked,
                            pending.sock,
                            ssl=self._tls_context(),
                            ssl_handshake_timeout=timeout,
                            ssl_shutdown_timeout=timeout,
                        )
        except (OSError, TimeoutError) as error:
            self._handshake_failed(pending, handed_over, error)
            return
        except asyncio.CancelledError:
            self._end_before_tls(pending, handed_over)
            raise
        pending.task = None

    def _handshake_failed(self, pending: _Pending, handed_over: bool, error: BaseException) -> None:
        distrust = untrusted_by_peer(error, port=self.name)
        if distrust is not None:
            # Not a refusal of the client: the client refused the gateway.
            refused = Refusal.UNTRUSTED_BY_PEER
            self._metrics.connections_refused.labels(port=self.name, reason=refused.value).inc()
            self._log(
                f"{self.name} did not trust the gateway's certificate",
                refused.value,
                detail=distrust,
                remote=pending.remote,
            )
            self._end_before_tls(pending, handed_over)
            return
        reason, detail = tls_failure(error)
        refusal = Refusal.TLS_HANDSHAKE_TIMEOUT if reason == "TLSTimeout" else Refusal.TLS_FAILED
        self._metrics.connections_refused.labels(port=self.name, reason=refusal.value).inc()
        self._on_tls_failure(reason, detail)
        self._log(self._tls_failure_event, reason, detail=detail, remote=pending.remote)
        self._end_before_tls(pending, handed_over)

    def _end_before_tls(self, pending: _Pending, handed_over: bool) -> None:
        if handed_over:  # the loop closed the socket as the handshake failed or was cancelled
            self._forget(pending)
        else:
            pending.end()


_VERIFY_FAILURES = (
    # (what OpenSSL's verify message contains, reason, what to add for the operator)
    ("expired", "Expired", ""),
    ("not yet valid", "NotYetValid", " (check the clocks)"),
    ("purpose", "NotClientAuth", " (the certificate lacks the clientAuth usage)"),
    ("signature", "BadSignature", " (the certificate is corrupt or forged)"),
)


def tls_failure(error: BaseException) -> tuple[str, str]:
    """A reason (CamelCase, for metrics) and a detail (for the log) for a failed handshake."""
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or str(error)
        for fragment, reason, hint in _VERIFY_FAILURES:
            if fragment in message:
                return reason, message + hint
        return "Untrusted", f"{message} (issued by no CA this port trusts)"
    if isinstance(error, ssl.SSLError) and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in (
        error.reason or ""
    ):
        return "NoCertificate", "the peer presented no client certificate"
    if isinstance(error, TimeoutError) or (
        isinstance(error, ConnectionAbortedError) and "taking longer" in str(error)
    ):
        # The second: asyncio's own handshake deadline (ours usually passes first).
        return "TLSTimeout", "the TLS handshake did not finish in time"
    return "TLSError", str(error) or type(error).__name__
