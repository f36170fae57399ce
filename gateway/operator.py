"""Operator endpoints on their own port: /healthz, /readyz, /planes (JSON), /metrics.

Health says what is true: /readyz is 503 until the listeners serve and the planes are loaded,
and /planes shows, per plane, its agents with their heartbeat age and round trip — a silently
dead tunnel is dropped by the heartbeat timeout and disappears from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.agents import AgentRegistry
from gateway.health_page import health_page
from gateway.metrics import GatewayMetrics
from gateway.trust import PlaneTrust, TrustRegistry


def plane_report(trust: PlaneTrust, agents: AgentRegistry) -> dict[str, Any]:
    connected = agents.agents(trust.plane)
    return {
        "namespace": trust.plane.namespace,
        "name": trust.plane.name,
        "mode": trust.mode,
        "source": trust.source,
        "acceptsAgents": trust.accepts_agents,
        "requireIdentity": trust.require_identity,
        "issues": list(trust.issues),
        "clientCAs": [
            {"subject": ca.subject.rfc4514_string(), "notAfter": ca.not_valid_after_utc.isoformat()}
            for ca in trust.client_cas
        ],
        "connectedAgents": len(connected),
        "agents": [agent.describe() for agent in connected],
    }


def operator_app(
    *,
    trust: TrustRegistry,
    agents: AgentRegistry,
    metrics: GatewayMetrics,
    ready: Callable[[], tuple[bool, str]],
) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        # Answering at all proves the event loop turns; that is what liveness means here.
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        is_ready, detail = ready()
        return web.json_response(
            {"status": "ready" if is_ready else "not ready", "detail": detail},
            status=200 if is_ready else 503,
        )

    async def planes(request: web.Request) -> web.Response:
        return web.json_response(
            {"planes": [plane_report(plane, agents) for plane in trust.planes()]}
        )

    async def prometheus(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/planes", planes)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/", health_page)
    app.router.add_get("/ui", health_page)
    return app
