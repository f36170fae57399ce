"""A DataPlane through its life, with the real gateway, reconciler, agent and kubectl."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import yaml

import certs
import crd
from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer, run_kubectl
from envtest.pytest_plugin import ServerFactory
from planelink.local import LocalPlanelink
from tests.kit.waits import kubectl_timeout, scaled, wait_for, within


async def _wait_condition(control: KubeAPIServer, plane: PlaneRef, condition: str) -> None:
    """kubectl wait: a watch on the DataPlane until the condition holds (30 s at most)."""
    waited = await control.akubectl(
        "wait",
        f"dataplane/{plane.name}",
        "-n",
        plane.namespace,
        f"--for=condition={condition}",
        f"--timeout={kubectl_timeout(30)}",
        check=False,
        timeout=scaled(40),
    )
    assert waited.returncode == 0, waited.stderr


async def _condition(control: KubeAPIServer, plane: PlaneRef, kind: str) -> dict[str, str]:
    got = await control.akubectl(
        "get", "dataplane", plane.name, "-n", plane.namespace, "-o", "json"
    )
    obj = json.loads(got.stdout)
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def _ca_secret(plane: PlaneRef, ca: certs.CertificateBundle) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "agent-ca", "namespace": plane.namespace},
            "data": {"ca.crt": base64.b64encode(ca.certificate_pem()).decode()},
        }
    )


async def test_dataplane_life_cycle(
    control_plane: KubeAPIServer, kube_servers: ServerFactory, namespace: str, tmp_path: Path
) -> None:
    plane = plane_ref(namespace, "edge")
    data_plane = kube_servers("lifecycle-plane")
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={plane: data_plane.kubeconfig_path},
        reconcile_with=control_plane.kubeconfig_path,
    )
    await local.start_pki_and_gateway()
    gateway = local.gateway
    assert gateway is not None
    try:
        # A DataPlane whose agent CA is in a Secret, then its agent.
        await control_plane.akubectl(
            "apply", "-f", "-", input=_ca_secret(plane, local.agent_cas[plane])
        )
        manifest = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": plane.name, "namespace": plane.namespace},
            "spec": {
                "agent": {
                    "enabled": True,
                    "clientCA": {"secretRef": {"name": "agent-ca", "key": "ca.crt"}},
                },
                "gateway": {"publicVirtualHost": "a.test", "organizationVirtualHost": "b.test"},
            },
        }
        await control_plane.akubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        await local.start_agent(plane)
        await _wait_condition(control_plane, plane, "Ready")
        assert (await _condition(control_plane, plane, "Connected"))[
            "message"
        ] == "1 agent connected"
        wide = await control_plane.akubectl(
            "get", "dp", plane.name, "-n", plane.namespace, "-o", "wide"
        )
        assert wide.stdout.splitlines()[1].split()[1:5] == ["True", "True", "True", "true"]

        # The agent goes: Connected turns False; it comes back: True again.
        await local.stop_agent(plane)
        await _wait_condition(control_plane, plane, "Connected=False")
        await local.start_agent(plane)
        await _wait_condition(control_plane, plane, "Connected=True")

        # The Secret is rotated to a new CA: the agent's certificate no longer verifies and it
        # is disconnected; renewed from the new CA, the agent is accepted again, no restarts.
        new_ca = certs.create_ca("rotated agent CA")
        await control_plane.akubectl("apply", "-f", "-", input=_ca_secret(plane, new_ca))
        # (Awaited directly, not through wait_for: the change may come before a wrapping task's
        # first step, and it would then wait for the next change, which never comes.)
        async with within(30):
            while gateway.agents.agents(plane):
                await gateway.agents.wait_for_change()
        await _wait_condition(control_plane, plane, "Connected=False")
        local.renew_agent_certificate(plane, new_ca)
        await wait_for(local.wait_connected(plane), 30)
        await _wait_condition(control_plane, plane, "Ready")
        through = await run_kubectl(
            local.caller_kubeconfig(plane), "get", "namespace", "kube-system", "-o", "name"
        )
        assert through.stdout.strip() == "namespace/kube-system"

        # A Secret without the key: GatewayProvisioned says exactly why.
        await control_plane.akubectl(
            "patch",
            "secret",
            "agent-ca",
            "-n",
            plane.namespace,
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/data/ca.crt"}]',
        )
        await _wait_condition(control_plane, plane, "GatewayProvisioned=False")
        provisioned = await _condition(control_plane, plane, "GatewayProvisioned")
        assert provisioned["reason"] == "KeyNotFound"
        assert "ca.crt" in provisioned["message"]

        # Deleted: the gateway forgets the plane, its agents are disconnected, callers get 404.
        forgotten = asyncio.Event()
        gateway.trust.subscribe(
            lambda changed, trust: forgotten.set() if changed == plane and trust is None else None
        )
        await control_plane.akubectl("delete", "dataplane", plane.name, "-n", plane.namespace)
        await wait_for(forgotten.wait(), 30)
        assert gateway.agents.agents(plane) == []
        gone = await run_kubectl(local.caller_kubeconfig(plane), "get", "--raw", "/version")
        assert gone.returncode != 0
        assert "NotFound" in gone.stderr or "not found" in gone.stderr
    finally:
        await local.stop()
