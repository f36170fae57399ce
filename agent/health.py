"""The agent's own HTTP endpoints: `/healthz`, `/readyz` and Prometheus `/metrics`.

`/healthz` answers 200 while the process serves at all (a liveness probe restarts a hung
agent, not a disconnected one: reconnecting is the agent's own job). `/readyz` answers 200
only while a tunnel to the gateway is up (and says how many, one per gateway replica), and 503
with the reason otherwise, so `kubectl get pods` shows a disconnected agent as not ready.

The server is a few lines over `http1` rather than a web framework: probes and scrapes need
three GET paths, and aiohttp alone was a third of the agent's resting memory. Whoever reaches
the port is bounded like any peer: connections at once, the head's size and time, idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.metrics import AgentMetrics
from http1 import HttpError, MessageReader, RequestHead, reason_phrase, response_head_bytes

MAX_CONNECTIONS = 32
"""Connections served at once (probes and scrapes open one or two); more are closed at once."""
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
MAX_HEAD_BYTES = 8 * 1024
_TEXT = b"text/plain; charset=utf-8"


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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        """The port actually bound, once started."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        http = MessageReader(reader, "request", max_head_bytes=MAX_HEAD_BYTES, max_header_fields=64)
        try:
            while await self._answer_next(http, writer):
                pass
        except (HttpError, TimeoutError, ConnectionError):
            pass  # a bad or slow request ends its connection; the next probe opens another
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer_next(self, http: MessageReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to end."""
        async with asyncio.timeout(IDLE_TIMEOUT):
            if not await http.wait_for_message():
                return False
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = await http.next_request()
        if head is None:
            return False
        status, content_type, body = self._answer(head)
        # A request with a body is answered, never read: the connection ends after it.
        keep_alive = head.keep_alive and not head.has_body and not head.upgrade
        headers = [(b"Content-Type", content_type), (b"Content-Length", b"%d" % len(body))]
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        writer.write(response_head_bytes(status, reason_phrase(status), headers))
        if head.method != "HEAD":
            writer.write(body)
        await writer.drain()
        return keep_alive

    def _answer(self, head: RequestHead) -> tuple[int, bytes, bytes]:
        if head.method not in ("GET", "HEAD"):
            return 405, _TEXT, b"GET only\n"
        path = head.target.split("?", 1)[0]
        if path == "/healthz":
            return 200, _TEXT, b"ok\n"
        if path == "/readyz":
            return self._readiness()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(self._metrics.registry)
        return 404, _TEXT, b"not found: /healthz, /readyz and /metrics are served here\n"

    def _readiness(self) -> tuple[int, bytes, bytes]:
        state = self._state
        if state.up:
            if state.held > 1:
                return (
                    200,
                    _TEXT,
                    f"ok: {state.held} tunnels up, one per gateway replica\n".encode(),
                )
            return 200, _TEXT, b"ok: tunnel up\n"
        return 503, _TEXT, f"not ready: {state.reason}\n".encode()
