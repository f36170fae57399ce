"""Two gateway replicas against one API server: one writes status, from everyone's agents; each
knows the other from its Lease."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

import certs
from gateway.agents import AgentRegistry
from gateway.direct import DirectPlanes
from gateway.metrics import GatewayMetrics
from gateway.peers import PeerDirectory
from gateway.reconciler import CoordinationSettings, Reconciler
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.presence import AGENTS_ANNOTATION, HOST_ANNOTATION, PEER_URL_ANNOTATION
from gateway.reconciler.replicas import GROUP_LABEL, LEADER_LABEL
from gateway.trust import TrustRegistry
from kubeobject import KubeObject
from tests.kit.waits import eventually, scaled, wait_for
from tests.reconciler.conftest import Kit


def _replica(
    kit: Kit,
    identity: str,
    *,
    peers: PeerDirectory | None = None,
    registries: tuple[TrustRegistry, AgentRegistry] | None = None,
    **limits: int,
) -> tuple[Reconciler, AgentRegistry]:
    if registries is None:
        trust = TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
        registries = trust, AgentRegistry(trust, GatewayMetrics())
    trust, agents = registries
    coordination = CoordinationSettings(
        namespace=kit.namespace,
        identity=identity,
        prefix="gw",
        # Nothing here waits for a Lease to expire (the leader hands over when it stops), so a
        # long duration costs no time, and a stalled API server or event loop cannot make one
        # replica think the other dead (Connected would flap, or A would take the lead).
        lease_duration=10.0,
        renew_interval=0.25,
        publish_min_interval=0.05,
        **limits,
    )
    reconciler = Reconciler(
        client=kit.client,
        trust=trust,
        agents=agents,
        direct=DirectPlanes(),
        settings=kit.settings(kit.namespace, coordination=coordination),
        registry=CollectorRegistry(),
        peers=peers,
    )
    return reconciler, agents


def _peered(
    kit: Kit, identity: str, port: int, **limits: int
) -> tuple[Reconciler, AgentRegistry, PeerDirectory]:
    """A replica with a PeerDirectory, as the gateway wires it."""
    trust = TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    agents = AgentRegistry(trust, GatewayMetrics())
    peers = PeerDirectory(
        identity,
        local_planes=agents.local_planes,
        peer_url=f"https://127.0.0.1:{port}",
        host=f"host-of-{identity}",
    )
    reconciler, _ = _replica(kit, identity, peers=peers, registries=(trust, agents), **limits)
    return reconciler, agents, peers


async def _until_lease(kit: Kit, selector: str, predicate: Callable[[KubeObject], bool]) -> None:
    """Watch Leases with `selector` until one satisfies `predicate`."""
    collection = KubeApi(kit.client).leases(kit.namespace, label_selector=selector)
    async with asyncio.timeout(kit.timeout):
        while True:
            items, version = await collection.list()
            if any(predicate(item) for item in items):
                return
            async for event in collection.watch(version):
                if event.type != "DELETED" and predicate(event.object):
                    return


def _held_by(identity: str) -> Callable[[KubeObject], bool]:
    return lambda lease: (lease.get("spec") or {}).get("holderIdentity") == identity


async def _stop(recorder: asyncio.Task[None], *replicas: Reconciler) -> None:
    recorder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await recorder
    for replica in replicas:
        await replica.stop()


async def _agent_plane(kit: Kit, name: str) -> tuple[certs.CertificateBundle, certs.PlaneRef]:
    """A DataPlane `name` whose agents `ca` signs."""
    ca = certs.create_ca("agents")
    await kit.create(
        kit.client,
        kit.agent_dataplane(name, kit.namespace, {"value": ca.certificate_pem().decode()}),
    )
    return ca, certs.plane_ref(kit.namespace, name)


async def _connected_says(kit: Kit, name: str, message: str) -> KubeObject:
    """DataPlane `name` once its Connected condition's message is `message`."""
    return await kit.await_dataplane(
        kit.client,
        kit.namespace,
        name,
        lambda o: (kit.condition(o, "Connected") or {}).get("message") == message,
    )


