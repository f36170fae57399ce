"""Direct-mode planes served like agent planes: an in-process "virtual agent" per plane.

For each plane the reconciler resolves to a `DirectTarget` (`reconciler.direct`), this runs a
tunnel session pair over an in-memory channel: the agent end's request handler is
`kubeproxy.Proxy` — the agent's own proxy code — against the plane's API server, and the gateway
end is registered in the `AgentRegistry` like a connected agent. The caller endpoint therefore
serves `/planes/<ns>/<name>/k8s/...` the same way whatever the plane's mode: same routing,
authentication, flow control, upgrades (exec, port-forward) and error statuses.

Life cycle: a new target starts a virtual agent; a changed target (rotated token, new CA)
starts a new one and drains the old one (its open streams, a watch say, may finish for
`drain_grace` seconds; new streams go to the new one); a removed target closes it at once.
This module never dials the agent listener and never touches trust: the reconciler owns both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

import certs
from certs import PlaneRef
from gateway.agents import AgentConnection, AgentRegistry
from gateway.reconciler.direct import DirectPlanes, DirectTarget
from kubeproxy import ConnectionPool, Proxy, ProxyMetrics, StaticTLS, Upstream
from protocol import Connection, ErrorCode, Role, Settings
from tunnel import Heartbeat, SessionClosed, TunnelSession, memory_channel_pair
from tunnel.contract import CAPABILITY_UPGRADE, IDENTITY_AGENT_ID, IDENTITY_PLANE

log = structlog.get_logger("gateway.direct")

DIRECT_AGENT_ID = "direct"


@dataclass(frozen=True)
class DirectSettings:
    """How the gateway proxies to direct-mode planes (the agent's defaults)."""

    connect_timeout: float = 10.0
    response_timeout: float = 60.0
    pool_max_idle: int = 16
    pool_idle_timeout: float = 60.0
    drain_grace: float = 30.0
    tunnel: Settings | None = None


def upstream_for(target: DirectTarget) -> Upstream:
    """The kubeproxy upstream of a direct target: its server, TLS context and token."""
    server = urlsplit(target.server)
    if server.hostname is None:
        raise ValueError(f"direct target {target.plane}: bad server {target.server!r}")
    return Upstream(
        scheme=server.scheme,
        host=server.hostname,
        port=server.port or (443 if server.scheme == "https" else 80),
        base_path=server.path,
        tls=StaticTLS(target.ssl_context),
        token=target.bearer_token,
        source=f"DataPlane {target.plane} spec.kubernetesCluster",
    )


class VirtualAgent:
    """One direct plane's tunnel session pair, its proxy and its connection pool."""

    def __init__(self, target: DirectTarget, settings: DirectSettings) -> None:
        self.target = target
        self._log: structlog.stdlib.BoundLogger = log.bind(
            plane=str(target.plane), server=target.server
        )
        # A registry of its own per plane: the pool's gauges are per pool.
        self.metrics = ProxyMetrics(prefix="planelink_gateway_direct")
        self.pool = ConnectionPool(
            upstream_for(target),
            max_idle=settings.pool_max_idle,
            idle_timeout=settings.pool_idle_timeout,
            connect_timeout=settings.connect_timeout,
            metrics=self.metrics,
        )
        self.proxy = Proxy(
            pool=self.pool,
            metrics=self.metrics,
            response_timeout=settings.response_timeout,
            logger=self._log,
        )
        tunnel = settings.tunnel or Settings()
        gateway_end, agent_end = memory_channel_pair()
        self.gateway_session = TunnelSession(
            gateway_end, Connection(Role.GATEWAY, settings=tunnel), logger=self._log
        )
        self.agent_session = TunnelSession(
            agent_end,
            Connection(
                Role.AGENT,
                settings=tunnel,
                identity={IDENTITY_PLANE: str(target.plane), IDENTITY_AGENT_ID: DIRECT_AGENT_ID},
                capabilities=[CAPABILITY_UPGRADE],
            ),
            heartbeat=Heartbeat(),
            request_handler=self.proxy.handle,
            logger=self._log,
        )
        ca = _first_certificate(target.credentials.ca_pem)
        self.connection = AgentConnection(
            plane=target.plane,
            agent_id=DIRECT_AGENT_ID,
            session=self.gateway_session,
            certificate=certs.describe(ca),
            certificate_der=ca.public_bytes(Encoding.DER),
            remote_address=target.server,
            identity={IDENTITY_PLANE: str(target.plane), IDENTITY_AGENT_ID: DIRECT_AGENT_ID},
            direct=True,
        )

    async def run(self, agents: AgentRegistry) -> None:
        """Serve until either session ends; registered in `agents` while the HELLOs hold."""
        sessions = [
            asyncio.create_task(self.gateway_session.run(), name=f"direct-gw-{self.target.plane}"),
            asyncio.create_task(self.agent_session.run(), name=f"direct-ag-{self.target.plane}"),
        ]
        registered = False
        reason = "stopped"
        try:
            await self.gateway_session.wait_ready()
            agents.add(self.connection)
            registered = True
            done, _ = await asyncio.wait(sessions, return_when=asyncio.FIRST_COMPLETED)
            reason = next(iter(done)).result()
        except SessionClosed:
            reason = "closed before the HELLO"
        finally:
            if registered:
                agents.remove(self.connection, reason)
            self.gateway_session.close(reason or "virtual agent stopped", ErrorCode.NO_ERROR)
            self.agent_session.close(reason or "virtual agent stopped", ErrorCode.NO_ERROR)
            await asyncio.gather(*sessions, return_exceptions=True)
            self.pool.close()

    def drain(self, reason: str) -> None:
        """No new streams; the sessions end once the open ones have."""
        self.gateway_session.drain(reason)

    def close(self, reason: str) -> None:
        self.gateway_session.close(reason, ErrorCode.NO_ERROR)


class DirectAgents:
    """A virtual agent for every direct-mode plane in `direct`, kept in step with it."""

    def __init__(
        self,
        *,
        direct: DirectPlanes,
        agents: AgentRegistry,
        settings: DirectSettings | None = None,
    ) -> None:
        self._direct = direct
        self._agents = agents
        self._settings = settings or DirectSettings()
        self._current: dict[PlaneRef, VirtualAgent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: set[VirtualAgent] = set()
        """Replaced virtual agents still finishing their open streams."""
        self._started = False

    def start(self) -> None:
        """Follow `direct` from now on, starting with the targets it has already."""
        if self._started:
            return
        self._started = True
        self._direct.subscribe(self._on_change)
        for plane in self._direct.planes():
            self._on_change(plane, self._direct.get(plane))

    def get(self, plane: PlaneRef) -> VirtualAgent | None:
        return self._current.get(plane)

    async def stop(self) -> None:
        """Close every virtual agent and wait until they have ended."""
        self._started = False
        for virtual in (*self._current.values(), *self._retiring):
            virtual.close("gateway stopping")
        self._current.clear()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _on_change(self, plane: PlaneRef, target: DirectTarget | None) -> None:
        if not self._started:
            return
        previous = self._current.pop(plane, None)
        if target is None:
            if previous is not None:
                log.info("direct plane removed: closing its virtual agent", plane=str(plane))
                previous.close("the plane is no longer reached directly")
            return
        try:
            virtual = VirtualAgent(target, self._settings)
        except (ValueError, OSError) as error:
            log.error("cannot serve direct plane", plane=str(plane), error=str(error))
            if previous is not None:
                previous.close("the direct target changed")
            return
        self._current[plane] = virtual
        self._spawn(virtual.run(self._agents), f"direct-{plane}")
        log.info("direct plane served", plane=str(plane), server=target.server)
        if previous is not None:
            previous.drain("the direct target changed")
            self._spawn(self._close_after_grace(previous), f"direct-drain-{plane}")

    async def _close_after_grace(self, virtual: VirtualAgent) -> None:
        self._retiring.add(virtual)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.drain_grace):
                    await virtual.gateway_session.wait_closed()
            virtual.close("drain grace over")
        finally:
            self._retiring.discard(virtual)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _first_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificates(pem)[0]
