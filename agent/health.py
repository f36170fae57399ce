"""The agent's own HTTP endpoints: `/healthz`, `/readyz` and Prometheus `/metrics`.

`/healthz` answers 200 while the process serves at all (a liveness probe restarts a hung
agent, not a disconnected one: reconnecting is the agent's own job). `/readyz` answers 200
only while a tunnel to the gateway is up (and says how many, one per gateway replica), and 503
with the reason otherwise, so `kubectl get pods` shows a disconnected agent as not ready.

The server is `http1.service` rather than a web framework: probes and scrapes need three GET
paths, and aiohttp alone was a third of the agent's resting memory. Whoever reaches the port is
bounded like any peer (`LIMITS`): connections at once, the head's size and time, idle time.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.metrics import AgentMetrics
from http1.service import TEXT, Answer, Request, ServiceLimits, SmallHttpServer

LIMITS = ServiceLimits(max_connections=32, head_timeout=10.0, idle_timeout=30.0)
"""Probes and scrapes open one or two connections each."""


class TunnelState:
    """Whether the tunnel is up, and if not, why; updated by the agent's connection loop."""

    def __init__(self) -> None:
        self.up = False
        self.held = 0
        """Tunnels held (one per gateway replica reached)."""
        self.reason = "not connected yet"
        self.changed_at = time.time()
        self._changed = asyncio.Event()

    def set_up(self) -> None:
        self._set(up=True, reason="")

    def set_down(self, reason: str) -> None:
        self._set(up=False, reason=reason)

    async def wait(self, *, up: bool) -> None:
        """Return once the tunnel is up (or down, with `up=False`)."""
        while self.up is not up:
            await self._changed.wait()

    def _set(self, *, up: bool, reason: str) -> None:
        self.up, self.reason, self.changed_at = up, reason, time.time()
        self._changed.set()
        self._changed = asyncio.Event()


class HealthServer:
    """Serves the three endpoints on `host:port` (host None: every interface; port 0: any)."""

    def __init__(
        self,
        *,
        state: TunnelState,
        metrics: AgentMetrics,
        host: str | None,
        port: int,
        limits: ServiceLimits = LIMITS,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._server = SmallHttpServer(self._answer, host=host, port=port, limits=limits)

    @property
    def port(self) -> int:
        """The port actually bound, once started."""
        return self._server.port

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop()

    async def _answer(self, request: Request) -> Answer:
        if request.head.method not in ("GET", "HEAD"):
            return Answer(405, TEXT, b"GET only\n")
        path = request.path
        if path == "/healthz":
            return Answer(200, TEXT, b"ok\n")
        if path == "/readyz":
            return self._readiness()
        if path == "/metrics":
            body = generate_latest(self._metrics.registry)
            return Answer(200, CONTENT_TYPE_LATEST.encode(), body)
        return Answer(404, TEXT, b"not found: /healthz, /readyz and /metrics are served here\n")

    def _readiness(self) -> Answer:
        state = self._state
        if state.up:
            if state.held > 1:
                return Answer(
                    200, TEXT, f"ok: {state.held} tunnels up, one per gateway replica\n".encode()
                )
            return Answer(200, TEXT, b"ok: tunnel up\n")
        return Answer(503, TEXT, f"not ready: {state.reason}\n".encode())
