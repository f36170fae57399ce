"""Direct-mode DataPlanes served by the caller endpoint: the real kubectl through the gateway
to a second real API server, with a bearer token, with mTLS, and with a wrong token."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import certs
from envtest import Credentials, KubeAPIServer, build_kubeconfig
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.callers import CallerSettings
from gateway.operator import plane_report
from gateway.reconciler import ReconcilerSettings
from kubeobject import KubeObject
from tests.kit.waits import scaled
from tunnel import Heartbeat

pytestmark = pytest.mark.kube

TIMEOUT = scaled(30.0)


@pytest.fixture
async def gateway(
    tmp_path: Path, control_plane: KubeAPIServer, namespace: str
) -> AsyncIterator[tuple[Gateway, Path]]:
    gateway_ca = certs.create_ca("gateway-ca")
    server = certs.issue_server(gateway_ca, common_name="gateway", ip_addresses=["127.0.0.1"])
    caller_ca = certs.create_ca("caller-ca")
    caller = certs.issue_client(caller_ca, common_name="jane", organizations=["ops"])
    (tmp_path / "server.crt").write_bytes(server.chain_pem())
    (tmp_path / "server.key").write_bytes(server.private_key_pem())
    (tmp_path / "caller-ca.crt").write_bytes(caller_ca.certificate_pem())
    settings = GatewaySettings(
        server_certificate=tmp_path / "server.crt",
        server_key=tmp_path / "server.key",
        caller_ca=tmp_path / "caller-ca.crt",
        agents=AgentListenerSettings(host="127.0.0.1", port=0, heartbeat=Heartbeat(1, 5)),
        callers=CallerSettings(host="127.0.0.1", port=0, request_timeout=20),
        operator_host="127.0.0.1",
        operator_port=0,
        drain_grace=1,
        reconciler=ReconcilerSettings(namespaces=(namespace,), status_min_interval=0.1),
        kubeconfig=control_plane.kubeconfig_path,
    )
    gateway = Gateway(settings)
    await gateway.start()
    kubeconfigs = tmp_path / "callers"
    kubeconfigs.mkdir()
    credentials = Credentials(
        user="jane",
        client_certificate_pem=caller.certificate_pem(),
        client_key_pem=caller.private_key_pem(),
    )
    for name in ("by-token", "by-cert", "wrong-token"):
        config = build_kubeconfig(
            name=name,
            server=f"https://127.0.0.1:{gateway.callers.port}/planes/{namespace}/{name}/k8s",
            ca_pem=gateway_ca.certificate_pem(),
            credentials=credentials,
        )
        (kubeconfigs / f"{name}.kubeconfig").write_text(yaml.safe_dump(config))
    try:
        yield gateway, kubeconfigs
    finally:
        await gateway.stop()


async def _apply(server: KubeAPIServer, *objects: KubeObject) -> None:
    manifest = yaml.safe_dump_all(objects)
    await server.akubectl("apply", "-f", "-", input=manifest)


async def _kubectl(
    kubeconfig: Path, server: KubeAPIServer, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return await server.akubectl(*args, input=input, kubeconfig=kubeconfig, check=False)


async def test_kubectl_reaches_direct_planes_through_the_gateway(
    gateway: tuple[Gateway, Path],
    control_plane: KubeAPIServer,
    kube_servers: Callable[[str], KubeAPIServer],
    namespace: str,
    kit: Any,
) -> None:
    gw, kubeconfigs = gateway
    target = kube_servers("direct-target")
    admin = target.issue_user("admin-user", ["system:masters"])
    assert admin.client_certificate_pem is not None
    assert admin.client_key_pem is not None
    ca = {"value": target.ca_file.read_text()}
    secret = {"secretRef": {"name": "direct-creds", "key": "token"}}
    mtls = {
        "clientCert": {"secretRef": {"name": "direct-creds", "key": "tls.crt"}},
        "clientKey": {"secretRef": {"name": "direct-creds", "key": "tls.key"}},
    }
    await _apply(
        control_plane,
        kit.secret(
            "direct-creds",
            namespace,
            {
                "token": target.admin_token.encode(),
                "tls.crt": admin.client_certificate_pem,
                "tls.key": admin.client_key_pem,
            },
        ),
        kit.direct_dataplane(
            "by-token", namespace, server=target.url, ca=ca, auth={"bearerToken": secret}
        ),
        kit.direct_dataplane("by-cert", namespace, server=target.url, ca=ca, auth={"mtls": mtls}),
        kit.direct_dataplane(
            "wrong-token",
            namespace,
            server=target.url,
            ca=ca,
            auth={"bearerToken": {"value": "not-the-token"}},
        ),
    )
    # Probed through the gateway's own pool: served from then on.
    for name, status in (("by-token", "True"), ("by-cert", "True"), ("wrong-token", "False")):
        await kit.await_dataplane(
            kit.client, namespace, name, kit.has_condition("Connected", status)
        )
    assert not list(gw.agents.all_agents())  # no agent, virtual or not: the gateway dials

    # Create through one plane, read through the other: both reach the same API server.
    cm_namespace = f"direct-{namespace}"
    by_token, by_cert = kubeconfigs / "by-token.kubeconfig", kubeconfigs / "by-cert.kubeconfig"
    created = await _kubectl(by_token, target, "create", "namespace", cm_namespace)
    assert created.returncode == 0, created.stderr
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "via-gateway", "namespace": cm_namespace},
        "data": {"mode": "direct"},
    }
    applied = await _kubectl(by_cert, target, "apply", "-f", "-", input=json.dumps(configmap))
    assert applied.returncode == 0, applied.stderr
    for kubeconfig in (by_token, by_cert):
        got = await _kubectl(
            kubeconfig, target, "get", "configmap", "via-gateway", "-n", cm_namespace, "-o", "json"
        )
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["data"] == {"mode": "direct"}
    # The gateway's requests went over HTTP/2 (the target offers h2); its probes, HTTP/1.1.
    for name in ("by-token", "by-cert"):
        served = gw.direct.backend(certs.plane_ref(namespace, name))
        assert served is not None
        requests = "planelink_gateway_direct_upstream_requests_total"
        assert served.metrics.sample(requests, protocol="http2") >= 2
        assert served.h2_pool is not None
        assert served.h2_pool.opened == 1
    # And it is really there, as the target's own admin sees it.
    direct = await target.akubectl(
        "get", "configmap", "via-gateway", "-n", cm_namespace, "-o", "json"
    )
    assert json.loads(direct.stdout)["data"] == {"mode": "direct"}

    # A wrong token: the API server's 401 comes back as it is.
    refused = await _kubectl(
        kubeconfigs / "wrong-token.kubeconfig",
        target,
        "get",
        "configmaps",
        "-n",
        cm_namespace,
        "-v=6",  # logs each response's status
    )
    assert refused.returncode != 0
    assert "401 Unauthorized" in refused.stderr, refused.stderr
    assert "the server has asked for the client to provide credentials" in refused.stderr
    obj = await kit.await_dataplane(
        kit.client,
        namespace,
        "wrong-token",
        kit.has_condition("Connected", "False", "Unauthorized"),
    )
    assert obj["metadata"]["name"] == "wrong-token"

    # /planes says how each plane is reached.
    trust = gw.trust.get(certs.plane_ref(namespace, "by-token"))
    assert trust is not None
    report = plane_report(trust, gw.agents, gw.direct)
    assert report["mode"] == "direct"
    assert report["connectedAgents"] == 1
    assert report["agents"][0]["remoteAddress"] == target.url

    await target.akubectl("delete", "namespace", cm_namespace, "--wait=false")
