"""Operator endpoints on their own port: /healthz, /readyz, /planes (JSON), /metrics, and the
console (`gateway.console`): the page at / and /ui, its data at /console and /history (JSON).

Health says what is true: /readyz is 503 until the listeners serve and the planes are loaded,
and /planes shows, per plane, its agents with their heartbeat age and round trip — a silently
dead tunnel is dropped by the heartbeat timeout and disappears from here. With several replicas
it also says which replica answers (`replica`), the live ones (`replicas`), and per plane which
replicas each agent holds a tunnel to (`agentReplicas`); `connectedAgents` counts the distinct
agents over all live replicas (a caller is served through any of them), `agents` details this
replica's own tunnels. A plane described by a DataPlane has its `conditions` as the control
plane holds them (a planes file's has none: no `conditions` key).

With a bearer token configured (`OperatorAuth`), every endpoint but the probes answers 401
without `Authorization: Bearer <token>`, as Prometheus sends it from a `credentials_file`. The
probes never ask for it (the kubelet cannot send a Secret) and never tell more than ready or
not; /planes, /metrics and the console must never be served without the token then.

The port is served by `http1.service`, not a web framework: a handful of GET paths, and aiohttp
was a fifth of the gateway's resting memory.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.agents import AgentRegistry
from gateway.console import page
from gateway.console.conditions import PlaneConditions, describe
from gateway.console.markup import Element
from gateway.console.state import ConsoleState, WholeGateway, whole_gateway
from gateway.console.view import console
from gateway.direct import DirectPlanes
from gateway.interfaces import PlaneTrust
from gateway.metrics import GatewayMetrics
from gateway.peers import PeerDirectory
from gateway.peers.listener import CONSOLE_PATH
from gateway.peers.siblings import Siblings
from gateway.trust import TrustRegistry
from http1 import header_value
from http1.service import JSON, TEXT, Answer, Request, ServiceLimits, SmallHttpServer

log = structlog.get_logger("gateway.operator")

PROBES = frozenset({"/healthz", "/readyz"})
"""Paths served without the token: what the kubelet probes."""
LIMITS = ServiceLimits(max_connections=64, head_timeout=10.0, idle_timeout=30.0)
"""Probes, Prometheus, `planelink status` and a few browsers showing the console."""


class OperatorTokenError(ValueError):
    """The operator token file cannot be read or is empty."""


@dataclass
class OperatorAuth:
    """The bearer token the operator endpoints demand, read from a file (a mounted Secret).

    The file is read again when it changes, so a rotated Secret takes effect without a restart.
    """

    token_file: Path
    _token: bytes = field(default=b"", init=False, repr=False)
    _stamp: tuple[int, int] = field(default=(0, 0), init=False, repr=False)

    def __post_init__(self) -> None:
        self._reload()

    def allows(self, authorization: str | None) -> bool:
        try:
            self._reload()
        except OperatorTokenError as error:  # keep the last good token while it is replaced
            log.warning("operator token not reloaded", error=str(error))
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def _reload(self) -> None:
        try:
            stat = os.stat(self.token_file)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp and self._token:
                return
            token = self.token_file.read_bytes().strip()
        except OSError as error:
            raise OperatorTokenError(f"operator token file {self.token_file}: {error}") from error
        if not token:
            raise OperatorTokenError(f"operator token file {self.token_file} is empty")
        self._token, self._stamp = token, stamp


def planes_document(
    *,
    trust: TrustRegistry,
    agents: AgentRegistry,
    direct: DirectPlanes | None = None,
    peers: PeerDirectory | None = None,
    conditions: PlaneConditions | None = None,
) -> dict[str, Any]:
    """This replica's /planes: every plane it knows, and (with `peers`) the live replicas."""
    document: dict[str, Any] = {}
    holdings = peers.all_holdings() if peers is not None else None
    if peers is not None:
        document["replica"] = peers.own_id
        document["replicas"] = list(peers.live_ids())
    document["planes"] = [
        plane_report(
            plane,
            agents,
            direct,
            None if holdings is None else holdings.get(plane.plane, {}),
            conditions,
        )
        for plane in trust.planes()
    ]
    return document


