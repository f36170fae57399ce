"""Agents the gateway turns away become Warning Events on their DataPlane: the rate limit (pure,
with a fake clock) and the whole path with the real gateway, agent and API servers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import watch
from kubernetes_asyncio.client import ApiClient, CoreV1Api

import certs
from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer
from envtest.pytest_plugin import ServerFactory
from gateway.reconciler import ReconcilerSettings
from gateway.reconciler.events import EventSpec
from gateway.reconciler.rejections import REASON, RejectionEvents
from planelink.local import LocalPlanelink
from tests.kit.waits import wait_for, within

PLANE = plane_ref("ns", "edge")
Written = tuple[PlaneRef, EventSpec, int]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _writes(
    interval: float, limit: int = 1024
) -> tuple[RejectionEvents, asyncio.Queue[Written], Clock]:
    written: asyncio.Queue[Written] = asyncio.Queue()

    async def write(plane: PlaneRef, event: EventSpec, times: int) -> None:
        await written.put((plane, event, times))

    clock = Clock()
    return RejectionEvents(write, interval=interval, limit=limit, clock=clock), written, clock


def _warning(message: str) -> EventSpec:
    return EventSpec("Warning", REASON, message)


async def test_refusals_within_the_interval_are_folded_into_the_next_write() -> None:
    refusals, written, clock = await _writes(interval=30)
    running = asyncio.create_task(refusals.run())
    try:
        refusals.note(PLANE, "Untrusted", "first")
        assert await wait_for(written.get(), 5) == (PLANE, _warning("Untrusted: first"), 1)
        refusals.note(PLANE, "Untrusted", "second")
        refusals.note(PLANE, "Untrusted", "third")
        # Another reason has its own budget: written at once, while Untrusted waits.
        refusals.note(PLANE, "PlaneMismatch", "claims ns/other")
        assert await wait_for(written.get(), 5) == (
            PLANE,
            _warning("PlaneMismatch: claims ns/other"),
            1,
        )
        assert written.empty()
        clock.now = 30.0
        refusals.note(PLANE, "Untrusted", "fourth")  # wakes the writer; the interval is over
        assert await wait_for(written.get(), 5) == (PLANE, _warning("Untrusted: fourth"), 3)
        assert written.empty()
    finally:
        running.cancel()


async def test_a_failing_write_does_not_stop_the_writer() -> None:
    written: asyncio.Queue[Written] = asyncio.Queue()

    async def write(plane: PlaneRef, event: EventSpec, times: int) -> None:
        if plane.name == "broken":
            raise RuntimeError("a bug while writing")
        await written.put((plane, event, times))

    refusals = RejectionEvents(write, interval=30, clock=Clock())
    running = asyncio.create_task(refusals.run())
    try:
        refusals.note(plane_ref("ns", "broken"), "Untrusted", "x")
        refusals.note(PLANE, "Untrusted", "y")
        assert await wait_for(written.get(), 5) == (PLANE, _warning("Untrusted: y"), 1)
        assert not running.done()
    finally:
        running.cancel()


async def test_distinct_refusals_waiting_are_bounded() -> None:
    refusals, _, _ = await _writes(interval=30, limit=2)  # not running: nothing is written
    for name in ("a", "b", "c", "d"):
        refusals.note(plane_ref("ns", name), "Untrusted", "x")
    refusals.note(plane_ref("ns", "a"), "Untrusted", "again")  # a known pair still counts
    assert refusals.dropped == 2


async def _await_event(client: ApiClient, namespace: str, wanted: Callable[[Any], bool]) -> Any:
    """The first Event of `namespace` for which `wanted` holds: listed, then watched."""
    core = CoreV1Api(client)
    async with within(60):
        while True:
            listed = await core.list_namespaced_event(namespace)
            for event in listed.items:
                if wanted(event):
                    return event
            async with watch.Watch().stream(
                core.list_namespaced_event,
                namespace,
                resource_version=listed.metadata.resource_version,
                timeout_seconds=30,
            ) as stream:
                async for change in stream:
                    if wanted(change["object"]):
                        return change["object"]


async def test_an_agent_refused_after_a_ca_rotation_is_told_on_its_dataplane(
    control_plane: KubeAPIServer, kube_servers: ServerFactory, tmp_path: Path, kit: Any
) -> None:
    namespace, client = kit.namespace, kit.client
    plane = plane_ref(namespace, "rotated")
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={plane: kube_servers("lifecycle-plane").kubeconfig_path},
        reconcile_with=control_plane.kubeconfig_path,
        reconciler_settings=ReconcilerSettings(namespaces=(namespace,), rejection_event_interval=1),
    )
    await local.start_pki_and_gateway()

    async def apply(client_ca: str) -> None:
        manifest = kit.agent_dataplane(plane.name, plane.namespace, {"value": client_ca})
        await control_plane.akubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def rejected(kind: str, count: int) -> Callable[[Any], bool]:
        return lambda e: (
            e.reason == REASON
            and e.type == "Warning"
            and e.involved_object.name == plane.name
            and e.message.startswith(f"{kind}: ")
            and (e.count or 0) >= count
        )

    try:
        await apply(local.agent_ca_pem(plane))
        await local.start_agent(plane)
        await wait_for(local.wait_connected(plane), 30)

        # The CA is rotated; the agent still holds a certificate of the old one.
        await apply(certs.create_ca("rotated agent CA").certificate_pem().decode())
        revoked = await _await_event(client, namespace, rejected("TrustRevoked", 1))
        assert "no longer verifies" in revoked.message
        # Its retries are refused with the plane named: one Event whose count grows, not one
        # Event (or one API write) per attempt.
        refused = await _await_event(client, namespace, rejected("Untrusted", 3))
        assert "not a trusted CA" in refused.message
        assert refused.source.component == "planelink-gateway"
        listed = await CoreV1Api(client).list_namespaced_event(namespace)
        untrusted = [e for e in listed.items if rejected("Untrusted", 1)(e)]
        assert len(untrusted) == 1
    finally:
        await local.stop()
