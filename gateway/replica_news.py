"""Telling agents which gateway replicas are live, so that each keeps a tunnel to every one.

An agent that offered the capability `replicas` gets a REPLICAS frame with the live replica ids
right after its HELLO and whenever the set changes — but only when the set differs from the one
it knows, which starts as this replica's own id (its HELLO's `gateway-id`): with a single
replica nothing is ever sent, and the wire is what it was before replicas existed. An agent
that did not offer the capability (an older one) is never sent anything.

It never decides who is live: the `PeerDirectory` does (fed by Leases or presence files); this
only relays it, one frame per agent and change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from protocol import CAPABILITY_REPLICAS, LocalProtocolError
from protocol.frames import MAX_REPLICA_IDS
from tunnel import SessionClosed, TunnelSession

log = structlog.get_logger("gateway.replica_news")


class LiveReplicas(Protocol):
    """What this needs of `gateway.peers.PeerDirectory`."""

    @property
    def own_id(self) -> str: ...

    def live_ids(self) -> Sequence[str]: ...

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]: ...


class ReplicaNews:
    """Sends each listening agent the live replica ids when they differ from what it knows."""

    def __init__(self, replicas: LiveReplicas) -> None:
        self._replicas = replicas
        self._known: dict[TunnelSession, frozenset[str]] = {}
        """Per agent that offered `replicas`: the set it was last told (at most one entry per
        connected agent, removed when it leaves)."""
        self._unsubscribe: Callable[[], None] | None = None
        self._warned_too_many = False

    @property
    def own_id(self) -> str:
        return self._replicas.own_id

    def start(self) -> None:
        """Follow the directory: every change of the live set is relayed."""
        if self._unsubscribe is None:
            self._unsubscribe = self._replicas.subscribe(self._changed)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def joined(self, session: TunnelSession) -> None:
        """An agent was accepted: tell it the live set if it listens and it is news."""
        peer = session.peer
        if peer is None or CAPABILITY_REPLICAS not in peer.capabilities:
            return
        self._known[session] = frozenset({self.own_id})
        self._tell(session, self._live())

    def left(self, session: TunnelSession) -> None:
        self._known.pop(session, None)

    def told(self, session: TunnelSession) -> frozenset[str] | None:
        """The set `session`'s agent was last told (None: it does not listen)."""
        return self._known.get(session)

    def _changed(self) -> None:
        live = self._live()
        for session in list(self._known):
            self._tell(session, live)

    def _live(self) -> frozenset[str]:
        ids = sorted(self._replicas.live_ids())
        if len(ids) > MAX_REPLICA_IDS:
            # More replicas than a frame names: agents hold tunnels to 256 of them (this one
            # among them, so an agent never drops the replica that tells it).
            if not self._warned_too_many:
                self._warned_too_many = True
                log.warning(
                    "more live replicas than REPLICAS can name",
                    replicas=len(ids),
                    named=MAX_REPLICA_IDS,
                )
            others = [rid for rid in ids if rid != self.own_id]
            ids = [self.own_id, *others[: MAX_REPLICA_IDS - 1]]
        return frozenset(ids)

    def _tell(self, session: TunnelSession, live: frozenset[str]) -> None:
        if self._known.get(session) == live:
            return
        # Recorded before sending: a set that cannot be sent is not retried at every change.
        self._known[session] = live
        try:
            session.send_replicas(live)
        except SessionClosed:
            self._known.pop(session, None)
        except LocalProtocolError as error:
            log.error("cannot tell an agent the live replicas", error=str(error))
