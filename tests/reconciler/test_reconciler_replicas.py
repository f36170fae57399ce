"""Two gateway replicas against one API server: one writes status, from everyone's agents."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from prometheus_client import CollectorRegistry

import certs
from gateway.agents import AgentRegistry
from gateway.direct import DirectPlanes
from gateway.metrics import GatewayMetrics
from gateway.reconciler import CoordinationSettings, Reconciler
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.replicas import GROUP_LABEL, LEADER_LABEL
from gateway.trust import TrustRegistry
from kubeobject import KubeObject
from tests.kit.waits import wait_for
from tests.reconciler.conftest import Kit


def _replica(kit: Kit, identity: str) -> tuple[Reconciler, AgentRegistry]:
    trust = TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    agents = AgentRegistry(trust, GatewayMetrics())
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
    )
    reconciler = Reconciler(
        client=kit.client,
        trust=trust,
        agents=agents,
        direct=DirectPlanes(),
        settings=kit.settings(kit.namespace, coordination=coordination),
        registry=CollectorRegistry(),
    )
    return reconciler, agents


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
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        await replica_a.stop()
        await replica_b.stop()
    assert statuses == ["False", "True", "False"]
