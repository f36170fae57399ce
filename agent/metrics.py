"""The agent's Prometheus metrics, in a registry of its own (never the global default one).

A registry per agent keeps tests independent and lets a process hold several agents. The
proxy's metrics (streams, bytes, upstream latency and connections) are `kubeproxy`'s, named
`planelink_agent_*` here; this adds the tunnel's, the process and Python collectors, build info
and when the agent's certificates expire (`tunnel.role_metrics`). Label values are bounded
sets: failure reasons are short classes (`refused`, `tls`, `rejected:<Reason>` with the
gateway's CamelCase reason).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from kubeproxy.metrics import ProxyMetrics
from tunnel.role_metrics import (
    CertificateExpiry,
    CertificateExpiryCollector,
    HasNotAfter,
    file_not_after,
    register_role_metrics,
)


class AgentMetrics(ProxyMetrics):
    """The metrics one agent updates; `registry` is what /metrics exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry, prefix="planelink_agent")
        r = self.registry
        register_role_metrics(r, role="agent")
        self.tunnel_up = Gauge(
            "planelink_agent_tunnel_up",
            "1 while a tunnel to the gateway (any of its replicas) is up",
            registry=r,
        )
        self.tunnels = Gauge(
            "planelink_agent_tunnels",
            "tunnels held: one per gateway replica the agent reached",
            registry=r,
        )
        self.duplicate_dials = Counter(
            "planelink_agent_duplicate_dials_total",
            "dials for another replica that landed on a replica already held (closed at once)",
            registry=r,
        )
        self.connects = Counter(
            "planelink_agent_connects_total", "tunnels established to the gateway", registry=r
        )
        self.connect_failures = Counter(
            "planelink_agent_connect_failures_total",
            "failed connection attempts and lost tunnels, by reason",
            ["reason"],
            registry=r,
        )
        self._certificates: list[CertificateExpiry] = []
        r.register(
            CertificateExpiryCollector(
                "planelink_agent_certificate_expiration_timestamp_seconds",
                [lambda: self._certificates],
            )
        )

    def credentials_loaded(self, *, plane: str, client: HasNotAfter, gateway_ca: Path) -> None:
        """Note when the credentials a dial just read expire (kinds `client`: the agent's
        certificate; `gateway_ca`: the earliest CA it trusts the gateway with). The agent reads
        them afresh for every dial, so a rotated certificate shows at the next one."""
        found = [CertificateExpiry("client", plane, client.not_valid_after_utc.timestamp())]
        ca_not_after = file_not_after(gateway_ca)
        if ca_not_after is not None:
            found.append(CertificateExpiry("gateway_ca", plane, ca_not_after))
        self._certificates = found
