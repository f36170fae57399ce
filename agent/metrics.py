"""The agent's Prometheus metrics, in a registry of its own (never the global default one).

A registry per agent keeps tests independent and lets a process hold several agents. Label
values are bounded sets: failure reasons are short classes (`refused`, `tls`, `rejected:<Reason>`
with the gateway's CamelCase reason), outcomes and status classes are fixed words.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class AgentMetrics:
    """The metrics one agent updates; `registry` is what /metrics exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tunnel_up = Gauge(
            "planelink_agent_tunnel_up", "1 while the tunnel to the gateway is up", registry=r
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
        self.active_streams = Gauge(
            "planelink_agent_active_streams", "requests being proxied now", registry=r
        )
        self.streams = Counter(
            "planelink_agent_streams",
            "requests proxied, by outcome (ok, upgraded, upstream_error, bad_request, "
            "reset, error)",
            ["outcome"],
            registry=r,
        )
        self.bytes = Counter(
            "planelink_agent_bytes",
            "body and upgraded-stream bytes moved, by direction (to_gateway, to_upstream)",
            ["direction"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            "planelink_agent_upstream_request_duration_seconds",
            "time from sending a request to the API server to its response head, by status "
            "class (2xx, 4xx, ..., error when no head came)",
            ["status_class"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_connections = Gauge(
            "planelink_agent_upstream_connections",
            "open connections to the API server, by state (active, idle)",
            ["state"],
            registry=r,
        )
        self.to_gateway = self.bytes.labels("to_gateway")
        self.to_upstream = self.bytes.labels("to_upstream")

    def sample(self, name: str, **labels: str) -> float:
        """The current value of a sample (0 when absent): for tests and debugging."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"
