"""The agent: runs in each data-plane cluster, dials out to the gateway, proxies to its API server.

Depends on `tunnel`, `protocol` and `certs`; never on `gateway`. Typical use::

    settings = AgentSettings(gateway_url="wss://gateway.example.com", plane="org/prod")
    exit_code = run_agent(settings)           # a whole process: signals, drain, exit code
    # or, inside an event loop:
    await Agent(settings).run(stop_event)

Modules: `settings` (flags + environment), `backoff` (pure), `upstream` (the API server:
in-cluster or kubeconfig), `pool` (HTTP/1.1 connections to it), `request` (what may go
upstream), `proxy` (one tunnel stream), `discovery` (the Kubernetes version for the HELLO),
`dialer` (the WebSocket with mTLS), `health` (/healthz, /readyz, /metrics), `metrics`, `app`
(the wiring, signals, reconnecting).
"""

from agent.app import AGENT_VERSION, Agent, load_upstream, run_agent
from agent.backoff import Backoff
from agent.dialer import DialFailed, GatewayRejected
from agent.health import TunnelState
from agent.metrics import AgentMetrics
from agent.pool import ConnectionPool, UpstreamError
from agent.proxy import Proxy, ProxyStats
from agent.settings import AgentSettings
from agent.upstream import (
    Upstream,
    UpstreamConfigError,
    UpstreamCredentialsError,
    load_in_cluster,
    load_kubeconfig,
)

__all__ = [
    "AGENT_VERSION",
    "Agent",
    "AgentMetrics",
    "AgentSettings",
    "Backoff",
    "ConnectionPool",
    "DialFailed",
    "GatewayRejected",
    "Proxy",
    "ProxyStats",
    "TunnelState",
    "Upstream",
    "UpstreamConfigError",
    "UpstreamCredentialsError",
    "UpstreamError",
    "load_in_cluster",
    "load_kubeconfig",
    "load_upstream",
    "run_agent",
]
