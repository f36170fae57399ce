"""The gateway's Prometheus metrics, in a registry of its own (several gateways may share a
process in tests; none of them touches the global default registry).

Besides its own, the registry holds the process and Python collectors and build info
(`tunnel.role_metrics`), and certificate expiry fed by `watch_certificates`. Names follow
Prometheus conventions: base units as suffixes (`_seconds`, `_bytes`), `_total` on counters,
`<things>_<state>` for gauges counting things in a state (`streams_active`,
`agents_connected`); docs/metrics.md lists them all (a test keeps it in step). The metrics
every caller request updates are `tunnel.plain_metrics` (plain numbers, read at scrape time);
the others are prometheus_client's."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tunnel.plain_metrics import PlainCounter, PlainGauge, PlainHistogram
from tunnel.role_metrics import CertificateExpiryCollector, CertificateSource, register_role_metrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """Every metric the gateway exports; one instance per gateway."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        register_role_metrics(r, role="gateway")
        self._certificates = CertificateExpiryCollector(
            "planelink_gateway_certificate_expiration_timestamp_seconds"
        )
        r.register(self._certificates)
        self.agent_connects = Counter(
            "planelink_gateway_agent_connects_total",
            "Agent sessions accepted",
            ["plane"],
            registry=r,
        )
        self.agent_rejections = Counter(
            "planelink_gateway_agent_rejections_total",
            "Agents refused or disconnected, by reason",
            ["reason"],
            registry=r,
        )
        self.agent_drops = Counter(
            "planelink_gateway_agent_drops_total",
            "Agent sessions ended because the agent passed a bound (write_timeout,"
            " heartbeat_timeout, idle_frame, stream_churn, max_queued_answers)",
            ["plane", "limit"],
            registry=r,
        )
        self.streams_active = PlainGauge(
            "planelink_gateway_streams_active", "Caller requests in flight", ["plane"], registry=r
        )
        self.requests = PlainCounter(
            "planelink_gateway_requests_total",
            "Caller requests answered, by plane and status class",
            ["plane", "code"],
            registry=r,
        )
        self.request_duration = PlainHistogram(
            "planelink_gateway_request_duration_seconds",
            "Time to the response head, by plane and status class",
            ["plane", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes = PlainCounter(
            "planelink_gateway_body_bytes_total",
            "Body bytes relayed, by plane and direction (to_agent, to_caller)",
            ["plane", "direction"],
            registry=r,
        )
        self.forwarded_requests = PlainCounter(
            "planelink_gateway_forwarded_requests_total",
            "Caller requests forwarded to a peer replica (it held the plane's tunnel), by peer,"
            " plane and status class; also counted in planelink_gateway_requests_total",
            ["peer", "plane", "code"],
            registry=r,
        )
        self.peer_requests = PlainCounter(
            "planelink_gateway_peer_requests_total",
            "Requests served on the peer port for the replica that forwarded them, by that"
            " replica, plane and status class (its planelink_gateway_requests_total counts them)",
            ["peer", "plane", "code"],
            registry=r,
        )
        self.requests_by_protocol = PlainCounter(
            "planelink_gateway_requests_by_protocol_total",
            "Caller requests received on the caller port, by the HTTP version they arrived in"
            " (http1, http2)",
            ["protocol"],
            registry=r,
        )
        self.caller_connections_by_protocol = Counter(
            "planelink_gateway_caller_connections_total",
            "Caller connections past TLS, by the HTTP version ALPN picked (http1, http2)",
            ["protocol"],
            registry=r,
        )
        self.http2_connection_errors = Counter(
            "planelink_gateway_http2_connection_errors_total",
            "Caller HTTP/2 connections the gateway ended with a GOAWAY error, by its code"
            " (ENHANCE_YOUR_CALM: a flood, a rapid reset or an oversized header block;"
            " PROTOCOL_ERROR, FRAME_SIZE_ERROR, ...: frames that break RFC 9113)",
            ["code"],
            registry=r,
        )
        self.caller_errors = Counter(
            "planelink_gateway_caller_errors_total",
            "Caller requests refused before reaching an agent, by reason",
            ["reason"],
            registry=r,
        )
        self.relay_errors = PlainCounter(
            "planelink_gateway_relay_errors_total",
            "Requests cut short after they reached an agent, by plane and reason"
            " (agent_response: a response that breaks HTTP/1.1 framing; caller_body: a"
            " malformed request body)",
            ["plane", "reason"],
            registry=r,
        )
        self.caller_authentications = PlainCounter(
            "planelink_gateway_caller_authentications_total",
            "Caller authentications, by method (certificate, token, none) and result"
            " (ok, refused, error)",
            ["method", "result"],
            registry=r,
        )
        self.caller_authorizations = PlainCounter(
            "planelink_gateway_caller_authorizations_total",
            "Caller authorizations (SubjectAccessReview), by result (allowed, denied, error)",
            ["result"],
            registry=r,
        )
        self.operator_refusals = Counter(
            "planelink_gateway_operator_refusals_total",
            "Operator-port requests refused for lacking the bearer token",
            registry=r,
        )

        self.connections_refused = Counter(
            "planelink_gateway_connections_refused_total",
            "Connections refused or ended before their protocol began, by port (agent, caller)"
            " and reason (per_ip_limit, global_limit, evicted, client_hello_timeout,"
            " tls_handshake_timeout, tls_failed, head_timeout, idle_timeout, upgrade_timeout)",
            ["port", "reason"],
            registry=r,
        )
        self._connection_counts: dict[str, Callable[[], ConnectionCounts]] = {}
        r.register(_ConnectionCollector(self._connection_counts))
        self._agent_snapshots: list[Callable[[], Iterable[AgentSample]]] = []
        self._known_planes: list[Callable[[], Iterable[str]]] = []
        r.register(_AgentCollector(self._agent_snapshots, self._known_planes))
        self._direct_upstreams: list[Callable[[], Iterable[DirectUpstreamSample]]] = []
        r.register(_DirectUpstreamCollector(self._direct_upstreams))

    def watch_connections(self, port: str, counts: Callable[[], ConnectionCounts]) -> None:
        """Export `port`'s open connections, authenticated or not, read at scrape time."""
        self._connection_counts[port] = counts

    def watch_agents(self, snapshot: Callable[[], Iterable[AgentSample]]) -> None:
        """Export per-agent gauges computed at scrape time from `snapshot` (no stale labels),
        with those of every other snapshot watched (connected agents, direct planes)."""
        self._agent_snapshots.append(snapshot)

    def watch_direct_upstreams(
        self, snapshot: Callable[[], Iterable[DirectUpstreamSample]]
    ) -> None:
        """Export direct-mode planes' requests to their API servers by protocol, and the
        connections held, from `snapshot` at scrape time (each plane's pools count them)."""
        self._direct_upstreams.append(snapshot)

    def watch_planes(self, planes: Callable[[], Iterable[str]]) -> None:
        """Export `planelink_gateway_agents_connected` 0 for each of `planes` without agents:
        "no agent for this plane" is then a value an alert can see, not a missing series."""
        self._known_planes.append(planes)

    def watch_certificates(self, source: CertificateSource) -> None:
        """Export the expiry of the certificates `source` yields at scrape time (kinds:
        `serving`, `caller_ca`, `peer`, `peer_ca`; per plane `agent_ca`, and `agent` for the
        certificates its connected agents presented)."""
        self._certificates.sources.append(source)


@dataclass(frozen=True)
class ConnectionCounts:
    authenticated: int
    unauthenticated: int


class _ConnectionCollector(Collector):
    def __init__(self, ports: dict[str, Callable[[], ConnectionCounts]]) -> None:
        self._ports = ports

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "planelink_gateway_connections",
            "Open connections, by port (agent, caller) and state (authenticated, unauthenticated)",
            labels=["port", "state"],
        )
        for port, counts in self._ports.items():
            now = counts()
            family.add_metric([port, "authenticated"], now.authenticated)
            family.add_metric([port, "unauthenticated"], now.unauthenticated)
        yield family


@dataclass(frozen=True)
class AgentSample:
    plane: str
    agent_id: str
    rtt: float | None
    open_streams: int
    heartbeat_age: float | None = None
    """Seconds since anything came from the agent (None: no tunnel, a direct plane)."""


class _AgentCollector(Collector):
    def __init__(
        self,
        snapshots: list[Callable[[], Iterable[AgentSample]]],
        known_planes: list[Callable[[], Iterable[str]]],
    ) -> None:
        self._snapshots = snapshots
        self._known_planes = known_planes

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "planelink_gateway_agents_connected",
            "Agents connected, by plane (0 for a plane the gateway knows that has none)",
            labels=["plane"],
        )
        rtt = GaugeMetricFamily(
            "planelink_gateway_agent_rtt_seconds",
            "Last heartbeat round trip, by plane and agent",
            labels=["plane", "agent"],
        )
        streams = GaugeMetricFamily(
            "planelink_gateway_agent_streams_active",
            "Open tunnel streams, by plane and agent",
            labels=["plane", "agent"],
        )
        heartbeat_age = GaugeMetricFamily(
            "planelink_gateway_agent_heartbeat_age_seconds",
            "Seconds since a frame last came from the agent (it answers a heartbeat every"
            " --heartbeat-interval; past --heartbeat-timeout it is dropped), by plane and agent",
            labels=["plane", "agent"],
        )
        per_plane = {plane: 0 for planes in self._known_planes for plane in planes()}
        for sample in (sample for snapshot in self._snapshots for sample in snapshot()):
            per_plane[sample.plane] = per_plane.get(sample.plane, 0) + 1
            if sample.rtt is not None:
                rtt.add_metric([sample.plane, sample.agent_id], sample.rtt)
            streams.add_metric([sample.plane, sample.agent_id], sample.open_streams)
            if sample.heartbeat_age is not None:
                heartbeat_age.add_metric([sample.plane, sample.agent_id], sample.heartbeat_age)
        for plane, count in per_plane.items():
            connected.add_metric([plane], count)
        yield from (connected, rtt, streams, heartbeat_age)


