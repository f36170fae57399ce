"""The agent process: dial, serve the tunnel, reconnect; health endpoints; drain on SIGTERM.

`Agent.run(stop)` is the whole life of an agent: it serves `/healthz`, `/readyz`, `/metrics`
and keeps a tunnel to the gateway, dialing again with jittered exponential backoff whenever
an attempt fails or every tunnel has ended (`agent.reconnect.Reconnect`: dial failures start
over once a tunnel is set up, tunnels that drop at once are backed off from, a gateway's
`Retry-After` is honoured). A gateway of several replicas names them (REPLICAS frames): while
one has no tunnel, the seeker (`agent.seeker`) dials the same address again until the agent
holds a tunnel to each (`agent.tunnels`); every tunnel serves streams alike.
When `stop` is set it sends GOAWAY on every tunnel, lets in-flight requests finish within the
drain grace, closes the tunnels and returns. `run_agent` wraps that in a process: SIGTERM and
SIGINT set `stop`, and the exit code is 0 after a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from random import random as random_fraction

import structlog
from websockets.asyncio.client import ClientConnection

from agent.dialer import DialFailed, GatewayRejected, dial, load_client_credentials
from agent.discovery import kubernetes_version
from agent.health import HealthServer, TunnelState
from agent.metrics import AgentMetrics
from agent.reconnect import Reconnect
from agent.seeker import Seeker
from agent.settings import AgentSettings
from agent.tunnels import TunnelSet
from certs import CertificateFields
from kubeproxy import (
    ConnectionPool,
    H2Pool,
    Proxy,
    Upstream,
    UpstreamConfigError,
    load_in_cluster,
    load_kubeconfig,
)
from protocol import CAPABILITY_REPLICAS, Connection, ErrorCode, Role, Settings
from protocol.backoff import Backoff, BackoffPolicy
from protocol.settings import RELAY_STREAM_WINDOW
from tunnel import Heartbeat, TunnelSession, WebSocketChannel, event_loop
from tunnel.contract import (
    CAPABILITY_UPGRADE,
    IDENTITY_AGENT_ID,
    IDENTITY_AGENT_VERSION,
    IDENTITY_KUBERNETES_VERSION,
    IDENTITY_PLANE,
)
from tunnel.loop_metrics import register_task_gauge
from tunnel.role_metrics import planelink_version

_DISCOVERY_TIMEOUT = 3.0  # seconds to learn the Kubernetes version while the dial goes on


AGENT_VERSION = planelink_version()


def load_upstream(settings: AgentSettings, environ: Mapping[str, str]) -> Upstream:
    """The API server from the kubeconfig if one is set, else from the in-cluster files."""
    if settings.kubeconfig is not None:
        return load_kubeconfig(settings.kubeconfig, context=settings.kube_context)
    return load_in_cluster(settings.in_cluster_root, environ)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one connection attempt ended: how long the tunnel was up (None: never), and why."""

    up_for: float | None
    reason: str
    retry_after: float | None = None
    """Seconds the gateway asked the agent to wait before dialing again."""


