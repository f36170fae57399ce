"""The gateway process: trust, agent listener, caller endpoint and operator endpoints, wired.

`Gateway` is what `planelink gateway` runs and what tests start in-process: `start()` binds
every listener (port 0 picks a free port; the chosen ports are then on the object), `stop()`
drains agents for `drain_grace` seconds and closes everything.

Start-up order: the planes file is read before any listener opens; with the reconciler, the
listeners open at once but the gateway is "starting" (`gateway.startup`) until the DataPlanes
have been listed and resolved once — callers and agents are told to retry soon, never that
their plane is unknown, and /readyz is 503 — however long the control plane is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.admission import fit_to_fd_limit
from gateway.agent_listener import AgentListener, AgentListenerSettings
from gateway.agents import AgentRegistry
from gateway.callers import CallerEndpoint, CallerSettings, Document
from gateway.console.history import HistorySampler, Totals, counter_by_plane
from gateway.console.state import ConsoleState
from gateway.direct import DirectPlanes, DirectSettings
from gateway.metrics import GatewayMetrics
from gateway.operator import OperatorAuth, operator_server, planes_document
from gateway.peers import PeerDirectory, PeerSettings
from gateway.peers.files import PresenceFiles, PresenceSettings
from gateway.peers.forward import PeerForwarder, peer_url
from gateway.peers.listener import peer_listener
from gateway.peers.siblings import Siblings, peer_fetch
from gateway.reconciler.settings import ReconcilerSettings
from gateway.startup import StartupGate
from gateway.static_config import STATIC_SOURCE, load_static_planes
from gateway.tls_alerts import ServerTlsContext
from gateway.tls_files import load_caller_ca, load_server_certificate
from gateway.trust import TrustRegistry, agent_server_context
from http1.service import SmallHttpServer
from tunnel.loop_metrics import register_task_gauge
from tunnel.role_metrics import file_expiries

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

    from gateway.reconciler import Reconciler

log = structlog.get_logger("gateway")


@dataclass(frozen=True)
class GatewaySettings:
    """Everything `planelink gateway` can be told (flags and environment fill it)."""

    server_certificate: Path
    server_key: Path
    caller_ca: Path
    """CA that signs callers' client certificates."""
    planes_file: Path | None = None
    require_agent_identity: bool = True
    """Default of planes-file entries without `requireIdentity` (the reconciler has its own
    `ReconcilerSettings.require_identity`; `planelink gateway --agent-identity` sets both)."""
    agents: AgentListenerSettings = field(default_factory=AgentListenerSettings)
    callers: CallerSettings = field(default_factory=CallerSettings)
    operator_host: str = "0.0.0.0"  # noqa: S104 - scraped and probed from the cluster network
    operator_port: int = 8081
    operator_reuse_port: bool = False
    """Bind the operator port with SO_REUSEPORT, beside the other workers of one gateway."""
    operator_token_file: Path | None = None
    """A file holding the bearer token that /planes, /metrics and the console demand
    (None: served to anyone who reaches the port; the probes never demand it)."""
    drain_grace: float = 30.0
    reconciler: ReconcilerSettings | None = None
    """Follow DataPlane resources in the control plane (None: the planes file only)."""
    direct: DirectSettings = field(default_factory=DirectSettings)
    """How direct-mode planes' API servers are reached (the reconciler resolves them)."""
    kubeconfig: Path | None = None
    """The control plane's kubeconfig for the reconciler ($KUBECONFIG or in-cluster if None)."""
    starting_retry_after: int = 1
    """Seconds callers and agents are told to wait (`Retry-After`) while the gateway has not
    loaded its planes yet, and callers of a plane without agents in the `agents_return_within`
    seconds after (its agents are dialing back in); kubectl retries such a 503 by itself."""
    agents_return_within: float = 10.0
    replica_id: str = ""
    host: str = ""
    """The gateway (pod) this replica is part of: the workers of one `--workers N` gateway share
    it and show one /planes and /metrics ("": this replica alone, never merged with another
    gateway that happens to run on the same machine)."""
    """This replica's id among the gateway's replicas ("": the reconciler's Lease identity if
    there is one, else one made up at start); unique per process, so each worker has its own."""
    peers: PeerSettings | None = None
    """The peer listener and client (None: this replica is neither forwarded to nor forwards)."""
    presence_dir: Path | None = None
    """Without a control plane: a directory the replicas of one host (the workers) announce
    themselves in (`gateway.peers.files`)."""


