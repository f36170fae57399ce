"""The proxy's Prometheus metrics, in a registry of the owner's choosing (never the global one).

`ProxyMetrics` holds what the pools and the proxy update: streams served, bytes moved, requests
by protocol, upstream latency and connections (`ConnectionShare`: the HTTP/1.1 and the HTTP/2
pool add up in one gauge). Metric names start with `prefix` (`planelink_agent` for the agent), so
an owner that adds metrics of its own (`agent.metrics.AgentMetrics`) keeps one family of names.
Label values are bounded sets: outcomes and status classes are fixed words. Every one of
these is updated on the request path, so they are `tunnel.plain_metrics`: plain numbers, read at
scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from tunnel.plain_metrics import PlainCounter, PlainGauge, PlainHistogram

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ProxyMetrics:
    """The metrics one proxy and its pool update; `registry` is where they are registered."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, prefix: str = "planelink_agent"
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_streams = PlainGauge(
            f"{prefix}_streams_active", "requests being proxied now", registry=r
        )
        self.streams = PlainCounter(
            f"{prefix}_streams_total",
            "requests proxied, by outcome (ok, upgraded, upstream_error, bad_request, "
            "reset, error)",
            ["outcome"],
            registry=r,
        )
        self.bytes = PlainCounter(
            f"{prefix}_body_bytes_total",
            "body and upgraded-stream bytes moved, by direction (to_gateway, to_upstream)",
            ["direction"],
            registry=r,
        )
        self.upstream_duration = PlainHistogram(
            f"{prefix}_upstream_request_duration_seconds",
            "time from sending a request to the API server to its response head, by status "
            "class (code: 2xx, 4xx, ..., error when no head came)",
            ["code"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_requests = PlainCounter(
            f"{prefix}_upstream_requests",
            "requests sent to the API server, by protocol (http1, http2): HTTP/2 while the API "
            "server offers h2 in ALPN and it is not turned off; upgrades always go as http1",
            ["protocol"],
            registry=r,
        )
        self.upstream_connections = PlainGauge(
            f"{prefix}_upstream_connections",
            "open connections to the API server, HTTP/1.1 and HTTP/2 together, by state "
            "(active: carrying a request, or for HTTP/2 at least one stream; idle: none)",
            ["state"],
            registry=r,
        )
        # Children resolved once, for the busiest updates: no `labels()` lookup at all.
        self.to_gateway = self.bytes.labels("to_gateway")
        self.to_upstream = self.bytes.labels("to_upstream")
        self.active_connections = self.upstream_connections.labels("active")
        self.idle_connections = self.upstream_connections.labels("idle")
        self.http1_requests = self.upstream_requests.labels("http1")
        self.http2_requests = self.upstream_requests.labels("http2")

    def sample(self, name: str, **labels: str) -> float:
        """The current value of a sample (0 when absent): for tests and debugging."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class ConnectionShare:
    """One pool's part of the `upstream_connections` gauge. Each pool shows its own counts;
    the gauge holds the sum of every pool's (an agent has an HTTP/1.1 and an HTTP/2 pool)."""

    __slots__ = ("_active", "_idle", "_metrics")

    def __init__(self, metrics: ProxyMetrics) -> None:
        self._metrics = metrics
        self._active = 0
        self._idle = 0

    def show(self, *, active: int, idle: int) -> None:
        """This pool now holds `active` and `idle` connections."""
        if active != self._active:
            self._metrics.active_connections.inc(active - self._active)
            self._active = active
        if idle != self._idle:
            self._metrics.idle_connections.inc(idle - self._idle)
            self._idle = idle
