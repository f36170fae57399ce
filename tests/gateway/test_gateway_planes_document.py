"""Holdings with peers (what /planes shows): every plane's gathered in one pass."""

from __future__ import annotations

import time

import certs
from gateway.interfaces import Replica
from gateway.peers import PeerDirectory
from tests.kit.waits import scaled

A = certs.plane_ref("ns-a", "plane-a")
B = certs.plane_ref("ns-b", "plane-b")


def test_all_holdings_are_each_planes_holdings() -> None:
    peers = PeerDirectory(
        "gw-1", local_planes=lambda: {A: frozenset({"a1", "a2"}), B: frozenset({"b1"})}
    )
    peers.replace_peers(
        [
            Replica("gw-0", planes={A: frozenset({"a2"})}),
            Replica("gw-2", planes={A: frozenset({"a1", "a3"}), B: frozenset({"b1"})}),
        ]
    )
    every = peers.all_holdings()
    assert every[A] == {"a1": ["gw-1", "gw-2"], "a2": ["gw-0", "gw-1"], "a3": ["gw-2"]}
    assert every[B] == {"b1": ["gw-1", "gw-2"]}
    assert peers.holdings(A) == every[A]
    assert peers.holdings(certs.plane_ref("ns-c", "nowhere")) == {}


def test_all_holdings_of_many_planes_take_one_pass() -> None:
    local = {certs.plane_ref("ns", f"p{i}"): frozenset({f"agent-{i}"}) for i in range(10_000)}
    peers = PeerDirectory("gw-0", local_planes=lambda: local)
    peers.replace_peers([Replica(f"gw-{r}", planes=local) for r in range(1, 5)])
    started = time.perf_counter()
    every = peers.all_holdings()
    elapsed = time.perf_counter() - started
    assert len(every) == 10_000
    assert every[certs.plane_ref("ns", "p7")] == {"agent-7": [f"gw-{r}" for r in range(5)]}
    # One call per plane copies all 10,000 planes each time: seconds on this machine (~4 s).
    assert elapsed < scaled(1.5), elapsed