class Agent:
    """One agent: its tunnel, its proxy, its pool and its health endpoints.

    Raises UpstreamConfigError at construction when the API server cannot be configured.
    """

    def __init__(
        self,
        settings: AgentSettings,
        *,
        upstream: Upstream | None = None,
        environ: Mapping[str, str] | None = None,
        metrics: AgentMetrics | None = None,
        random: Callable[[], float] | None = None,
        protocol_settings: Settings | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or AgentMetrics()
        self.state = TunnelState()
        self.upstream = upstream or load_upstream(
            settings, os.environ if environ is None else environ
        )
        self._protocol_settings = protocol_settings or Settings(
            max_concurrent_streams=settings.max_streams, initial_stream_window=RELAY_STREAM_WINDOW
        )
        self._log: structlog.stdlib.BoundLogger = structlog.get_logger("planelink.agent").bind(
            plane=settings.plane, agent_id=settings.agent_id
        )
        self.pool = ConnectionPool(
            self.upstream,
            max_idle=settings.pool_max_idle,
            idle_timeout=settings.pool_idle_timeout,
            connect_timeout=settings.upstream_connect_timeout,
            metrics=self.metrics,
        )
        self.h2_pool = (
            H2Pool(
                self.upstream,
                max_connections=settings.upstream_http2_max_connections,
                idle_timeout=settings.pool_idle_timeout,
                connect_timeout=settings.upstream_connect_timeout,
                metrics=self.metrics,
            )
            if settings.upstream_http2
            else None
        )
        self.proxy = Proxy(
            pool=self.pool,
            h2_pool=self.h2_pool,
            metrics=self.metrics,
            response_timeout=settings.upstream_response_timeout,
            logger=self._log,
            log_streams=True,
        )
        self.reconnect = Reconnect(
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            reset_after=settings.backoff_reset_after,
            random=random,
        )
        host, port = settings.health_host_port
        self.health = HealthServer(state=self.state, metrics=self.metrics, host=host, port=port)
        self.session: TunnelSession | None = None
        """The tunnel of the agent's own loop (`tunnels` holds it and the seeker's)."""
        self.tunnels = TunnelSet(on_change=self._tunnels_changed)
        self.seeker = Seeker(
            tunnels=self.tunnels,
            open_tunnel=self._open_tunnel,
            serve=self._serve_found,
            backoff=Backoff(
                BackoffPolicy(base=settings.backoff_base, cap=settings.backoff_cap), random=random
            ),
            metrics=self.metrics,
            max_tunnels=settings.max_tunnels,
            hello_timeout=settings.connect_timeout,
            logger=self._log,
            join_spread=settings.replica_join_spread,
            random=random or random_fraction,
        )
        self._seeking: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the health endpoints are served (`health.port` is then known)."""
        self.kubernetes_version: str | None = None
        self._certificate_serial: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then drain and return."""
        self._stop = stop
        register_task_gauge(self.metrics.registry, "planelink_agent_asyncio_tasks")
        await self.health.start()
        self.started.set()
        self._log.info(
            "agent starting",
            gateway=self.settings.connect_url,
            upstream=self.upstream.url,
            upstream_from=self.upstream.source,
            health_port=self.health.port,
            version=AGENT_VERSION,
        )
        try:
            while not stop.is_set():
                outcome = await self._connect_once(stop)
                if stop.is_set():
                    break
                outcome = await self._while_tunnels_held(outcome, stop)
                if stop.is_set():
                    break
                delay, attempt = self._delay_after(outcome)

                self._log.warning(
                    "tunnel down" if outcome.up_for is not None else "connection attempt failed",
                    reason=outcome.reason,
                    attempt=attempt,
                    retry_in_seconds=round(delay, 3),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            if self._seeking is not None:
                self._seeking.cancel()  # a dial in flight is dropped
                await asyncio.gather(self._seeking, return_exceptions=True)
            if not stop.is_set():  # cancelled from outside: no drain
                self.seeker.cancel_served()
            await self.seeker.wait_served()  # they drain on `stop` as the loop's tunnel did
            self.state.set_down("agent stopped")
            self.pool.close()
            if self.h2_pool is not None:
                self.h2_pool.close()
            await self.health.stop()
            self._log.info("agent stopped")

    async def _while_tunnels_held(self, outcome: _Outcome, stop: asyncio.Event) -> _Outcome:
        """Wait while tunnels the seeker found still serve (the agent's loop dials only when
        it holds none, and the seeker only while it holds some); a tunnel that ended counts
        as up for as long as the agent was served."""
        started = time.monotonic()
        served = bool(self.tunnels)
        if served:
            self._log.info(
                "tunnel down, others still serve", reason=outcome.reason, tunnels=len(self.tunnels)
            )
            empty = asyncio.create_task(self.tunnels.wait_empty())
            stopping = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({empty, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                empty.cancel()
                stopping.cancel()
        if self._seeking is not None:
            self._seeking.cancel()  # a dial in flight would race the loop's own
        if outcome.up_for is None or not served:
            return outcome
        return _Outcome(outcome.up_for + time.monotonic() - started, outcome.reason)

    def _delay_after(self, outcome: _Outcome) -> tuple[float, int]:
        """How long to wait before the next dial, and the attempt number to log."""
        reconnect = self.reconnect
        if outcome.up_for is not None:
            return reconnect.after_tunnel(outcome.up_for), reconnect.tunnels.attempt
        return reconnect.after_failed_dial(outcome.retry_after), reconnect.dials.attempt

    async def _connect_once(self, stop: asyncio.Event) -> _Outcome:
        try:
            websocket = await self._dial()
        except DialFailed as failure:
            self.metrics.connect_failures.labels(failure.reason).inc()
            self.state.set_down(failure.message)
            retry_after = failure.retry_after if isinstance(failure, GatewayRejected) else None
            return _Outcome(None, failure.message, retry_after)
        session = self._new_session(websocket)
        self.session = session
        try:
            return await self._serve(session, stop)
        finally:
            self.session = None

    async def _open_tunnel(self) -> tuple[TunnelSession, asyncio.Task[str]]:
        """Dial and start a session for the seeker; raises DialFailed."""
        session = self._new_session(await self._dial())
        return session, asyncio.create_task(session.run(), name="tunnel-session")

    async def _dial(self) -> ClientConnection:
        """One WebSocket to the gateway, with credentials read afresh; raises DialFailed."""
        settings = self.settings
        credentials = load_client_credentials(settings.tls_files)
        self._note_certificate(credentials.certificate)
        self.metrics.credentials_loaded(
            plane=settings.plane,
            client=credentials.certificate,
            gateway_ca=settings.gateway_ca_file,
        )
        # The version goes into the HELLO; learn it while the dial goes on.
        discovery = asyncio.create_task(self._discover())
        try:
            websocket = await dial(
                settings.connect_url,
                credentials,
                open_timeout=settings.connect_timeout,
                max_message_size=self._protocol_settings.max_message_size,
                user_agent=f"planelink-agent/{AGENT_VERSION}",
            )
        except BaseException:
            discovery.cancel()
            raise
        await discovery  # bounded by _DISCOVERY_TIMEOUT
        return websocket

    def _new_session(self, websocket: ClientConnection) -> TunnelSession:
        settings = self.settings
        connection = Connection(
            Role.AGENT,
            settings=self._protocol_settings,
            identity=self._identity(),
            capabilities=[CAPABILITY_UPGRADE, CAPABILITY_REPLICAS],
        )

        def replicas_reported(_: frozenset[str]) -> None:
            self.tunnels.report(session)

        session = TunnelSession(
            WebSocketChannel(websocket),
            connection,
            heartbeat=Heartbeat(
                settings.heartbeat_interval, settings.heartbeat_timeout, settings.write_timeout
            ),
            request_handler=self.proxy.handle,
            replicas_handler=replicas_reported,
            logger=self._log,
        )
        return session

    def _tunnels_changed(self, tunnels: TunnelSet) -> None:
        held = len(tunnels)
        self.metrics.tunnels.set(held)
        self.metrics.tunnel_up.set(1 if held else 0)
        self.state.held = held
        if held:
            self.state.set_up()

    def _hold(self, session: TunnelSession) -> bool:
        """Hold a tunnel whose HELLO arrived; False when its replica is held already."""
        if self.tunnels.claim(session) is None:
            return False
        replica_id = self.tunnels.replica_of(session)
        if replica_id is not None:
            session.bind_log(gateway_id=replica_id)
        seeking = self._seeking
        if seeking is None or seeking.done() or seeking.cancelling():
            self._seeking = asyncio.create_task(self.seeker.run(self._stop), name="seeker")
        return True

    async def _serve(self, session: TunnelSession, stop: asyncio.Event) -> _Outcome:
        """Serve the loop's own tunnel: wait for the HELLO, hold it, serve until it ends."""
        run = asyncio.create_task(session.run(), name="tunnel-session")
        hello = asyncio.create_task(session.wait_ready(), name="tunnel-hello")
        stopping = asyncio.create_task(stop.wait(), name="agent-stop")
        try:
            # wait_ready() fails with SessionClosed if the session ends before the HELLO.
            await asyncio.wait({hello, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            session.close("agent cancelled", ErrorCode.CANCEL)
            await asyncio.gather(run, return_exceptions=True)
            raise
        finally:
            hello.cancel()
            stopping.cancel()
        up_since: float | None = None
        if hello.done() and not hello.cancelled() and hello.exception() is None:
            if not self._hold(session):
                # Only when a tunnel the seeker found outlived the wait for none: rare.
                self.metrics.duplicate_dials.inc()
                session.close("the agent holds a tunnel to this replica already")
                await asyncio.gather(run, return_exceptions=True)
                return _Outcome(None, "the dial landed on a replica already held")
            up_since = time.monotonic()
            self.reconnect.tunnel_up()
            self.metrics.connects.inc()
            self._log.info("tunnel up", gateway=dict(hello.result().identity))
        reason = await self._until_ended(session, run, stop)
        if up_since is None:
            if not stop.is_set():
                self.metrics.connect_failures.labels("no_hello").inc()
            if not self.tunnels:
                self.state.set_down(f"the tunnel ended before the gateway's HELLO: {reason}")
            return _Outcome(None, reason)
        if not stop.is_set():
            self.metrics.connect_failures.labels("tunnel_lost").inc()
        if not self.tunnels:
            self.state.set_down(f"tunnel lost: {reason}")
        return _Outcome(time.monotonic() - up_since, reason)

    async def _serve_found(self, session: TunnelSession, run: asyncio.Task[str]) -> None:
        """Serve a tunnel the seeker found (held already) until it ends or the agent stops."""
        stop = self._stop
        replica_id = self.tunnels.replica_of(session)
        if replica_id is not None:
            session.bind_log(gateway_id=replica_id)
        self.metrics.connects.inc()
        self._log.info("tunnel up", gateway_id=replica_id, tunnels=len(self.tunnels))
        reason = await self._until_ended(session, run, stop)
        if stop.is_set():
            return
        self.metrics.connect_failures.labels("tunnel_lost").inc()
        self._log.warning(
            "tunnel down", gateway_id=replica_id, reason=reason, tunnels=len(self.tunnels)
        )
        if not self.tunnels:
            self.state.set_down(f"tunnel lost: {reason}")

    async def _until_ended(
        self, session: TunnelSession, run: asyncio.Task[str], stop: asyncio.Event
    ) -> str:
        """Serve until the session ends, or `stop` (then drained within the grace); returns
        why it ended. The tunnel is no longer held afterwards."""
        stopping = asyncio.create_task(stop.wait(), name="agent-stop")
        try:
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not run.done():
                await self._drain(session, run)
            return await run
        finally:
            stopping.cancel()
            if not run.done():  # cancelled from outside: end the session properly
                session.close("agent cancelled", ErrorCode.CANCEL)
                await asyncio.gather(run, return_exceptions=True)
            self.tunnels.release(session)

    async def _drain(self, session: TunnelSession, run: asyncio.Task[str]) -> None:
        """GOAWAY on one tunnel; its streams get the drain grace (every tunnel's run at once)."""
        grace = self.settings.drain_grace
        self._log.info("draining", open_streams=session.open_streams, grace_seconds=grace)
        self.state.set_down("agent shutting down")
        session.drain("agent shutting down")
        try:
            await asyncio.wait_for(asyncio.shield(run), timeout=grace)
        except TimeoutError:
            self._log.warning("drain grace over, closing", open_streams=session.open_streams)
            session.close("agent shutting down: drain grace over", ErrorCode.CANCEL)

    async def _discover(self) -> None:
        if self.kubernetes_version is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DISCOVERY_TIMEOUT):
                    self.kubernetes_version = await kubernetes_version(self.pool)

    def _identity(self) -> dict[str, str]:
        identity = {
            IDENTITY_PLANE: self.settings.plane,
            IDENTITY_AGENT_ID: self.settings.agent_id,
            IDENTITY_AGENT_VERSION: AGENT_VERSION,
        }
        if self.kubernetes_version is not None:
            identity[IDENTITY_KUBERNETES_VERSION] = self.kubernetes_version
        return identity

    def _note_certificate(self, certificate: CertificateFields) -> None:
        if certificate.serial_number != self._certificate_serial:
            self._certificate_serial = certificate.serial_number
            self._log.info(
                "client certificate loaded",
                serial=format(certificate.serial_number, "x"),
                subject=certificate.subject,
                not_after=certificate.not_valid_after_utc.isoformat(),
            )


def run_agent(settings: AgentSettings, *, environ: Mapping[str, str] | None = None) -> int:
    """Run an agent in this process until SIGTERM or SIGINT; returns the exit code."""
    return event_loop.run(
        _main(settings, os.environ if environ is None else environ),
        event_loop=settings.event_loop,
    )


async def _main(settings: AgentSettings, environ: Mapping[str, str]) -> int:
    log = structlog.get_logger("planelink.agent")
    try:
        agent = Agent(settings, environ=environ)
    except UpstreamConfigError as error:
        log.error("cannot configure the API server", error=str(error))
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        log.info("signal received, stopping", signal=signum.name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await agent.run(stop)
    except OSError as error:  # the health address is taken, typically
        log.error("agent failed", error=str(error))
        return 1
    return 0
