"""The agent's Prometheus metrics, in a registry of its own (never the global default one).

A registry per agent keeps tests independent and lets a process hold several agents. The
proxy's metrics (streams, bytes, upstream latency and connections) are `kubeproxy`'s, named
`planelink_agent_*` here; this adds the tunnel's. Label values are bounded sets: failure reasons
are short classes (`refused`, `tls`, `rejected:<Reason>` with the gateway's CamelCase reason).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from kubeproxy.metrics import ProxyMetrics


class AgentMetrics(ProxyMetrics):
    """The metrics one agent updates; `registry` is what /metrics exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry, prefix="planelink_agent")
        r = self.registry
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
            "planelink_agent_duplicate_dials",
            "dials for another replica that landed on a replica already held (closed at once)",
            registry=r,
        )
        self.connects = Counter(
            "planelink_agent_connects", "tunnels established to the gateway", registry=r
        )
        self.connect_failures = Counter(
            "planelink_agent_connect_failures",
            "failed connection attempts and lost tunnels, by reason",
            ["reason"],
            registry=r,
        )
