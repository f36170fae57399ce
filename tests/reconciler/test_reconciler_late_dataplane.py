"""An agent that dials before its DataPlane exists is refused, then accepted on its next
attempt once the DataPlane is created: no gateway or agent restart (real gateway, reconciler,
agent and API servers)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from certs import plane_ref
from envtest import KubeAPIServer, run_kubectl
from envtest.pytest_plugin import ServerFactory
from planelink.local import LocalPlanelink
from tests.kit.waits import wait_for


async def test_an_agent_that_came_before_its_dataplane_is_accepted_once_it_exists(
    control_plane: KubeAPIServer,
    kube_servers: ServerFactory,
    namespace: str,
    tmp_path: Path,
    kit: Any,
) -> None:
    plane = plane_ref(namespace, "early")
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={plane: kube_servers("lifecycle-plane").kubeconfig_path},
        reconcile_with=control_plane.kubeconfig_path,
    )
    await local.start_pki_and_gateway()
    gateway = local.gateway
    assert gateway is not None
    try:
        assert gateway.reconciler is not None
        await wait_for(gateway.reconciler.ready.wait(), 30)
        registry = gateway.metrics.registry

        def untrusted() -> float:
            labels = {"reason": "Untrusted"}
            return (
                registry.get_sample_value("planelink_gateway_agent_rejections_total", labels) or 0
            )

        before = untrusted()

        # No DataPlane yet: no plane trusts the agent's CA, so the TLS handshake refuses it.
        refused = asyncio.create_task(gateway.agent_listener.wait_for_rejection())
        await local.start_agent(plane)
        await wait_for(refused, 30)
        assert untrusted() > before
        assert gateway.agents.agents(plane) == []
        assert not local.agent(plane).state.up

        # The DataPlane appears: the agent keeps retrying (backoff) and its next attempt is
        # accepted, with the same certificate and without restarting anything.
        manifest = kit.agent_dataplane(
            plane.name, plane.namespace, {"value": local.agent_ca_pem(plane)}
        )
        await control_plane.akubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
        await wait_for(local.wait_connected(plane), 30)
        await kit.await_dataplane(
            kit.client, plane.namespace, plane.name, kit.has_condition("Ready", "True")
        )

        # And the tunnel carries a caller's request to the data plane.
        through = await run_kubectl(
            local.caller_kubeconfig(plane), "get", "namespace", "kube-system", "-o", "name"
        )
        assert through.stdout.strip() == "namespace/kube-system", through.stderr
    finally:
        await local.stop()