async def test_status_does_not_flap_between_replica_views(kit: Kit) -> None:
    ca = certs.create_ca("agents")
    plane = certs.plane_ref(kit.namespace, "shared")
    await kit.create(
        kit.client,
        kit.agent_dataplane("shared", kit.namespace, {"value": ca.certificate_pem().decode()}),
    )
    # Every status write, in order, as the API server reports them.
    statuses: list[str] = []
    recorded = asyncio.Condition()

    async def record() -> None:
        collection = KubeApi(kit.client).dataplanes(kit.namespace)
        _, version = await collection.list()
        while True:
            async for event in collection.watch(version):
                version = event.object["metadata"]["resourceVersion"]
                found = kit.condition(event.object, "Connected")
                if found and (not statuses or statuses[-1] != found["status"]):
                    statuses.append(found["status"])
                    async with recorded:
                        recorded.notify_all()

    recorder = asyncio.create_task(record())
    replica_b, _ = _replica(kit, "replica-b")
    replica_a, agents_a = _replica(kit, "replica-a")
    try:
        # B leads and has no agent; A has the agent and does not lead.
        await replica_b.start()
        await _until_lease(kit, f"{LEADER_LABEL}=gw", _held_by("replica-b"))
        await replica_a.start()
        await kit.await_dataplane(
            kit.client, kit.namespace, "shared", kit.has_condition("Connected", "False")
        )
        agent = kit.connect_agent(agents_a, plane, ca)
        obj = await kit.await_dataplane(
            kit.client, kit.namespace, "shared", kit.has_condition("Ready", "True")
        )
        connected = kit.condition(obj, "Connected")
        assert connected is not None
        assert connected["message"] == "1 agent connected"
        assert replica_b.coordination.is_leader
        assert not replica_a.coordination.is_leader

        # Many renewals of A's Lease later, B still counts A's agent.
        renewals = 0

        def renewed(lease: KubeObject) -> bool:
            nonlocal renewals
            if lease["metadata"]["name"] == "gw-replica-replica-a":
                renewals += 1
            return renewals >= 8

        await _until_lease(kit, f"{GROUP_LABEL}=gw", renewed)

        # The leader leaves: A takes over at once (the Lease is handed over) and keeps it True.
        await replica_b.stop()
        await _until_lease(kit, f"{LEADER_LABEL}=gw", _held_by("replica-a"))
        await kit.patch_dataplane(
            kit.client, kit.namespace, "shared", {"spec": {"imagePullSecretRefs": ["x"]}}
        )
        obj = await kit.await_dataplane(
            kit.client, kit.namespace, "shared", lambda o: o["status"]["observedGeneration"] == 2
        )
        assert kit.has_condition("Connected", "True")(obj)
        assert statuses[statuses.index("True") :] == ["True"]  # no True → False → True

        agents_a.remove(agent, "test")
        await kit.await_dataplane(
            kit.client, kit.namespace, "shared", kit.has_condition("Connected", "False")
        )
        # The recorder's own watch may trail the read above: wait until it saw the write too.
        async with recorded:
            await wait_for(
                recorded.wait_for(lambda: statuses[-1:] == ["False"] and len(statuses) > 1), 10
            )
    finally:
        await _stop(recorder, replica_a, replica_b)
    assert statuses == ["False", "True", "False"]


