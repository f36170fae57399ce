"""Agent identity is checked by default: with one CA shared by two planes (one CA per
organization is common), the agent of plane A cannot register as plane B — on the real control
plane (DataPlanes, the reconciler, Events) and from the planes file; the documented opt-outs
(an annotation per DataPlane, `requireIdentity: false` per planes-file entry) accept it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient, CoreV1Api, CoreV1Event
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

import certs
import crd
from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer
from gateway.app import Gateway, GatewaySettings
from gateway.reconciler.rejections import REASON as REFUSAL_EVENT_REASON
from gateway.static_config import load_static_planes
from planelink.cli import build_parser
from planelink.gateway_cli import settings_from
from tests.kit.gateway_lab import Pki
from tests.reconciler.conftest import (
    TIMEOUT,
    agent_dataplane,
    create,
    fast_settings,
    patch_dataplane,
)
from tunnel.contract import AGENT_CONNECT_PATH, REJECTION_HEADER, SUBPROTOCOL

GatewayFactory = Callable[[Path], GatewaySettings]


async def _dial(gateway: Gateway, pki: Pki, bundle: certs.CertificateBundle, plane: str) -> None:
    """Open the agent WebSocket claiming `plane` (raises InvalidStatus if refused)."""
    url = f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={plane}"
    websocket = await connect(
        url, ssl=pki.agent_ssl(bundle), subprotocols=[Subprotocol(SUBPROTOCOL)]
    )
    await websocket.close()


async def _refusal(
    gateway: Gateway, pki: Pki, bundle: certs.CertificateBundle, plane: str
) -> tuple[int, str, str]:
    with pytest.raises(InvalidStatus) as refused:
        await _dial(gateway, pki, bundle, plane)
    response = refused.value.response
    return response.status_code, response.headers[REJECTION_HEADER], response.body.decode()


def _mismatches(gateway: Gateway) -> float:
    registry = gateway.metrics.registry
    labels = {"reason": "IdentityMismatch"}
    return registry.get_sample_value("planelink_gateway_agent_rejections_total", labels) or 0


async def _await_event(
    client: ApiClient, namespace: str, wanted: Callable[[CoreV1Event], bool]
) -> CoreV1Event:
    """The first Event of `namespace` for which `wanted` holds (listed, then watched)."""
    core = CoreV1Api(client)
    async with asyncio.timeout(TIMEOUT):
        while True:
            listed = await core.list_namespaced_event(namespace)
            for event in listed.items:
                if wanted(event):
                    return event
            version = listed.metadata.resource_version
            # Unparsed (_preload_content=False), the client hands back its aiohttp response;
            # the stubs know only the parsed list.
            response = cast(
                aiohttp.ClientResponse,
                await core.list_namespaced_event(
                    namespace,
                    watch=True,
                    resource_version=version,
                    timeout_seconds=int(TIMEOUT),
                    _preload_content=False,
                ),
            )
            async with response:
                async for _ in response.content:
                    break  # something changed: list again


@pytest.fixture
async def reconciling_gateway(
    pki: Pki,
    loopback_gateway_settings: GatewayFactory,
    control_plane: KubeAPIServer,
    namespace: str,
) -> AsyncIterator[Gateway]:
    """An in-process gateway that follows the DataPlanes of `namespace` with default settings
    (only the test's speed-ups), so identity is whatever the default is."""
    settings = dataclasses.replace(
        loopback_gateway_settings(pki.directory),
        reconciler=fast_settings(namespace, rejection_event_interval=0.5),
        kubeconfig=control_plane.kubeconfig_path,
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        assert gateway.reconciler is not None
        await asyncio.wait_for(gateway.reconciler.ready.wait(), TIMEOUT)
        yield gateway
    finally:
        await gateway.stop()


async def test_a_shared_ca_does_not_let_one_dataplanes_agent_serve_another(
    reconciling_gateway: Gateway, pki: Pki, control_plane_client: ApiClient, namespace: str
) -> None:
    gateway, client = reconciling_gateway, control_plane_client
    shared = certs.create_ca("one CA for the whole organization")
    plane_a, plane_b = plane_ref(namespace, "plane-a"), plane_ref(namespace, "plane-b")
    for plane in (plane_a, plane_b):
        ca = {"value": shared.certificate_pem().decode()}
        await create(client, agent_dataplane(plane.name, namespace, ca))
    trusted = asyncio.Event()
    gateway.trust.subscribe(lambda plane, trust: trusted.set())
    async with asyncio.timeout(TIMEOUT):
        while not all(gateway.trust.get(p) for p in (plane_a, plane_b)):
            trusted.clear()
            await trusted.wait()
    agent_of_a = certs.issue_agent(shared, plane=plane_a)

    before = _mismatches(gateway)
    status, reason, body = await _refusal(gateway, pki, agent_of_a, str(plane_b))
    assert (status, reason) == (403, "IdentityMismatch")
    assert f"names plane {plane_a}, but the agent claimed plane {plane_b}" in body
    assert _mismatches(gateway) == before + 1
    event = await _await_event(
        client,
        namespace,
        lambda e: (
            e.reason == REFUSAL_EVENT_REASON
            and e.involved_object.name == plane_b.name
            and e.message.startswith("IdentityMismatch: ")
        ),
    )
    assert f"names plane {plane_a}, but the agent claimed plane {plane_b}" in event.message
    await _dial(gateway, pki, agent_of_a, str(plane_a))  # its own plane: accepted

    # The explicit opt-out of plane B: any certificate of its CA is accepted for it.
    await patch_dataplane(
        client,
        namespace,
        plane_b.name,
        {"metadata": {"annotations": {crd.REQUIRE_AGENT_IDENTITY_ANNOTATION: "false"}}},
    )
    async with asyncio.timeout(TIMEOUT):
        while (trust := gateway.trust.get(plane_b)) is None or trust.require_identity:
            trusted.clear()
            await trusted.wait()
    await _dial(gateway, pki, agent_of_a, str(plane_b))


def _share_one_ca(pki: Pki, planes: tuple[PlaneRef, PlaneRef]) -> None:
    shared = certs.create_ca("one CA for two planes")
    (pki.directory / "shared-ca.crt").write_bytes(shared.certificate_pem())
    pki.agent_cas = dict.fromkeys(planes, shared)


def _write_planes(pki: Pki, planes: tuple[PlaneRef, PlaneRef], **plane_b: object) -> Path:
    path = pki.directory / "planes.yaml"
    entries: list[dict[str, object]] = [
        {"plane": str(planes[0]), "clientCA": "shared-ca.crt"},
        {"plane": str(planes[1]), "clientCA": "shared-ca.crt", **plane_b},
    ]
    path.write_text(yaml.safe_dump({"planes": entries}))
    return path


async def test_planes_file_checks_identity_unless_an_entry_opts_out(
    pki: Pki, planes: tuple[PlaneRef, PlaneRef], loopback_gateway_settings: GatewayFactory
) -> None:
    plane_a, plane_b = planes
    _share_one_ca(pki, planes)
    _write_planes(pki, planes)
    gateway = Gateway(loopback_gateway_settings(pki.directory))
    await gateway.start()
    try:
        agent_of_a = pki.agent_cert(plane_a)
        status, reason, body = await _refusal(gateway, pki, agent_of_a, str(plane_b))
        assert (status, reason) == (403, "IdentityMismatch")
        assert body.startswith(f"plane {plane_b}: ")
        assert f"names plane {plane_a}, but the agent claimed plane {plane_b}" in body

        # A certificate that names no plane at all is refused everywhere, saying so.
        anonymous = certs.issue_client(pki.agent_cas[plane_a], common_name="agent")
        status, reason, body = await _refusal(gateway, pki, anonymous, str(plane_a))
        assert (status, reason) == (403, "IdentityMismatch")
        assert f"names no plane, but the agent claimed plane {plane_a}" in body

        # Without SANs, the CN "<namespace>/<name>" names the plane.
        by_cn = certs.issue_client(pki.agent_cas[plane_a], common_name=str(plane_a))
        await _dial(gateway, pki, by_cn, str(plane_a))

        _write_planes(pki, planes, requireIdentity=False)
        gateway.load_planes()
        await _dial(gateway, pki, agent_of_a, str(plane_b))
        assert (await _refusal(gateway, pki, anonymous, str(plane_a)))[:2] == (
            403,
            "IdentityMismatch",
        )
    finally:
        await gateway.stop()


def test_identity_defaults_and_their_one_documented_opt_out(
    pki: Pki, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    _share_one_ca(pki, planes)
    path = _write_planes(pki, planes)
    assert all(t.require_identity for t in load_static_planes(path))
    relaxed = load_static_planes(path, require_identity=False)
    assert [t.require_identity for t in relaxed] == [False, False]

    base = ["gateway", "--tls-cert", "c", "--tls-key", "k", "--caller-ca", "a", "--reconcile"]
    parser = build_parser()
    strict = settings_from(parser.parse_args(base))
    assert strict.require_agent_identity
    assert strict.reconciler is not None
    assert strict.reconciler.require_identity
    optional = settings_from(parser.parse_args([*base, "--agent-identity", "optional"]))
    assert not optional.require_agent_identity
    assert optional.reconciler is not None
    assert not optional.reconciler.require_identity
