"""Fixtures for the reconciler: a real TrustRegistry and AgentRegistry, fake agent sessions,
helpers that create DataPlanes and Secrets and await what the API server reports."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi
from prometheus_client import CollectorRegistry

import certs
import crd
from gateway.agents import AgentConnection, AgentRegistry
from gateway.direct import DirectPlanes
from gateway.metrics import GatewayMetrics
from gateway.reconciler import Reconciler, ReconcilerSettings
from gateway.reconciler.kube import KubeApi
from gateway.trust import TrustRegistry
from kubeobject import KubeObject
from protocol import ErrorCode
from protocol.backoff import BackoffPolicy
from tests.kit.waits import scaled

TIMEOUT = scaled(20.0)


def fast_settings(namespace: str, **overrides: Any) -> ReconcilerSettings:
    values: dict[str, Any] = {
        "namespaces": (namespace,),
        "status_min_interval": 0.1,
        "probe_interval": 30.0,
        "probe_timeout": 3.0,
        "backoff": BackoffPolicy(base=0.05, cap=0.5),
    }
    values.update(overrides)
    return ReconcilerSettings(**values)


class FakeSession:
    """The parts of a TunnelSession that AgentRegistry and /planes read; close() ends the
    'connection'."""

    def __init__(self) -> None:
        self.closed = False
        self.draining = False
        self.rtt: float | None = None
        self.open_streams = 0
        self.streams_opened = 0
        self.bytes_in = self.bytes_out = 0
        self.available_streams = 100
        self.last_received = time.monotonic()
        self.close_reason = ""
        self.dropped_for: str | None = None
        self.on_close: Callable[[str], None] = lambda reason: None

    def close(self, reason: str, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.on_close(reason)


def connect_agent(
    agents: AgentRegistry, plane: certs.PlaneRef, ca: certs.CertificateBundle, agent_id: str = "a1"
) -> AgentConnection:
    """Register a fake agent with a real certificate issued by `ca`, as the listener would."""
    bundle = certs.issue_agent(ca, plane=plane)
    session = FakeSession()
    agent = AgentConnection(
        plane=plane,
        agent_id=agent_id,
        session=session,  # type: ignore[arg-type]  # a stand-in: sessions have no interface type
        certificate=certs.describe(bundle.certificate),
        certificate_der=bundle.certificate.public_bytes(serialization.Encoding.DER),
        remote_address="127.0.0.1:1",
    )
    session.on_close = lambda reason: agents.remove(agent, reason)
    agents.add(agent)
    return agent


@pytest.fixture
def trust() -> TrustRegistry:
    return TrustRegistry(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


@pytest.fixture
def agents(trust: TrustRegistry) -> AgentRegistry:
    return AgentRegistry(trust, GatewayMetrics())


@pytest.fixture
async def reconciler(
    control_plane_client: ApiClient, trust: TrustRegistry, agents: AgentRegistry, namespace: str
) -> AsyncIterator[Reconciler]:
    direct = DirectPlanes()
    instance = Reconciler(
        client=control_plane_client,
        trust=trust,
        agents=agents,
        direct=direct,
        settings=fast_settings(namespace),
        registry=CollectorRegistry(),
    )
    async with asyncio.timeout(TIMEOUT):
        await instance.start()
    yield instance
    await instance.stop()
    await direct.stop()


# -- manifests -------------------------------------------------------------------------------


def agent_dataplane(name: str, namespace: str, client_ca: KubeObject | None) -> KubeObject:
    agent: KubeObject = {"enabled": True}
    if client_ca is not None:
        agent["clientCA"] = client_ca
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "agent": agent,
            "gateway": {
                "publicVirtualHost": "api.example.com",
                "organizationVirtualHost": "internal.example.com",
            },
        },
    }


def direct_dataplane(
    name: str, namespace: str, *, server: str, ca: KubeObject, auth: KubeObject
) -> KubeObject:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "kubernetesCluster": {"server": server, "tls": {"ca": ca}, "auth": auth},
            "gateway": {
                "publicVirtualHost": "api.example.com",
                "organizationVirtualHost": "internal.example.com",
            },
        },
    }


def secret(name: str, namespace: str, data: dict[str, bytes]) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


async def create(client: ApiClient, obj: KubeObject) -> KubeObject:
    namespace = obj["metadata"]["namespace"]
    if obj["kind"] == "Secret":
        # The stubs ask for a V1Secret; the generated client sends a dict body as it is.
        await CoreV1Api(client).create_namespaced_secret(namespace, obj)  # type: ignore[arg-type]
        return obj
    created: KubeObject = await CustomObjectsApi(client).create_namespaced_custom_object(
        crd.GROUP, crd.VERSION, namespace, crd.PLURAL, obj
    )
    return created


async def replace_secret(client: ApiClient, obj: KubeObject) -> None:
    meta = obj["metadata"]
    # The stubs ask for a V1Secret; the generated client sends a dict body as it is.
    await CoreV1Api(client).replace_namespaced_secret(
        meta["name"],
        meta["namespace"],
        obj,  # type: ignore[arg-type]
    )


async def patch_dataplane(
    client: ApiClient, namespace: str, name: str, patch: KubeObject
) -> KubeObject:
    patched: KubeObject = await CustomObjectsApi(client).patch_namespaced_custom_object(
        crd.GROUP,
        crd.VERSION,
        namespace,
        crd.PLURAL,
        name,
        patch,
        # The stubs omit `_content_type`, which the generated client takes (in **kwargs).
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )
    return patched


async def delete_dataplane(client: ApiClient, namespace: str, name: str) -> None:
    await CustomObjectsApi(client).delete_namespaced_custom_object(
        crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name
    )


# -- waiting on what the API server says ------------------------------------------------------


def condition(obj: KubeObject, kind: str) -> KubeObject | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            found: KubeObject = item
            return found
    return None


def required_condition(obj: KubeObject, kind: str) -> KubeObject:
    """The condition of type `kind`, which `obj` must have."""
    found = condition(obj, kind)
    assert found is not None, f"no {kind} condition in {obj.get('status')}"
    return found


def has_condition(
    kind: str, status: str, reason: str | None = None
) -> Callable[[KubeObject], bool]:
    def check(obj: KubeObject) -> bool:
        found = condition(obj, kind)
        return (
            found is not None
            and found["status"] == status
            and (reason is None or found["reason"] == reason)
        )

    return check


async def await_dataplane(
    client: ApiClient, namespace: str, name: str, predicate: Callable[[KubeObject], bool]
) -> KubeObject:
    """The DataPlane once `predicate` holds for it: listed, then watched (no polling)."""
    collection = KubeApi(client).dataplanes(namespace)
    last: KubeObject | None = None
    async with asyncio.timeout(TIMEOUT):
        while True:
            items, version = await collection.list()
            for item in items:
                if item["metadata"]["name"] == name:
                    last = item
                    if predicate(item):
                        return item
            async for event in collection.watch(version):
                if event.object.get("metadata", {}).get("name") != name:
                    continue
                last = event.object
                if event.type != "DELETED" and predicate(event.object):
                    return event.object
    raise AssertionError(f"never: {last}")


class TrustWatcher:
    """Awaits a state of the TrustRegistry: woken by its change notifications."""

    def __init__(self, trust: TrustRegistry) -> None:
        self.trust = trust
        self._changed = asyncio.Event()
        trust.subscribe(lambda plane, value: self._changed.set())

    async def until(self, predicate: Callable[[TrustRegistry], bool]) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate(self.trust):
                self._changed.clear()
                await self._changed.wait()


async def until_agents_change(agents: AgentRegistry, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await agents.wait_for_change()


# -- a kit of helpers, handed to tests as the `kit` fixture ---------------------------------


class Kit:
    """Helpers bound to one test's API client, namespace and registries."""

    timeout = TIMEOUT

    def __init__(
        self,
        client: ApiClient,
        namespace: str,
        trust: TrustRegistry,
        agents: AgentRegistry,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.trust = trust
        self.agents = agents
        self.trust_watcher = TrustWatcher(trust)

    settings = staticmethod(fast_settings)
    connect_agent = staticmethod(connect_agent)
    agent_dataplane = staticmethod(agent_dataplane)
    direct_dataplane = staticmethod(direct_dataplane)
    secret = staticmethod(secret)
    create = staticmethod(create)
    replace_secret = staticmethod(replace_secret)
    patch_dataplane = staticmethod(patch_dataplane)
    delete_dataplane = staticmethod(delete_dataplane)
    condition = staticmethod(condition)
    required_condition = staticmethod(required_condition)
    has_condition = staticmethod(has_condition)
    await_dataplane = staticmethod(await_dataplane)
    until_agents_change = staticmethod(until_agents_change)

    async def until_trust(self, predicate: Callable[[TrustRegistry], bool]) -> None:
        await self.trust_watcher.until(predicate)


@pytest.fixture
def kit(
    control_plane_client: ApiClient, namespace: str, trust: TrustRegistry, agents: AgentRegistry
) -> Kit:
    return Kit(control_plane_client, namespace, trust, agents)