async def test_replicas_advertise_and_learn_their_peers_and_count_agents_not_tunnels(
    kit: Kit,
) -> None:
    ca, plane = await _agent_plane(kit, "spread")
    replica_a, agents_a, peers_a = _peered(kit, "replica-a", 7001)
    replica_b, agents_b, peers_b = _peered(kit, "replica-b", 7002)
    # Every Lease event in the namespace, in order: what leaving looks like from outside.
    events: list[tuple[str, str, object]] = []

    async def record() -> None:
        collection = KubeApi(kit.client).leases(kit.namespace, label_selector="")
        _, version = await collection.list()
        while True:
            async for event in collection.watch(version):
                version = event.object["metadata"]["resourceVersion"]
                holder = (event.object.get("spec") or {}).get("holderIdentity")
                events.append((event.type, event.object["metadata"]["name"], holder))

    recorder = asyncio.create_task(record())
    try:
        await replica_a.start()
        await _until_lease(kit, f"{LEADER_LABEL}=gw", _held_by("replica-a"))
        await replica_b.start()
        # One agent with a tunnel to both replicas, another with a tunnel to A only.
        kit.connect_agent(agents_a, plane, ca, agent_id="agent-1")
        kit.connect_agent(agents_b, plane, ca, agent_id="agent-1")
        kit.connect_agent(agents_a, plane, ca, agent_id="agent-2")

        def holdings_seen_by_both() -> bool:
            want = {"agent-1": ["replica-a", "replica-b"], "agent-2": ["replica-a"]}
            return peers_a.holdings(plane) == want and peers_b.holdings(plane) == want

        await eventually(holdings_seen_by_both, within=10, message="peers not learned")
        assert peers_a.live_ids() == peers_b.live_ids() == ("replica-a", "replica-b")
        (b_seen_by_a,) = peers_a.peers()
        assert b_seen_by_a.peer_url == "https://127.0.0.1:7002"
        assert b_seen_by_a.host == "host-of-replica-b"
        assert [r.id for r in peers_a.holders(plane)] == ["replica-b"]

        lease = await KubeApi(kit.client).get_lease(kit.namespace, "gw-replica-replica-a")
        annotations = lease["metadata"]["annotations"]
        assert json.loads(annotations[AGENTS_ANNOTATION]) == {str(plane): ["agent-1", "agent-2"]}
        assert annotations[PEER_URL_ANNOTATION] == "https://127.0.0.1:7001"
        assert annotations[HOST_ANNOTATION] == "host-of-replica-a"
        assert lease["spec"]["holderIdentity"] == "replica-a"

        # Three tunnels, two agents.
        obj = await kit.await_dataplane(
            kit.client, kit.namespace, "spread", kit.has_condition("Connected", "True")
        )
        await _connected_says(kit, "spread", "2 agents connected")

        # The leader leaves: its Lease goes before it hands leadership over, and B drops it.
        await replica_a.stop()
        await eventually(
            lambda: peers_b.live_ids() == ("replica-b",), within=10, message="A still live for B"
        )
        was_deleted = ("DELETED", "gw-replica-replica-a", "replica-a")
        was_handed_over = ("MODIFIED", "gw-leader", None)
        await eventually(  # the recorder's own watch may trail B's
            lambda: was_deleted in events and was_handed_over in events,
            within=10,
            message="A's leaving not seen",
        )
        assert events.index(was_deleted) < events.index(was_handed_over)
        await _until_lease(kit, f"{LEADER_LABEL}=gw", _held_by("replica-b"))
        # B still has agent-1's tunnel: one agent (agent-2 held only A).
        obj = await _connected_says(kit, "spread", "1 agent connected")
        assert kit.has_condition("Connected", "True")(obj)
    finally:
        await _stop(recorder, replica_a, replica_b)