_DATAPLANES = "DataPlanes"


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        settings = _within_fd_limit(settings)
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.console = ConsoleState()
        """What the operator's console shows besides /planes: each plane's DataPlane
        conditions, the recent refusals, the last hour of each plane's traffic."""
        self.sampler = HistorySampler(self.console.history, self.traffic)
        self._sampling: asyncio.Task[None] | None = None
        # Read once, as the listeners load them once: the gauge shows what is being served.
        own_certificates = file_expiries(_certificate_files(settings))
        self.metrics.watch_certificates(lambda: own_certificates)
        certificate_file, key_file = settings.server_certificate, settings.server_key
        self.trust = TrustRegistry(
            agent_server_context(certificate_file=certificate_file, key_file=key_file),
            starting_context=agent_server_context(
                certificate_file=certificate_file, key_file=key_file, client_certificates=False
            ),
            startup=StartupGate(
                retry_after=settings.starting_retry_after,
                agents_return_within=settings.agents_return_within,
            ),
        )
        self.agents = AgentRegistry(self.trust, self.metrics, refusals=self.console.refusals)
        self.replica_id = _replica_id(settings)
        self.peers = PeerDirectory(
            self.replica_id,
            local_planes=self.agents.local_planes,
            host=settings.host or self.replica_id,
        )
        """The live replicas: this one and its peers (fed by the Leases or the presence
        directory), which agents keep a tunnel to and callers' requests are forwarded to."""
        self.presence = (
            PresenceFiles(
                PresenceSettings(directory=settings.presence_dir),
                self.peers,
                self.agents.wait_for_change,
            )
            if settings.presence_dir is not None and not _has_leases(settings)
            else None
        )
        """This replica's presence file and its view of its siblings' (when no Leases say who
        is live: two sources would undo each other's view)."""
        self.direct = DirectPlanes(settings=settings.direct, metrics=self.metrics)
        """Direct-mode planes, served through the gateway's own pools (fed by the reconciler)."""
        self.agent_listener = AgentListener(
            settings=settings.agents,
            trust=self.trust,
            agents=self.agents,
            metrics=self.metrics,
            replicas=self.peers,
        )
        self.forwarder = (
            PeerForwarder(self.peers, settings.peers) if settings.peers is not None else None
        )
        """Carries a caller's request to a peer holding its plane's tunnel (None: no peers)."""
        self.callers = CallerEndpoint(
            settings=settings.callers,
            ssl_context=_caller_context(settings),
            trust=self.trust,
            agents=self.agents,
            metrics=self.metrics,
            direct=self.direct,
            forwarder=self.forwarder,
            refusals=self.console.refusals,
            replica=self.replica_id,
        )
        self.peer_listener = (
            peer_listener(
                settings=settings.peers,
                callers=settings.callers,
                trust=self.trust,
                agents=self.agents,
                metrics=self.metrics,
                direct=self.direct,
                planes=self._planes_document,
                metrics_text=self._metrics_document,
                console=self._console_document,
                replica=self.replica_id,
            )
            if settings.peers is not None
            else None
        )
        """Where peers forward callers' requests to this replica (None: no peers)."""
        self.siblings = (
            Siblings(self.peers, peer_fetch(self.forwarder)) if self.forwarder is not None else None
        )
        """The other workers of this gateway (same host), whose own /planes and /metrics join
        this one's on the operator port (None: no peers to ask)."""
        token_file = settings.operator_token_file
        self._operator_auth = OperatorAuth(token_file) if token_file is not None else None
        self._operator: SmallHttpServer | None = None
        self.operator_port = 0
        self._started = False
        self._stopping = False
        self.reconciler: Reconciler | None = None
        self._kube: ApiClient | None = None
        self._reconciler_start: asyncio.Task[None] | None = None

    def load_planes(self) -> None:
        """(Re)read the static planes file, if one is configured."""
        if self.settings.planes_file is not None:
            planes = load_static_planes(
                self.settings.planes_file, require_identity=self.settings.require_agent_identity
            )
            self.trust.replace_source(STATIC_SOURCE, planes)
            for plane in planes:
                if plane.issues:
                    log.warning(
                        "plane cannot accept agents", plane=str(plane.plane), issues=plane.issues
                    )
            log.info("planes loaded", count=len(planes), file=str(self.settings.planes_file))

    async def start(self) -> None:
        self.load_planes()
        register_task_gauge(self.metrics.registry, "planelink_gateway_asyncio_tasks")
        # The Kubernetes client (a hundred megabytes of imports) only for what needs it.
        if self.settings.reconciler is not None or self.settings.callers.auth.needs_reviews:
            from gateway.kubeclient import load_api_client  # noqa: PLC0415

            self._kube = await load_api_client(self.settings.kubeconfig)
        if self._kube is not None and self.settings.callers.auth.needs_reviews:
            from gateway.kube_reviews import KubeReviews  # noqa: PLC0415

            timeout = self.settings.callers.auth.review_timeout
            self.callers.auth.reviews = KubeReviews(self._kube, timeout=timeout)
        if self.settings.reconciler is not None:
            from gateway.reconciler import Reconciler  # noqa: PLC0415

            assert self._kube is not None
            self.reconciler = Reconciler(
                client=self._kube,
                trust=self.trust,
                agents=self.agents,
                direct=self.direct,
                settings=_leased_as(self.settings.reconciler, self.replica_id),
                registry=self.metrics.registry,
                peers=self.peers,
                conditions=self.console.conditions,
            )
            # Listing may wait for an API server that is down; the listeners serve meanwhile,
            # telling whoever comes for a plane not known yet to retry soon (`startup`).
            self.agents.on_rejected = self.reconciler.agent_rejected
            self.trust.startup.wait_for(_DATAPLANES)
            self._reconciler_start = asyncio.create_task(self._start_reconciler(self.reconciler))
        await self.agent_listener.start()
        await self.callers.start()
        if self.peer_listener is not None:
            assert self.settings.peers is not None
            await self.peer_listener.start()
            advertised = self.settings.peers.advertise_host or "127.0.0.1"
            self.peers.peer_url = peer_url(advertised, self.peer_listener.port)
        self._operator = operator_server(
            host=self.settings.operator_host,
            port=self.settings.operator_port,
            reuse_port=self.settings.operator_reuse_port,
            trust=self.trust,
            agents=self.agents,
            metrics=self.metrics,
            ready=self._ready,
            auth=self._operator_auth,
            direct=self.direct,
            siblings=self.siblings,
            peers=self.peers,
            state=self.console,
        )
        await self._operator.start()
        self.operator_port = self._operator.port
        self._sampling = asyncio.create_task(self.sampler.run(), name="console-history")
        if self.presence is not None:  # once every port is bound: peers can reach it
            await self.presence.start()
        if self.reconciler is not None:
            self.reconciler.coordination.local_changed()  # advertise the bound peer URL now
        self._started = True
        log.info(
            "gateway serving",
            agent_port=self.agent_listener.port,
            caller_port=self.callers.port,
            operator_port=self.operator_port,
            replica=self.replica_id,
            peer_url=self.peers.peer_url or None,
        )

    async def _start_reconciler(self, reconciler: Reconciler) -> None:
        await reconciler.start()
        self.trust.startup.loaded(_DATAPLANES)

    async def stop(self) -> None:
        self._started = False
        self._stopping = True
        if self.presence is not None:  # first: siblings stop counting on this replica
            await self.presence.stop()
        if self._reconciler_start is not None:
            self._reconciler_start.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler_start
        if self.reconciler is not None:
            await self.reconciler.stop()  # hands status over to another replica first
        await self.direct.stop()
        # Callers are still served (forwarded to peers) while the agents drain; then what
        # is in flight gets the rest of the grace.
        drain_until = time.monotonic() + self.settings.drain_grace
        await self.agent_listener.stop(grace=self.settings.drain_grace)
        remaining = max(0.0, drain_until - time.monotonic())
        await asyncio.gather(
            self.callers.stop(grace=remaining),
            *([self.peer_listener.stop(grace=remaining)] if self.peer_listener else []),
        )
        if self.forwarder is not None:
            await self.forwarder.stop()
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
        if self._operator is not None:
            await self._operator.stop()
        if self._kube is not None:
            await self._kube.close()

    def _planes_document(self) -> Document:
        """This replica's own /planes, as its peers' `/peer/v1/planes` serves it."""
        document = planes_document(
            trust=self.trust, agents=self.agents, direct=self.direct, peers=self.peers
        )
        return b"application/json", json.dumps(document).encode()

    def _console_document(self) -> Document:
        """This replica's own history and refusals, as its peers' `/peer/v1/console` serves
        them."""
        return b"application/json", json.dumps(self.console.own_document()).encode()

    def traffic(self) -> dict[str, Totals]:
        """Every plane's counters now, for the history (planes without traffic count 0)."""
        requests = counter_by_plane(self.metrics.requests)
        body_bytes = counter_by_plane(self.metrics.bytes)
        rtts: dict[str, list[float]] = {}
        for agent in self.agents.all_agents():
            if agent.session.rtt is not None:
                rtts.setdefault(str(agent.plane), []).append(agent.session.rtt)
        return {
            name: Totals(
                requests=requests.get(name, 0.0),
                body_bytes=body_bytes.get(name, 0.0),
                rtt=max(rtts[name]) if name in rtts else None,
            )
            for name in (str(trust.plane) for trust in self.trust.planes())
        }

    def _metrics_document(self) -> Document:
        """This replica's own metrics, as its peers' `/peer/v1/metrics` serves them."""
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self.metrics.registry)

    def _ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "stopping: draining agents and callers"
        if not self._started:
            return False, "starting"
        if (starting := self.trust.startup.starting) is not None:
            return False, starting
        agents = sum(1 for _ in self.agents.all_agents()) + sum(1 for _ in self.direct.served())
        return True, f"{len(self.trust.planes())} planes, {agents} agents"


