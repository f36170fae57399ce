"""The agent: runs in each data-plane cluster, dials out to the gateway, proxies to its API server.

Depends on `tunnel`, `protocol` and `certs`; never on `gateway`. Typical use::

    settings = AgentSettings(gateway_url="wss://gateway.example.com", plane="org/prod")
    exit_code = run_agent(settings)           # a whole process: signals, drain, exit code
    # or, inside an event loop:
    await Agent(settings).run(stop_event)

Modules: `settings` (validated; `planelink agent` fills it from flags and environment),
`reconnect` (pure: when to dial again), `discovery` (the Kubernetes version for the HELLO),
`dialer` (the WebSocket with mTLS), `health` (/healthz, /readyz, /metrics), `metrics`, `app`
(the wiring, signals, reconnecting). Proxying to the API server
(upstream, pool, request policy, proxy) is `kubeproxy`'s, shared with the gateway's direct mode.
"""

from agent.app import AGENT_VERSION, Agent, load_upstream, run_agent
from agent.dialer import DialFailed, GatewayRejected
from agent.health import TunnelState
from agent.metrics import AgentMetrics
from agent.reconnect import Reconnect
from agent.settings import AgentSettings

__all__ = [
    "AGENT_VERSION",
    "Agent",
    "AgentMetrics",
    "AgentSettings",
    "DialFailed",
    "GatewayRejected",
    "Reconnect",
    "TunnelState",
    "load_upstream",
    "run_agent",
]
