"""The agent's own HTTP endpoints: `/healthz`, `/readyz` and Prometheus `/metrics`.

`/healthz` answers 200 while the process serves at all (a liveness probe restarts a hung
agent, not a disconnected one: reconnecting is the agent's own job). `/readyz` answers 200
only while a tunnel to the gateway is up (and says how many, one per gateway replica), and 503
with the reason otherwise, so `kubectl get pods` shows a disconnected agent as not ready.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.metrics import AgentMetrics


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
        self, *, state: TunnelState, metrics: AgentMetrics, host: str | None, port: int
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._host = host
        self._port = port
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = 0
        """The port actually bound, once started."""

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._state.up:
            held = self._state.held
            if held > 1:
                return web.Response(text=f"ok: {held} tunnels up, one per gateway replica\n")
            return web.Response(text="ok: tunnel up\n")
        return web.Response(status=503, text=f"not ready: {self._state.reason}\n")

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
