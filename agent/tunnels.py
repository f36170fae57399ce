"""The agent's tunnels, one per gateway replica, and the replicas it still lacks one to.

A gateway may run as several replicas behind one address; each serves callers only through the
tunnels it holds itself, so the agent keeps one tunnel to every live replica. Each tunnel's
gateway names itself in its HELLO (`gateway-id`) and tells the live replica ids in REPLICAS
frames (none while it is alone: the set is then its own id). What the agent *wants* is the
union of the latest sets of its tunnels; what it *misses* is what it wants and does not hold.
A replica that leaves drops out of the sets of the others, so nobody dials for it any more.

A tunnel whose gateway gives no id (an older gateway) is held under a made-up key and reports
nothing: it is served like any other, and never makes the agent dial for more.

Bookkeeping only: no I/O; the seeker (`agent.seeker`) dials, the agent serves.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from protocol.frames import MAX_REPLICA_ID_SIZE
from protocol.headers import HeaderBlockError, check_token
from tunnel import TunnelSession
from tunnel.contract import IDENTITY_GATEWAY_ID

_UNNAMED = itertools.count(1)


class TunnelSet:
    """The tunnels held, by gateway replica id, and what each says is live."""

    def __init__(self, on_change: Callable[[TunnelSet], None] | None = None) -> None:
        self._held: dict[str, TunnelSession] = {}
        self._reported: dict[str, frozenset[str]] = {}
        self._keys: dict[TunnelSession, str] = {}
        self._changed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[TunnelSession]:
        return iter(list(self._held.values()))

    @staticmethod
    def replica_of(session: TunnelSession) -> str | None:
        """The replica id the session's gateway named in its HELLO (None: none, not one that
        REPLICAS could name, or no HELLO yet)."""
        peer = session.peer
        replica_id = None if peer is None else peer.identity.get(IDENTITY_GATEWAY_ID)
        if not replica_id or len(replica_id) > MAX_REPLICA_ID_SIZE:
            return None
        try:
            check_token("gateway-id", replica_id.encode("utf-8"))
        except HeaderBlockError:
            return None
        return replica_id

    def holds(self, replica_id: str) -> bool:
        return replica_id in self._held

    def held_ids(self) -> frozenset[str]:
        return frozenset(self._held)

    def claim(self, session: TunnelSession) -> str | None:
        """Hold `session` (its HELLO received); returns its key, or None when a tunnel to its
        replica is held already (the caller closes it)."""
        replica_id = self.replica_of(session)
        if replica_id is not None and replica_id in self._held:
            return None
        key = replica_id if replica_id is not None else f"?unnamed-{next(_UNNAMED)}"
        self._held[key] = session
        self._keys[session] = key
        self._reported[key] = self._set_of(session, key)
        self._notify()
        return key

    def report(self, session: TunnelSession) -> None:
        """`session`'s gateway sent a new set of live replicas (`session.replicas`)."""
        key = self._keys.get(session)
        if key is None:
            return  # not held (yet): `claim` reads the set then
        reported = self._set_of(session, key)
        if reported != self._reported.get(key):
            self._reported[key] = reported
            self._notify()

    def release(self, session: TunnelSession) -> None:
        key = self._keys.pop(session, None)
        if key is None:
            return
        del self._held[key]
        del self._reported[key]
        self._notify()

    def wanted(self) -> frozenset[str]:
        """Every replica some tunnel's gateway says is live."""
        return frozenset().union(*self._reported.values())

    def missing(self) -> frozenset[str]:
        """The replicas wanted and not held."""
        return self.wanted() - self._held.keys()

    def wait_for_change(self) -> Coroutine[Any, Any, object]:
        """Completes at the next change after this call (fixed at the call, so a caller that
        checks and then waits misses nothing)."""
        return self._changed.wait()

    async def wait_empty(self) -> None:
        """Returns once no tunnel is held (at once if none is now)."""
        await self._empty.wait()

    def _set_of(self, session: TunnelSession, key: str) -> frozenset[str]:
        if key.startswith("?"):
            return frozenset()  # a gateway without an id: it names no replica
        return session.replicas if session.replicas is not None else frozenset({key})

    def _notify(self) -> None:
        if self._held:
            self._empty.clear()
        else:
            self._empty.set()
        self._changed.set()
        self._changed = asyncio.Event()
        if self._on_change is not None:
            self._on_change(self)