def _certificate_files(settings: GatewaySettings) -> list[tuple[str, Path]]:
    """The gateway's own certificate files, by the kind its expiry gauge names them."""
    files = [("serving", settings.server_certificate), ("caller_ca", settings.caller_ca)]
    if settings.peers is not None:
        files += [("peer", settings.peers.certificate), ("peer_ca", settings.peers.ca)]
    return files


def _leased_as(settings: ReconcilerSettings, replica_id: str) -> ReconcilerSettings:
    """`settings` with this replica's Lease held by its replica id: peers read the id from it,
    and each worker of a pod (`<pod>-w<i>`) has a Lease of its own."""
    if settings.coordination is None or settings.coordination.identity == replica_id:
        return settings
    return replace(settings, coordination=replace(settings.coordination, identity=replica_id))


def _has_leases(settings: GatewaySettings) -> bool:
    """Whether the replicas' Leases are this replica's presence source."""
    return settings.reconciler is not None and settings.reconciler.coordination is not None


def _replica_id(settings: GatewaySettings) -> str:
    if settings.replica_id:
        return settings.replica_id
    if settings.reconciler is not None and settings.reconciler.coordination is not None:
        return settings.reconciler.coordination.identity
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


FD_RESERVE = 128
"""Descriptors kept free of both ports' connection limits (operator port, control-plane client,
files), besides a tenth of the limit."""


