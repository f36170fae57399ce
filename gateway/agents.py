"""The agents connected to this gateway, by plane, and how a request picks one.

An agent is registered once its HELLO arrived and removed when its session ends. New streams go
to the connected, non-draining agent of the plane with the fewest open streams (several agent
replicas share the load; losing one fails only its own streams). When a plane's trust changes,
every connected agent of that plane is verified again and disconnected if it no longer passes —
within the same event-loop turn as the change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from certs import CertificateInfo, CertificateRejected, PlaneRef
from gateway.console.refusals import RecentRefusal, RecentRefusals
from gateway.interfaces import PlaneTrust
from gateway.metrics import AgentSample, GatewayMetrics
from gateway.trust import TrustRegistry, verify_agent
from protocol import ErrorCode
from tunnel import TunnelSession
from tunnel.role_metrics import CertificateExpiry, earliest_not_after

RejectionHook = Callable[[PlaneRef, str, str], None]
"""(plane, reason, detail) of an agent the gateway turned away."""

log = structlog.get_logger("gateway.agents")


@dataclass(eq=False)
class AgentConnection:
    """One connected agent: its session and what we know about it."""

    plane: PlaneRef
    agent_id: str
    session: TunnelSession
    certificate: CertificateInfo
    certificate_der: bytes
    remote_address: str
    identity: dict[str, str] = field(default_factory=dict)
    connected_at: float = field(default_factory=time.time)

    def describe(self) -> dict[str, object]:
        session = self.session
        return {
            "agentId": self.agent_id,
            "direct": False,  # a direct plane's entry is `gateway.direct.DirectPlane`'s
            "remoteAddress": self.remote_address,
            "connectedAt": _iso(self.connected_at),
            "lastHeartbeatSecondsAgo": round(time.monotonic() - session.last_received, 3),
            "rttSeconds": None if session.rtt is None else round(session.rtt, 6),
            "openStreams": session.open_streams,
            "streamsOpened": session.streams_opened,
            "bytesToAgent": session.bytes_out,
            "bytesFromAgent": session.bytes_in,
            "draining": session.draining,
            "identity": self.identity,
            "certificate": {
                "subject": self.certificate.subject,
                "notAfter": self.certificate.not_after.isoformat(),
                "sha256": self.certificate.sha256_fingerprint,
            },
        }


class AgentRegistry:
    """Connected agents by plane; subscribes to trust changes."""

    def __init__(
        self,
        trust: TrustRegistry,
        metrics: GatewayMetrics,
        *,
        refusals: RecentRefusals | None = None,
    ) -> None:
        """`refusals`: where rejected agents are kept for the console."""
        self.refusals = refusals
        self.on_rejected: RejectionHook | None = None
        """Told of every agent rejected or disconnected for a plane (the reconciler makes
        Events of it)."""
        self._agents: dict[PlaneRef, list[AgentConnection]] = {}
        self._trust = trust
        self._metrics = metrics
        self._changed = asyncio.Event()
        self.started_at = time.monotonic()
        self._left_at: dict[PlaneRef, float] = {}
        """When the last agent of a plane left (monotonic), for planes with none now."""
        trust.subscribe(self._on_trust_change)
        metrics.watch_agents(self._samples)
        metrics.watch_certificates(self.certificate_expiries)
        metrics.watch_planes(lambda: (str(known.plane) for known in trust.planes()))

    def _samples(self) -> Iterator[AgentSample]:
        for agent in self.all_agents():
            yield AgentSample(
                plane=str(agent.plane),
                agent_id=agent.agent_id,
                rtt=agent.session.rtt,
                open_streams=agent.session.open_streams,
                heartbeat_age=max(0.0, time.monotonic() - agent.session.last_received),
            )

    def certificate_expiries(self) -> Iterator[CertificateExpiry]:
        """When each plane's agent CAs, and the certificates its connected agents presented,
        stop being valid (the gateway's certificate expiry gauge)."""
        for trust in self._trust.planes():
            not_after = earliest_not_after(trust.client_cas)
            if not_after is not None:
                yield CertificateExpiry("agent_ca", str(trust.plane), not_after)
        for agent in self.all_agents():
            not_after = agent.certificate.not_after.timestamp()
            yield CertificateExpiry("agent", str(agent.plane), not_after)

    def add(self, agent: AgentConnection) -> None:
        self._agents.setdefault(agent.plane, []).append(agent)
        self._left_at.pop(agent.plane, None)
        self._metrics.agent_connects.labels(plane=str(agent.plane)).inc()
        log.info(
            "agent connected",
            plane=str(agent.plane),
            agent_id=agent.agent_id,
            remote=agent.remote_address,
            subject=agent.certificate.subject,
        )
        self._notify()

    def remove(self, agent: AgentConnection, reason: str) -> None:
        agents = self._agents.get(agent.plane, [])
        if agent in agents:
            agents.remove(agent)
            if not agents:
                del self._agents[agent.plane]
                if self._trust.get(agent.plane) is not None:  # not for a deleted plane
                    self._left_at[agent.plane] = time.monotonic()
            dropped_for = agent.session.dropped_for
            if dropped_for is not None:
                self._metrics.agent_drops.labels(plane=str(agent.plane), limit=dropped_for).inc()
            log.info(
                "agent disconnected",
                plane=str(agent.plane),
                agent_id=agent.agent_id,
                reason=reason,
                dropped_for=dropped_for,
            )
            self._notify()

    def left_at(self, plane: PlaneRef) -> float | None:
        """When (monotonic) the last agent of `plane` left, if it has none now but had one
        since this gateway started."""
        return self._left_at.get(plane)

    def agents(self, plane: PlaneRef) -> list[AgentConnection]:
        return list(self._agents.get(plane, []))

    def local_planes(self) -> dict[PlaneRef, frozenset[str]]:
        """The planes with a connected agent, each with its agents' ids (presence)."""
        return {
            plane: frozenset(agent.agent_id for agent in agents)
            for plane, agents in self._agents.items()
            if agents
        }

    def all_agents(self) -> Iterator[AgentConnection]:
        for agents in self._agents.values():
            yield from agents

    def pick(
        self, plane: PlaneRef, *, exclude: frozenset[int] = frozenset()
    ) -> AgentConnection | None:
        """The agent with the most room for another stream, or None if none can take one;
        `exclude` holds the ids of the sessions already tried."""
        candidates = [
            agent
            for agent in self._agents.get(plane, ())
            if id(agent.session) not in exclude
            and not agent.session.closed
            and not agent.session.draining
            and agent.session.available_streams > 0
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda agent: agent.session.open_streams)

    def rejected(
        self,
        reason: str,
        detail: str,
        *,
        plane: PlaneRef | None = None,
        agent_id: str = "",
        address: str = "",
    ) -> None:
        """An agent was turned away (or cut off): counted by reason, kept among the recent
        refusals, and told to `on_rejected` when it is known which plane it came for. Logging
        is the caller's (it knows more)."""
        self._metrics.agent_rejections.labels(reason=reason).inc()
        if self.refusals is not None:
            self.refusals.note(
                RecentRefusal(
                    "agent",
                    reason,
                    detail,
                    plane="" if plane is None else str(plane),
                    who=agent_id,
                    address=address,
                )
            )
        if plane is not None and self.on_rejected is not None:
            self.on_rejected(plane, reason, detail)

    def wait_for_change(self) -> Coroutine[Any, Any, object]:
        """Completes at the next connect or disconnect after this call (for tests and status
        writers).

        Not a coroutine function on purpose: the change to wait for is fixed when this is
        called, not when the returned coroutine first runs, so one wrapped in `wait_for` or a
        task cannot miss a change that happens before its first step.
        """
        return self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_trust_change(self, plane: PlaneRef, trust: PlaneTrust | None) -> None:
        if trust is None:
            self._left_at.pop(plane, None)  # bounded by the planes that exist
        for agent in self.agents(plane):
            reason = _still_trusted(agent, trust)
            if reason is not None:
                log.warning(
                    "disconnecting agent: trust changed",
                    plane=str(plane),
                    agent_id=agent.agent_id,
                    reason=reason,
                )
                self.rejected(
                    "TrustRevoked",
                    f"agent disconnected: {reason}",
                    plane=plane,
                    agent_id=agent.agent_id,
                    address=agent.remote_address,
                )
                agent.session.close(reason, ErrorCode.NO_ERROR)


def _still_trusted(agent: AgentConnection, trust: PlaneTrust | None) -> str | None:
    if trust is None:
        return f"the DataPlane {agent.plane} was deleted"
    try:
        verify_agent(trust, agent.certificate_der)
    except CertificateRejected as rejected:
        return f"the certificate no longer verifies: {rejected}"
    return None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
