"""The live replicas as this one sees them: its peers (fed by a presence source) and itself.

A presence source (`gateway.interfaces.PeerSink`) replaces the peers whenever it learns
something; everything else reads: the agent listener tells agents the live replica ids (so each
keeps a tunnel to every one), a caller's request for a plane without a local tunnel is
forwarded to a peer that `holds` it, and status counts the distinct agents of a plane across
replicas (one agent holds a tunnel to every replica, so tunnels are not agents).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import structlog

from certs import PlaneRef
from gateway.interfaces import Replica

log = structlog.get_logger("gateway.peers")

LocalPlanes = Callable[[], Mapping[PlaneRef, frozenset[str]]]
"""The planes this replica holds a tunnel to, each with its agents' ids."""


class PeerDirectory:
    def __init__(
        self,
        own_id: str,
        *,
        local_planes: LocalPlanes,
        peer_url: str = "",
        host: str = "",
    ) -> None:
        self._own_id = own_id
        self._local_planes = local_planes
        self.peer_url = peer_url
        """Set once the peer listener is bound (its port may be chosen then)."""
        self.host = host
        self._peers: dict[str, Replica] = {}
        self._listeners: list[Callable[[], None]] = []

    @property
    def own_id(self) -> str:
        return self._own_id

    def local(self) -> Replica:
        return Replica(
            id=self._own_id,
            peer_url=self.peer_url,
            host=self.host,
            planes=dict(self._local_planes()),
        )

    def replace_peers(self, peers: Iterable[Replica]) -> None:
        new = {peer.id: peer for peer in peers if peer.id != self._own_id}
        ids_changed = new.keys() != self._peers.keys()
        if ids_changed:
            log.info(
                "live replicas changed",
                replica=self._own_id,
                joined=sorted(new.keys() - self._peers.keys()),
                left=sorted(self._peers.keys() - new.keys()),
            )
        self._peers = new
        if ids_changed:
            for listener in list(self._listeners):
                listener()

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` whenever the set of live replica ids changes; returns the
        unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def peers(self) -> list[Replica]:
        return [self._peers[key] for key in sorted(self._peers)]

    def live_ids(self) -> tuple[str, ...]:
        """Every live replica's id, this one's included, sorted."""
        return tuple(sorted({self._own_id, *self._peers}))

    def holders(self, plane: PlaneRef) -> list[Replica]:
        """The peers holding a tunnel to `plane` that can be forwarded to."""
        return [peer for peer in self.peers() if peer.peer_url and peer.planes.get(plane)]

    def holdings(self, plane: PlaneRef) -> dict[str, list[str]]:
        """For each agent of `plane` anywhere: the ids of the replicas it holds a tunnel to."""
        return self.all_holdings().get(plane, {})

    def all_holdings(self) -> dict[PlaneRef, dict[str, list[str]]]:
        """`holdings` of every plane at once: one pass over the live replicas (what a document
        of every plane asks for; a call of `holdings` per plane would read every replica's
        planes each time)."""
        by_plane: dict[PlaneRef, dict[str, list[str]]] = {}
        for replica in [self.local(), *self.peers()]:
            for plane, agent_ids in replica.planes.items():
                held = by_plane.setdefault(plane, {})
                for agent_id in agent_ids:
                    held.setdefault(agent_id, []).append(replica.id)
        return {
            plane: {agent: sorted(ids) for agent, ids in sorted(held.items())}
            for plane, held in by_plane.items()
        }