def _within_fd_limit(settings: GatewaySettings) -> GatewaySettings:
    """`settings` with the ports' connection limits lowered, if need be, below RLIMIT_NOFILE:
    a flood of connections must never take the descriptors the rest of the gateway needs."""
    fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if fd_limit == resource.RLIM_INFINITY:
        return settings
    ports = {"agent": settings.agents.admission, "caller": settings.callers.admission}
    if settings.peers is not None:
        ports["peer"] = settings.peers.admission
    fitted, lowered = fit_to_fd_limit(ports, fd_limit=fd_limit, reserve=FD_RESERVE + fd_limit // 10)
    if not lowered:
        return settings
    log.warning(
        "connection limits lowered to fit the file-descriptor limit",
        fd_limit=fd_limit,
        **{f"{port}_max_connections": limits.max_connections for port, limits in fitted.items()},
    )
    peers = settings.peers
    return replace(
        settings,
        agents=replace(settings.agents, admission=fitted["agent"]),
        callers=replace(settings.callers, admission=fitted["caller"]),
        peers=replace(peers, admission=fitted["peer"]) if peers is not None else None,
    )


def _caller_context(settings: GatewaySettings) -> ssl.SSLContext:
    context = ServerTlsContext()  # a caller certificate from the wrong CA gets a TLS alert
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_server_certificate(context, settings.server_certificate, settings.server_key)
    load_caller_ca(context, settings.caller_ca)
    # With tokens a certificate is optional, but one presented must still verify.
    accepts_tokens = settings.callers.auth.accepts_tokens
    context.verify_mode = ssl.CERT_OPTIONAL if accepts_tokens else ssl.CERT_REQUIRED
    # Upgrades (exec, port-forward) come on HTTP/1.1 connections: client-go opens those itself.
    context.set_alpn_protocols(["h2", "http/1.1"] if settings.callers.http2 else ["http/1.1"])
    return context
