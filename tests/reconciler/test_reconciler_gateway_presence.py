"""A whole Gateway with coordination against a real API server: its Lease is held by its replica
id (a worker's `<pod>-w<i>`, not the pod's), peer Leases reach its PeerDirectory and /planes,
and stopping deletes its Lease."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient

import certs
from envtest import KubeAPIServer
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.callers import CallerSettings
from gateway.reconciler import CoordinationSettings, ReconcilerSettings
from gateway.reconciler.errors import NotFound
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.presence import AGENTS_ANNOTATION, HOST_ANNOTATION, PEER_URL_ANNOTATION
from gateway.reconciler.replicas import GROUP_LABEL
from tests.kit.waits import eventually, within
from tunnel import Heartbeat

pytestmark = pytest.mark.kube

POD = "gw-pod"
WORKER = "gw-pod-w1"


def _gateway(tmp_path: Path, control_plane: KubeAPIServer, namespace: str) -> Gateway:
    gateway_ca = certs.create_ca("gateway-ca")
    server = certs.issue_server(gateway_ca, common_name="gateway", ip_addresses=["127.0.0.1"])
    (tmp_path / "server.crt").write_bytes(server.chain_pem())
    (tmp_path / "server.key").write_bytes(server.private_key_pem())
    (tmp_path / "caller-ca.crt").write_bytes(certs.create_ca("caller-ca").certificate_pem())
    coordination = CoordinationSettings(
        namespace=namespace, identity=POD, prefix="gw", renew_interval=0.25
    )
    settings = GatewaySettings(
        server_certificate=tmp_path / "server.crt",
        server_key=tmp_path / "server.key",
        caller_ca=tmp_path / "caller-ca.crt",
        agents=AgentListenerSettings(host="127.0.0.1", port=0, heartbeat=Heartbeat(1, 5)),
        callers=CallerSettings(host="127.0.0.1", port=0),
        operator_host="127.0.0.1",
        operator_port=0,
        drain_grace=1,
        reconciler=ReconcilerSettings(namespaces=(namespace,), coordination=coordination),
        kubeconfig=control_plane.kubeconfig_path,
        replica_id=WORKER,
    )
    return Gateway(settings)


async def test_the_lease_is_the_replicas_and_peers_reach_planes(
    tmp_path: Path, control_plane: KubeAPIServer, control_plane_client: ApiClient, namespace: str
) -> None:
    api = KubeApi(control_plane_client)
    gateway = _gateway(tmp_path, control_plane, namespace)
    await gateway.start()
    try:
        await _lease_and_peers(api, gateway, namespace)
    finally:
        await gateway.stop()
    with pytest.raises(NotFound):
        await api.get_lease(namespace, f"gw-replica-{WORKER}")


async def _lease_and_peers(api: KubeApi, gateway: Gateway, namespace: str) -> None:

    async def own_lease_held() -> bool:
        try:
            lease = await api.get_lease(namespace, f"gw-replica-{WORKER}")
        except NotFound:
            return False
        holder: object = lease["spec"]["holderIdentity"]
        return holder == WORKER

    await eventually(own_lease_held, within=20, interval=0.1, message="no Lease of the worker")

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await api.create_lease(
        namespace,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": "gw-replica-gw-other",
                "namespace": namespace,
                "labels": {GROUP_LABEL: "gw"},
                "annotations": {
                    AGENTS_ANNOTATION: json.dumps({"ns-x/plane-x": ["agent-x"]}),
                    PEER_URL_ANNOTATION: "https://10.1.2.3:8444",
                    HOST_ANNOTATION: "gw-other-pod",
                },
            },
            "spec": {"holderIdentity": "gw-other", "leaseDurationSeconds": 60, "renewTime": now},
        },
    )
    await eventually(
        lambda: gateway.peers.live_ids() == ("gw-other", WORKER),
        within=10,
        message="the peer's Lease did not reach the PeerDirectory",
    )
    (peer,) = gateway.peers.holders(certs.plane_ref("ns-x", "plane-x"))
    assert peer.peer_url == "https://10.1.2.3:8444"
    async with within(10), aiohttp.ClientSession() as http:
        answer = await http.get(f"http://127.0.0.1:{gateway.operator_port}/planes")
        document = await answer.json()
    assert document["replica"] == WORKER
    assert document["replicas"] == ["gw-other", WORKER]