@dataclass(frozen=True)
class DirectUpstreamSample:
    """What a direct plane's pools count: requests sent by protocol, connections by state."""

    plane: str
    http1_requests: float
    http2_requests: float
    active_connections: float
    idle_connections: float


class _DirectUpstreamCollector(Collector):
    def __init__(self, snapshots: list[Callable[[], Iterable[DirectUpstreamSample]]]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "planelink_gateway_direct_upstream_requests",
            "Requests sent to direct-mode planes' API servers, by plane and protocol (http1,"
            " http2: HTTP/2 while the server offers h2 and --direct-upstream-http2 is on;"
            " upgrades go as http1)",
            labels=["plane", "protocol"],
        )
        connections = GaugeMetricFamily(
            "planelink_gateway_direct_upstream_connections",
            "Connections open to direct-mode planes' API servers, HTTP/1.1 and HTTP/2 together,"
            " by plane and state (active: carrying a request, or for HTTP/2 a stream; idle: none)",
            labels=["plane", "state"],
        )
        totals: dict[str, list[float]] = {}
        for sample in (sample for snapshot in self._snapshots for sample in snapshot()):
            # A plane whose credentials changed has a draining predecessor: one series each.
            total = totals.setdefault(sample.plane, [0.0, 0.0, 0.0, 0.0])
            total[0] += sample.http1_requests
            total[1] += sample.http2_requests
            total[2] += sample.active_connections
            total[3] += sample.idle_connections
        for plane, (http1, http2, active, idle) in totals.items():
            requests.add_metric([plane, "http1"], http1)
            requests.add_metric([plane, "http2"], http2)
            connections.add_metric([plane, "active"], active)
            connections.add_metric([plane, "idle"], idle)
        yield from (requests, connections)
