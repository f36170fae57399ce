"""The agent's book of tunnels: one per replica, what the replicas say is live, what is missing.
No sockets: stand-in sessions carry only what the book reads (the HELLO and the last REPLICAS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from agent.tunnels import TunnelSet
from protocol import PeerInfo, Role, Settings
from tunnel import TunnelSession


@dataclass(eq=False)
class _Session:
    peer: PeerInfo | None
    replicas: frozenset[str] | None = None


def _session(gateway_id: str | None) -> TunnelSession:
    identity = {} if gateway_id is None else {"gateway-id": gateway_id}
    peer = PeerInfo(Role.GATEWAY, 1, Settings(), identity, ())
    return cast("TunnelSession", _Session(peer))


async def test_one_tunnel_per_replica_and_the_union_of_what_they_say() -> None:
    changes: list[int] = []
    tunnels = TunnelSet(on_change=lambda book: changes.append(len(book)))
    first = _session("r0")
    assert tunnels.claim(first) == "r0"
    assert tunnels.wanted() == {"r0"}  # alone until it says otherwise
    assert tunnels.missing() == frozenset()
    _say(first, "r0", "r1", "r2")
    tunnels.report(first)
    assert tunnels.missing() == {"r1", "r2"}
    assert tunnels.claim(_session("r0")) is None  # a second tunnel to r0 is refused
    second = _session("r1")
    assert tunnels.claim(second) == "r1"
    assert tunnels.missing() == {"r2"}
    assert tunnels.held_ids() == {"r0", "r1"}
    assert changes == [1, 1, 2]


async def test_a_replica_no_tunnel_names_any_more_is_not_wanted() -> None:
    tunnels = TunnelSet()
    first, second = _session("r0"), _session("r1")
    for session in (first, second):
        _say(session, "r0", "r1", "r2")
        tunnels.claim(session)
    assert tunnels.missing() == {"r2"}
    for session in (first, second):  # r2 left, and both heard
        _say(session, "r0", "r1")
        tunnels.report(session)
    assert tunnels.missing() == frozenset()
    tunnels.release(first)  # r0 leaves: r1 still names it until its gateway hears
    assert tunnels.missing() == {"r0"}
    _say(second, "r1")
    tunnels.report(second)
    assert tunnels.wanted() == {"r1"}
    assert tunnels.missing() == frozenset()
    tunnels.release(second)
    assert len(tunnels) == 0
    await tunnels.wait_empty()  # returns at once


def _say(session: TunnelSession, *ids: str) -> None:
    """What a REPLICAS frame does to the session: its latest set."""
    cast("_Session", session).replicas = frozenset(ids)


async def test_a_gateway_without_a_usable_id_is_held_but_names_nothing() -> None:
    tunnels = TunnelSet()
    for session in (_session(None), _session("not a token"), _session("x" * 254)):
        key = tunnels.claim(session)
        assert key is not None
        assert key.startswith("?")
    assert len(tunnels) == 3
    assert tunnels.wanted() == frozenset()
    assert tunnels.missing() == frozenset()


async def test_a_report_before_the_claim_is_read_at_the_claim() -> None:
    tunnels = TunnelSet()
    early = _session("r0")
    _say(early, "r0", "r1")
    tunnels.report(early)  # not held yet: ignored
    assert tunnels.wanted() == frozenset()
    tunnels.claim(early)
    assert tunnels.missing() == {"r1"}
