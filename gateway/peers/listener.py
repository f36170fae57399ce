"""The peer listener: where the other replicas forward callers' requests to this one.

It is the caller endpoint in peer mode (`gateway.callers.PeerPort`) on a port of its own, with
an admission budget of its own, behind a TLS handshake that demands a client certificate from
the peer CA and from nothing else: a caller's certificate, an agent's or one from any other CA
gets a TLS alert, a log line and `planelink_gateway_connections_refused_total{port="peer"}`.
Past TLS, the forwarding replica vouches for its caller (it authenticated and authorized it);
this replica serves the request from its own tunnels and direct planes, never from a peer.

It also answers `GET /peer/v1/planes`, `GET /peer/v1/metrics` and `GET /peer/v1/console` with
this replica's own planes document, metrics text and console document (history, refusals), from
which the workers of one gateway build its operator endpoints.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import replace

from gateway.agents import AgentRegistry
from gateway.callers import CallerEndpoint, CallerSettings, DirectBackends, Document, PeerPort
from gateway.metrics import GatewayMetrics
from gateway.peers.settings import PeerSettings
from gateway.tls_alerts import ServerTlsContext
from gateway.trust import TrustRegistry

PLANES_PATH = "/peer/v1/planes"
METRICS_PATH = "/peer/v1/metrics"
CONSOLE_PATH = "/peer/v1/console"


def peer_server_context(settings: PeerSettings) -> ssl.SSLContext:
    """TLS of the peer port: this replica's peer certificate; a client certificate from the
    peer CA required."""
    context = ServerTlsContext()  # a certificate from another CA gets a TLS alert
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.certificate), str(settings.key))
    context.load_verify_locations(cafile=str(settings.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


def peer_listener(
    *,
    settings: PeerSettings,
    callers: CallerSettings,
    trust: TrustRegistry,
    agents: AgentRegistry,
    metrics: GatewayMetrics,
    direct: DirectBackends | None,
    planes: Callable[[], Document],
    metrics_text: Callable[[], Document],
    console: Callable[[], Document],
    replica: str = "",
) -> CallerEndpoint:
    """The peer listener on `settings.host:port`: the caller endpoint's limits and deadlines
    (`callers`), its own connection budget, no forwarding."""
    return CallerEndpoint(
        settings=_on_peer_port(callers, settings),
        ssl_context=peer_server_context(settings),
        trust=trust,
        agents=agents,
        metrics=metrics,
        direct=direct,
        peer_port=PeerPort(
            documents={PLANES_PATH: planes, METRICS_PATH: metrics_text, CONSOLE_PATH: console}
        ),
        replica=replica,
    )


def _on_peer_port(callers: CallerSettings, settings: PeerSettings) -> CallerSettings:
    return replace(callers, host=settings.host, port=settings.port, admission=settings.admission)
