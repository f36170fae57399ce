"""The gateway holds only the Secrets DataPlanes reference, on the real control plane.

Unrelated Secrets - here 100 of 400 KB in the very namespace the gateway follows - are never
listed, watched or cached: the reconciler's memory does not grow with them (measured with
tracemalloc, which sees every Python allocation of this process), while the referenced Secret's
rotation still reaches the trust within seconds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry, Gauge

import certs
from envtest import KubeAPIServer
from gateway.agents import AgentRegistry
from gateway.direct import DirectPlanes
from gateway.metrics import GatewayMetrics
from gateway.reconciler import Reconciler
from gateway.trust import TrustRegistry
from kubeobject import ObjectRef
from tests.kit.waits import scaled
from tests.reconciler.conftest import TIMEOUT, Kit

UNRELATED = 100
UNRELATED_SIZE = 400 * 1024
BOUND = 16 * 1024 * 1024


def _unrelated_secrets(namespace: str) -> str:
    """100 Secrets of 400 KB each, as one JSON List for `kubectl create` (made in kubectl's
    process, not this one, so that only the reconciler's own memory is measured here)."""
    items = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"unrelated-{index}", "namespace": namespace},
            "data": {"blob": base64.b64encode(os.urandom(UNRELATED_SIZE)).decode()},
        }
        for index in range(UNRELATED)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


@pytest.fixture
def trust() -> TrustRegistry:
    return TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


@pytest.fixture
def kit(control_plane_client: ApiClient, namespace: str, trust: TrustRegistry) -> Kit:
    """The reconciler tests' kit (DataPlanes, Secrets, awaiting trust) in a fresh namespace."""
    return Kit(control_plane_client, namespace, trust, AgentRegistry(trust, GatewayMetrics()))


@pytest.fixture
async def reconciler(control_plane_client: ApiClient, kit: Kit) -> AsyncIterator[Reconciler]:
    instance = Reconciler(
        client=control_plane_client,
        trust=kit.trust,
        agents=kit.agents,
        direct=DirectPlanes(),
        settings=kit.settings(kit.namespace),
        registry=CollectorRegistry(),
    )
    async with asyncio.timeout(TIMEOUT):
        await instance.start()
    yield instance
    await instance.stop()


def _value(gauge: Gauge) -> float:
    [metric] = gauge.collect()
    return metric.samples[0].value


def _client_cas(kit: Kit, plane: certs.PlaneRef) -> tuple[Any, ...]:
    trust = kit.trust.get(plane)
    return () if trust is None else trust.client_cas


async def test_unrelated_secrets_never_grow_the_gateway(
    reconciler: Reconciler, kit: Kit, control_plane: KubeAPIServer
) -> None:
    old_ca, new_ca = certs.create_ca("agents"), certs.create_ca("rotated agents")
    plane = certs.plane_ref(kit.namespace, "plane-m")
    secret = kit.secret("agent-ca", kit.namespace, {"ca.crt": old_ca.certificate_pem()})
    await kit.create(kit.client, secret)
    ref = {"secretRef": {"name": "agent-ca", "key": "ca.crt"}}
    await kit.create(kit.client, kit.agent_dataplane("plane-m", kit.namespace, ref))
    await kit.until_trust(lambda _: _client_cas(kit, plane) == (old_ca.certificate,))
    unrelated = _unrelated_secrets(kit.namespace)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await control_plane.akubectl("create", "-f", "-", input=unrelated)
        # Rotation after the unrelated Secrets: when it is seen, any watch of the namespace
        # would have delivered them all first.
        secret["data"]["ca.crt"] = base64.b64encode(new_ca.certificate_pem()).decode()
        started = asyncio.get_running_loop().time()
        await kit.replace_secret(kit.client, secret)
        await kit.until_trust(lambda _: _client_cas(kit, plane) == (new_ca.certificate,))
        rotated_in = asyncio.get_running_loop().time() - started
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    print(f"memory growth {grown / 2**20:.2f} MiB, rotation seen in {rotated_in:.2f} s")
    assert grown <= BOUND, f"the reconciler grew {grown / 2**20:.1f} MiB"
    assert rotated_in < scaled(5)
    assert reconciler.secrets.cached() == 1
    assert len(reconciler.secrets) == 1
    assert _value(reconciler.metrics.secret_watches) == 1


async def test_watches_follow_references(reconciler: Reconciler, kit: Kit) -> None:
    """A Secret is watched while some DataPlane names it, and not a moment longer."""
    ca = certs.create_ca("agents")
    for name in ("ca-1", "ca-2"):
        await kit.create(
            kit.client, kit.secret(name, kit.namespace, {"ca.crt": ca.certificate_pem()})
        )
    ref = {"secretRef": {"name": "ca-1", "key": "ca.crt"}}
    await kit.create(kit.client, kit.agent_dataplane("plane-w", kit.namespace, ref))
    await kit.await_dataplane(
        kit.client, kit.namespace, "plane-w", kit.has_condition("GatewayProvisioned", "True")
    )
    assert reconciler.secrets.watched() == {ObjectRef(kit.namespace, "ca-1")}
    moved = {"spec": {"agent": {"clientCA": {"secretRef": {"name": "ca-2", "key": "ca.crt"}}}}}
    await kit.patch_dataplane(kit.client, kit.namespace, "plane-w", moved)
    await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "plane-w",
        lambda obj: obj["status"].get("observedGeneration") == obj["metadata"]["generation"],
    )
    await reconciler.settle()
    assert reconciler.secrets.watched() == {ObjectRef(kit.namespace, "ca-2")}
    await kit.delete_dataplane(kit.client, kit.namespace, "plane-w")
    await kit.until_trust(
        lambda trust: trust.get(certs.plane_ref(kit.namespace, "plane-w")) is None
    )
    assert reconciler.secrets.watched() == set()


async def test_beyond_the_limit_a_secret_is_read_not_watched(
    control_plane_client: ApiClient, kit: Kit
) -> None:
    ca = certs.create_ca("agents")
    names = ["lim-a", "lim-b"]
    for name in names:
        await kit.create(
            kit.client, kit.secret(f"{name}-ca", kit.namespace, {"ca.crt": ca.certificate_pem()})
        )
        ref = {"secretRef": {"name": f"{name}-ca", "key": "ca.crt"}}
        await kit.create(kit.client, kit.agent_dataplane(name, kit.namespace, ref))
    async with Reconciler(
        client=control_plane_client,
        trust=kit.trust,
        agents=kit.agents,
        direct=DirectPlanes(),
        settings=kit.settings(kit.namespace, secret_watches=1),
        registry=CollectorRegistry(),
    ) as limited:
        for name in names:
            plane = certs.plane_ref(kit.namespace, name)
            await kit.until_trust(
                lambda _: _client_cas(kit, plane) == (ca.certificate,)  # noqa: B023 - awaited here
            )
        assert len(limited.secrets) == 1
        assert _value(limited.metrics.secrets_unwatched) == 1
        assert _value(limited.metrics.secret_watches) == 1