async def test_a_lease_of_a_replica_before_scale_out_still_counts_a_forged_one_not(
    kit: Kit,
) -> None:
    ca, plane = await _agent_plane(kit, "mixed")
    replica, agents, peers = _peered(kit, "replica-new", 7003)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    old_lease: KubeObject = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": "gw-replica-replica-old",
            "namespace": kit.namespace,
            "labels": {GROUP_LABEL: "gw"},
            "annotations": {AGENTS_ANNOTATION: json.dumps({str(plane): 2})},
        },
        # Live for a minute from now, whatever the test machine's speed.
        "spec": {"holderIdentity": "replica-old", "leaseDurationSeconds": 60, "renewTime": now},
    }
    # A Lease under a name of its own that claims to speak for another replica.
    forged = json.loads(json.dumps(old_lease))
    forged["metadata"]["name"] = "gw-replica-forged"
    forged["metadata"]["annotations"][PEER_URL_ANNOTATION] = "https://evil.example:8444"
    forged["spec"]["holderIdentity"] = "replica-victim"
    await KubeApi(kit.client).create_lease(kit.namespace, old_lease)
    await KubeApi(kit.client).create_lease(kit.namespace, forged)
    try:
        await replica.start()
        kit.connect_agent(agents, plane, ca, agent_id="agent-1")
        await _connected_says(kit, "mixed", "3 agents connected")
        # Counted, but no peer: its HELLO names no replica, agents could never find it.
        assert peers.live_ids() == ("replica-new",)
        assert peers.holdings(plane) == {"agent-1": ["replica-new"]}
    finally:
        await replica.stop()


def _left_out(reconciler: Reconciler, what: str) -> float | None:
    for metric in reconciler.metrics.lease_left_out.collect():
        for sample in metric.samples:
            if sample.labels.get("what") == what:
                return sample.value
    return None


async def test_a_lease_holds_at_most_the_cap_of_agent_ids_per_plane_and_says_so(kit: Kit) -> None:
    ca, plane = await _agent_plane(kit, "crowded")
    replica, agents, _ = _peered(kit, "replica-capped", 7004, max_agent_ids_per_plane=2)
    try:
        await replica.start()
        for agent_id in ("agent-c", "agent-a", "agent-b"):
            kit.connect_agent(agents, plane, ca, agent_id=agent_id)

        async def capped() -> bool:
            lease = await KubeApi(kit.client).get_lease(kit.namespace, "gw-replica-replica-capped")
            advertised: object = json.loads(lease["metadata"]["annotations"][AGENTS_ANNOTATION])
            return advertised == {str(plane): ["agent-a", "agent-b"]}

        await eventually(capped, within=10, interval=0.1, message="the Lease is not capped")
        assert _left_out(replica, "agent_ids") == 1
        assert _left_out(replica, "planes") == 0
    finally:
        await replica.stop()


def test_the_lease_identity_must_be_the_replica_id(kit: Kit) -> None:
    trust = TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    agents = AgentRegistry(trust, GatewayMetrics())
    other = PeerDirectory("replica-x", local_planes=agents.local_planes)
    with pytest.raises(ValueError, match="not the replica id"):
        _replica(kit, "replica-y", peers=other, registries=(trust, agents))


async def test_a_peer_that_stops_renewing_is_dropped_after_its_duration(kit: Kit) -> None:
    replica, _, peers = _peered(kit, "replica-watching", 7005)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # A peer that renewed once, just now, for a few seconds (long enough to be seen live by a
    # replica starting on a loaded machine), and died.
    duration = math.ceil(scaled(3))
    await KubeApi(kit.client).create_lease(
        kit.namespace,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": "gw-replica-replica-dying",
                "namespace": kit.namespace,
                "labels": {GROUP_LABEL: "gw"},
                "annotations": {AGENTS_ANNOTATION: "{}", HOST_ANNOTATION: "h"},
            },
            "spec": {
                "holderIdentity": "replica-dying",
                "leaseDurationSeconds": duration,
                "renewTime": now,
            },
        },
    )
    seen: list[tuple[str, ...]] = []
    peers.subscribe(lambda: seen.append(peers.live_ids()))
    try:
        await replica.start()
        await eventually(
            lambda: peers.live_ids() == ("replica-watching",),
            within=10,
            message="the dead peer is still live",
        )
        # It was live first (renewed a moment ago), then dropped: its renewal was judged.
        assert seen[0] == ("replica-dying", "replica-watching")
    finally:
        await replica.stop()
