"""What a replica's Lease advertises and what is read back from a peer's (pure, no API server)."""

from __future__ import annotations

import json

import pytest

import certs
from gateway.interfaces import Replica
from gateway.reconciler.presence import (
    AGENTS_ANNOTATION,
    HOST_ANNOTATION,
    MAX_AGENT_ID_CHARS,
    PEER_URL_ANNOTATION,
    advertise_agents,
    bounded_agent_id,
    is_gateway_replica,
    read_agents,
    read_peer_url,
    read_replica,
)
from gateway.reconciler.replicas import lease_name_part, lease_names, liveness_horizon
from kubeobject import KubeObject

A = certs.plane_ref("ns-a", "plane-a")
B = certs.plane_ref("ns-b", "plane-b")


def _lease(holder: object, annotations: dict[str, object]) -> KubeObject:
    return {
        "metadata": {"name": "gw-replica-x", "annotations": annotations},
        "spec": {"holderIdentity": holder},
    }


def test_agents_are_advertised_sorted_per_plane_and_read_back() -> None:
    advertised = advertise_agents(
        {B: frozenset({"b1"}), A: frozenset({"a2", "a1"}), certs.plane_ref("n", "e"): frozenset()},
        max_ids=16,
        max_bytes=10_000,
    )
    assert advertised.text == '{"ns-a/plane-a":["a1","a2"],"ns-b/plane-b":["b1"]}'
    assert (advertised.ids_left_out, advertised.planes_left_out) == (0, ())
    assert read_agents(advertised.text, replica="r1", max_ids=16) == {
        A: frozenset({"a1", "a2"}),
        B: frozenset({"b1"}),
    }


def test_ids_beyond_the_cap_per_plane_are_left_out_and_counted() -> None:
    ids = frozenset(f"agent-{i:02}" for i in range(20))
    advertised = advertise_agents({A: ids, B: frozenset({"b1"})}, max_ids=5, max_bytes=10_000)
    document = json.loads(advertised.text)
    assert document["ns-a/plane-a"] == [f"agent-{i:02}" for i in range(5)]  # the smallest
    assert document["ns-b/plane-b"] == ["b1"]
    assert advertised.ids_left_out == 15
    assert advertised.planes_left_out == ()


def test_planes_beyond_the_byte_budget_are_left_out_in_name_order() -> None:
    planes = {certs.plane_ref("ns", f"p{i:03}"): frozenset({f"agent-{i}"}) for i in range(500)}
    advertised = advertise_agents(planes, max_ids=4, max_bytes=2_000)
    assert len(advertised.text.encode()) <= 2_000
    kept = read_agents(advertised.text, replica="r", max_ids=4)
    assert kept
    assert advertised.planes_left_out
    assert len(kept) + len(advertised.planes_left_out) == 500
    assert max(str(p) for p in kept) < min(str(p) for p in advertised.planes_left_out)


def test_a_long_agent_id_is_shortened_the_same_way_everywhere() -> None:
    long_id = "x" * 1000
    other = "x" * 999 + "y"
    shortened = bounded_agent_id(long_id)
    assert len(shortened) == MAX_AGENT_ID_CHARS
    assert shortened == bounded_agent_id(long_id)
    assert shortened != bounded_agent_id(other)
    assert bounded_agent_id("pod-1") == "pod-1"
    advertised = advertise_agents({A: frozenset({long_id})}, max_ids=4, max_bytes=10_000)
    assert read_agents(advertised.text, replica="r", max_ids=4) == {A: frozenset({shortened})}


def test_an_old_count_is_read_as_anonymous_agents_of_that_replica() -> None:
    old = json.dumps({"ns-a/plane-a": 2, "ns-b/plane-b": 0})
    assert read_agents(old, replica="r1", max_ids=16) == {A: frozenset({"r1#0", "r1#1"})}
    # Two old replicas' agents are not the same agents (the old sum is kept).
    assert read_agents(old, replica="r2", max_ids=16)[A].isdisjoint({"r1#0", "r1#1"})


@pytest.mark.parametrize(
    "text",
    [
        None,
        42,
        "not json",
        "[1, 2]",
        '"a string"',
        '{"not a plane": ["a"]}',
        '{"ns-a/plane-a": true}',
        '{"ns-a/plane-a": "a1"}',
        '{"ns-a/plane-a": {"a1": 1}}',
        '{"ns-a/plane-a": [1, null, ""]}',
        '{"ns-a/plane-a": -5}',
    ],
)
def test_a_malformed_annotation_yields_no_agents(text: object) -> None:
    assert read_agents(text, replica="r", max_ids=16) == {}