def plane_report(
    trust: PlaneTrust,
    agents: AgentRegistry,
    direct: DirectPlanes | None = None,
    holdings: Mapping[str, list[str]] | None = None,
    conditions: PlaneConditions | None = None,
) -> dict[str, Any]:
    """One plane for /planes; a direct plane's one "agent" is the gateway itself. With
    `holdings` (its agents anywhere, each with the replicas it holds a tunnel to), the count is
    of distinct agents over every live replica."""
    connected = [agent.describe() for agent in agents.agents(trust.plane)]
    served = direct.backend(trust.plane) if direct is not None else None
    if served is not None:
        connected.append(served.describe())
    count = len(connected) if holdings is None else len(holdings) + (served is not None)
    report: dict[str, Any] = {
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
        "connectedAgents": count,
        "agents": connected,
    }
    held = conditions.of(trust.plane) if conditions is not None else None
    if held is not None:
        report["conditions"] = describe(held)
    if holdings is not None:
        report["agentReplicas"] = [
            {"agentId": agent_id, "replicas": replicas} for agent_id, replicas in holdings.items()
        ]
    return report


def operator_server(
    *,
    host: str | None,
    port: int,
    reuse_port: bool = False,
    trust: TrustRegistry,
    agents: AgentRegistry,
    metrics: GatewayMetrics,
    ready: Callable[[], tuple[bool, str]],
    auth: OperatorAuth | None = None,
    direct: DirectPlanes | None = None,
    peers: PeerDirectory | None = None,
    siblings: Siblings | None = None,
    state: ConsoleState | None = None,
) -> SmallHttpServer:
    """The operator endpoints on `host:port` (started by the caller); with `siblings` (the
    other workers of this gateway), /planes, /metrics and the console show the whole gateway,
    not this worker's part of it."""
    state = state or ConsoleState()

    async def whole_planes() -> dict[str, Any]:
        report = planes_document(
            trust=trust, agents=agents, direct=direct, peers=peers, conditions=state.conditions
        )
        return report if siblings is None else await siblings.planes(report)

    async def console_parts() -> WholeGateway:
        """The history and the recent refusals of the whole gateway."""
        gathered = await siblings.gather(CONSOLE_PATH) if siblings is not None else None
        return whole_gateway(state, gathered.answers if gathered else {})

    async def console_view() -> Element:
        planes, parts = await asyncio.gather(whole_planes(), console_parts())
        document = {**planes, "refusals": parts.refusals}
        return console(document, history=parts.history, now=time.time())

    async def readyz() -> Answer:
        is_ready, detail = ready()
        status = "ready" if is_ready else "not ready"
        return _json({"status": status, "detail": detail}, 200 if is_ready else 503)

    async def planes() -> Answer:
        return _json(await whole_planes())

    async def console_data() -> Answer:
        planes, parts = await asyncio.gather(whole_planes(), console_parts())
        return _json({**planes, **parts.document(), "generatedAt": time.time()})

    async def history() -> Answer:
        return _json((await console_parts()).document()["history"])

    async def prometheus() -> Answer:
        body = generate_latest(metrics.registry)
        if siblings is not None:
            body = await siblings.metrics(body)
        return Answer(200, CONTENT_TYPE_LATEST.encode(), body)

    async def healthz() -> Answer:
        # Answering at all proves the event loop turns; that is what liveness means here.
        return _json({"status": "ok"})

    async def page_answer() -> Answer:
        return page.page_answer(await console_view())

    async def view_answer() -> Answer:
        return page.view_answer(await console_view())

    routes: dict[str, Callable[[], Awaitable[Answer]]] = {
        "/healthz": healthz,
        "/readyz": readyz,
        "/planes": planes,
        "/metrics": prometheus,
        "/console": console_data,
        "/history": history,
        **dict.fromkeys(page.PAGE_PATHS, page_answer),
        page.VIEW_PATH: view_answer,
    }

    async def answer(request: Request) -> Answer:
        if auth is not None and request.path not in PROBES:
            authorization = header_value(request.head.headers, b"authorization")
            if not auth.allows(None if authorization is None else authorization.decode("latin-1")):
                metrics.operator_refusals.inc()
                log.info("operator request refused", path=request.path, peer=request.peer)
                return _unauthorized()
        route = routes.get(request.path)
        if route is None:
            return Answer(404, TEXT, b"404: Not Found")
        if request.head.method not in ("GET", "HEAD"):
            return Answer(405, TEXT, b"405: Method Not Allowed", ((b"Allow", b"GET, HEAD"),))
        return await route()

    return SmallHttpServer(answer, host=host, port=port, reuse_port=reuse_port, limits=LIMITS)


def _json(document: object, status: int = 200) -> Answer:
    return Answer(status, JSON, json.dumps(document).encode())


def _unauthorized() -> Answer:
    document = {
        "status": "unauthorized",
        "detail": "a bearer token is required (see --operator-token-file)",
    }
    challenge = (b"WWW-Authenticate", b'Bearer realm="planelink-gateway-operator"')
    return Answer(401, JSON, json.dumps(document).encode(), (challenge,))