def test_a_lying_lease_yields_at_most_the_cap() -> None:
    huge_count = json.dumps({"ns-a/plane-a": 10**12})
    assert len(read_agents(huge_count, replica="r", max_ids=16)[A]) == 16
    many = json.dumps({"ns-a/plane-a": [f"a{i}" for i in range(10_000)]})
    assert len(read_agents(many, replica="r", max_ids=16)[A]) == 16
    too_long = json.dumps({"ns-a/plane-a": ["x" * (MAX_AGENT_ID_CHARS + 1), "ok"]})
    assert read_agents(too_long, replica="r", max_ids=16) == {A: frozenset({"ok"})}


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("https://10.0.0.7:8444", "https://10.0.0.7:8444"),
        ("https://[fd00::7]:8444/", "https://[fd00::7]:8444"),
        ("http://10.0.0.7:8444", ""),
        ("https://10.0.0.7", ""),
        ("https://10.0.0.7:8444/planes/x", ""),
        ("https://user:pw@10.0.0.7:8444", ""),
        ("https://10.0.0.7:8444?x=1", ""),
        ("https://10.0.0.7:99999", ""),
        ("https://:8444", ""),
        ("", ""),
        (None, ""),
        (8444, ""),
        ("https://" + "a" * 600 + ":1", ""),
    ],
)
def test_a_peer_url_is_read_only_as_a_bare_https_address(text: object, read: str) -> None:
    assert read_peer_url(text) == read


def test_a_replica_is_read_from_its_lease() -> None:
    lease = _lease(
        "gw-0",
        {
            AGENTS_ANNOTATION: '{"ns-a/plane-a":["a1"]}',
            PEER_URL_ANNOTATION: "https://10.0.0.7:8444",
            HOST_ANNOTATION: "gw-0",
        },
    )
    assert read_replica(lease, max_ids=16) == Replica(
        id="gw-0", peer_url="https://10.0.0.7:8444", host="gw-0", planes={A: frozenset({"a1"})}
    )
    assert is_gateway_replica(lease)
    # A Lease of a replica before scale-out: no peer URL, counts, and is no peer.
    old = _lease("gw-1", {AGENTS_ANNOTATION: '{"ns-a/plane-a":1}'})
    assert read_replica(old, max_ids=16) == Replica(id="gw-1", planes={A: frozenset({"gw-1#0"})})
    assert not is_gateway_replica(old)
    assert not is_gateway_replica({"metadata": {}})


@pytest.mark.parametrize("holder", [None, "", 7, "x" * 254])
def test_a_lease_without_a_plausible_holder_is_no_replica(holder: object) -> None:
    assert (
        read_replica(_lease(holder, {AGENTS_ANNOTATION: '{"ns-a/plane-a":["a1"]}'}), max_ids=4)
        is None
    )


def test_lease_names_of_distinct_ids_never_collide() -> None:
    assert lease_name_part("gateway-0") == "gateway-0"
    long_pod = "planelink-gateway-7d9f8b6c5d-abcde-with-a-long-suffix"
    w0, w1 = lease_name_part(f"{long_pod}-w0"), lease_name_part(f"{long_pod}-w1")
    assert w0 != w1
    assert len(w0) <= 40
    assert len(w1) <= 40
    assert lease_name_part("Gateway_0") != lease_name_part("gateway-0")
    for part in (w0, w1, lease_name_part("Gateway_0"), lease_name_part("___")):
        assert part
        assert part[0].isalnum()
        assert set(part) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_a_replica_speaks_only_through_the_lease_named_after_it() -> None:
    assert lease_names("gw", "gateway-0") == {"gw-replica-gateway-0"}
    long_id = "planelink-gateway-7d9f8b6c5d-abcde-with-a-long-suffix-w1"
    names = lease_names("gw", long_id)
    assert f"gw-replica-{lease_name_part(long_id)}" in names
    assert f"gw-replica-{long_id[:40]}" in names  # as a replica before scale-out named it
    assert "gw-replica-gateway-0" not in lease_names("gw", "gateway-1")


def test_a_replica_that_cannot_see_its_own_lease_change_stops_judging_its_peers() -> None:
    assert liveness_horizon(100.0, own_changed_at=None, own_duration=15) == 100.0
    assert liveness_horizon(100.0, own_changed_at=95.0, own_duration=15) == 100.0  # seeing
    # Blind since 60 + 15: peers renewed after 60 are still live, whatever the clock says.
    assert liveness_horizon(100.0, own_changed_at=60.0, own_duration=15) == 75.0
