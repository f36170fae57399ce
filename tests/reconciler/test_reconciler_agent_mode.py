"""Agent-mode DataPlanes on a real API server: trust fed live, status and events written."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio.client import CoreV1Api

import certs
from envtest import KubeAPIServer
from gateway.reconciler import Reconciler
from gateway.trust import PlaneTrust, TrustRegistry
from tests.reconciler.conftest import Kit


async def test_inline_ca_agent_connects_and_disconnects(reconciler: Reconciler, kit: Kit) -> None:
    ca = certs.create_ca("agents of plane-a")
    plane = certs.plane_ref(kit.namespace, "plane-a")
    await kit.create(
        kit.client,
        kit.agent_dataplane("plane-a", kit.namespace, {"value": ca.certificate_pem().decode()}),
    )

    await kit.until_trust(lambda t: t.get(plane) is not None)
    trust = _trust_of(kit.trust, plane)
    assert trust.accepts_agents
    assert trust.client_cas == (ca.certificate,)
    obj = await kit.await_dataplane(
        kit.client, kit.namespace, "plane-a", kit.has_condition("GatewayProvisioned", "True")
    )
    assert kit.has_condition("Connected", "False", "NoAgentConnected")(obj)
    assert kit.has_condition("Ready", "False", "NoAgentConnected")(obj)
    assert obj["status"]["observedGeneration"] == 1

    agent = kit.connect_agent(kit.agents, plane, ca)
    obj = await kit.await_dataplane(
        kit.client, kit.namespace, "plane-a", kit.has_condition("Ready", "True")
    )
    connected = kit.required_condition(obj, "Connected")
    assert connected["status"] == "True"
    assert connected["message"] == "1 agent connected"
    second = kit.connect_agent(kit.agents, plane, ca, agent_id="a2")
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "plane-a",
        lambda o: (kit.condition(o, "Connected") or {}).get("message") == "2 agents connected",
    )
    # The count changed, the status did not: the transition time stays.
    assert (
        kit.required_condition(obj, "Connected")["lastTransitionTime"]
        == connected["lastTransitionTime"]
    )

    kit.agents.remove(agent, "test")
    kit.agents.remove(second, "test")
    await kit.await_dataplane(
        kit.client, kit.namespace, "plane-a", kit.has_condition("Connected", "False")
    )
    await _events_include(
        kit,
        {
            ("Normal", "Connected", "1 agent connected"),
            ("Warning", "Disconnected", "no agent is connected"),
        },
    )


async def test_secret_ca_rotation_and_every_failure_reason(
    reconciler: Reconciler, kit: Kit
) -> None:
    old_ca, new_ca = certs.create_ca("old agents"), certs.create_ca("new agents")
    plane = certs.plane_ref(kit.namespace, "plane-s")
    ref = {"secretRef": {"name": "agent-ca", "key": "ca.crt"}}
    await kit.create(kit.client, kit.agent_dataplane("plane-s", kit.namespace, ref))

    # The Secret does not exist yet: registered (callers get 503, not 404), with the reason.
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "plane-s",
        kit.has_condition("GatewayProvisioned", "False", "SecretNotFound"),
    )
    message = kit.required_condition(obj, "GatewayProvisioned")["message"]
    assert f"Secret {kit.namespace}/agent-ca not found" in message
    assert kit.has_condition("Ready", "False", "SecretNotFound")(obj)
    trust = kit.trust.get(plane)
    assert trust is not None
    assert not trust.accepts_agents
    assert "SecretNotFound" in trust.issues[0]

    # Created afterwards with the wrong key, then right: followed through the Secret watch.
    secret = kit.secret("agent-ca", kit.namespace, {"tls.crt": old_ca.certificate_pem()})
    await kit.create(kit.client, secret)
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "plane-s",
        kit.has_condition("GatewayProvisioned", "False", "KeyNotFound"),
    )
    assert (
        "has no key 'ca.crt' (keys: tls.crt)"
        in kit.required_condition(obj, "GatewayProvisioned")["message"]
    )

    await kit.replace_secret(
        kit.client, kit.secret("agent-ca", kit.namespace, {"ca.crt": old_ca.certificate_pem()})
    )
    await kit.until_trust(lambda t: _trust_of(t, plane).client_cas == (old_ca.certificate,))
    agent = kit.connect_agent(kit.agents, plane, old_ca)
    await kit.await_dataplane(
        kit.client, kit.namespace, "plane-s", kit.has_condition("Ready", "True")
    )

    # Rotation: the registry swaps the CA and the agent with the old certificate is cut off.
    await kit.replace_secret(
        kit.client, kit.secret("agent-ca", kit.namespace, {"ca.crt": new_ca.certificate_pem()})
    )
    await kit.until_trust(lambda t: _trust_of(t, plane).client_cas == (new_ca.certificate,))
    assert agent.session.closed
    assert "no longer verifies" in agent.session.close_reason
    assert kit.agents.agents(plane) == []
    await kit.await_dataplane(
        kit.client, kit.namespace, "plane-s", kit.has_condition("Connected", "False")
    )

    # Garbage, then an expired CA.
    await kit.replace_secret(
        kit.client, kit.secret("agent-ca", kit.namespace, {"ca.crt": b"not a certificate"})
    )
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "plane-s",
        kit.has_condition("GatewayProvisioned", "False", "InvalidCertificate"),
    )
    assert (
        f"Secret {kit.namespace}/agent-ca"
        in kit.required_condition(obj, "GatewayProvisioned")["message"]
    )
    expired = certs.create_ca(
        "expired agents",
        not_before=datetime.now(UTC) - timedelta(days=10),
        validity=timedelta(days=1),
    )
    await kit.replace_secret(
        kit.client, kit.secret("agent-ca", kit.namespace, {"ca.crt": expired.certificate_pem()})
    )
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "plane-s",
        kit.has_condition("GatewayProvisioned", "False", "CertificateExpired"),
    )
    assert "expired" in kit.required_condition(obj, "GatewayProvisioned")["message"]
    assert not _trust_of(kit.trust, plane).accepts_agents
    reasons = {"SecretNotFound", "KeyNotFound", "InvalidCertificate", "CertificateExpired"}
    found = await _events_include(kit, reasons, part=1)
    assert all(kind == "Warning" for kind, reason, _ in found if reason in reasons)


async def test_delete_disable_and_generation(
    reconciler: Reconciler, kit: Kit, control_plane: KubeAPIServer
) -> None:
    ca = certs.create_ca("agents")
    plane = certs.plane_ref(kit.namespace, "plane-d")
    await kit.create(
        kit.client,
        kit.agent_dataplane("plane-d", kit.namespace, {"value": ca.certificate_pem().decode()}),
    )
    await kit.until_trust(lambda t: t.get(plane) is not None)
    agent = kit.connect_agent(kit.agents, plane, ca)
    await kit.await_dataplane(
        kit.client, kit.namespace, "plane-d", kit.has_condition("Ready", "True")
    )

    # kubectl's wide output shows the printer columns filled in.
    wide = control_plane.kubectl("get", "dataplanes", "-n", kit.namespace, "-o", "wide").stdout
    columns = _table(wide)[0]
    assert columns["READY"] == "True"
    assert columns["CONNECTED"] == "True"
    assert columns["GATEWAYPROVISIONED"] == "True"
    assert columns["REASON"] == "Ready"
    assert columns["AGENT"] == "true"

    # A spec edit: observedGeneration follows; with the agent switched off it cannot connect.
    await kit.patch_dataplane(
        kit.client,
        kit.namespace,
        "plane-d",
        {"spec": {"observer": None, "imagePullSecretRefs": ["x"]}},
    )
    obj = await kit.await_dataplane(
        kit.client, kit.namespace, "plane-d", lambda o: o["status"]["observedGeneration"] == 2
    )
    assert all(c["observedGeneration"] == 2 for c in obj["status"]["conditions"])
    assert kit.has_condition("Ready", "True")(obj)

    direct = {
        "server": "https://127.0.0.1:1",
        "tls": {"ca": {"value": ca.certificate_pem().decode()}},
        "auth": {"bearerToken": {"value": "token"}},
    }
    await kit.patch_dataplane(
        kit.client,
        kit.namespace,
        "plane-d",
        {"spec": {"agent": {"enabled": False}, "kubernetesCluster": direct}},
    )
    await kit.until_trust(lambda t: not _trust_of(t, plane).accepts_agents)
    assert agent.session.closed
    assert "agent mode is off" in _trust_of(kit.trust, plane).issues[0]

    await kit.delete_dataplane(kit.client, kit.namespace, "plane-d")
    await kit.until_trust(lambda t: t.get(plane) is None)
    assert reconciler.direct.get(plane) is None


async def test_missing_client_ca_and_invalid_spec(reconciler: Reconciler, kit: Kit) -> None:
    await kit.create(kit.client, kit.agent_dataplane("no-ca", kit.namespace, None))
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "no-ca",
        kit.has_condition("GatewayProvisioned", "False", "MissingClientCA"),
    )
    assert (
        "spec.agent.clientCA is not set"
        in kit.required_condition(obj, "GatewayProvisioned")["message"]
    )
    assert json.dumps(obj["status"])  # serialisable, as kubectl shows it


async def _events_include(
    kit: Kit, wanted: AbstractSet[object], part: int | None = None
) -> list[tuple[str, str, str]]:
    """The namespace's Events once they include `wanted` (Events are written after status, and
    nothing announces them: bounded polling)."""
    async with asyncio.timeout(kit.timeout):
        while True:
            listed = await CoreV1Api(kit.client).list_namespaced_event(kit.namespace)
            found = [(e.type, e.reason, e.message) for e in listed.items]
            have = {item if part is None else item[part] for item in found}
            if wanted <= have:
                return found
            await asyncio.sleep(0.1)


def _trust_of(registry: TrustRegistry, plane: certs.PlaneRef) -> PlaneTrust:
    trust = registry.get(plane)
    assert trust is not None, f"{plane} is not in the trust registry"
    return trust


def _table(text: str) -> list[dict[str, str]]:
    """kubectl's table output as rows of {column: cell}, cut at the header's column starts."""
    header, *rows = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = [*starts[1:], None]
    return [
        {
            name: row[start:end].strip()
            for name, start, end in zip(names, starts, bounds, strict=True)
        }
        for row in rows
    ]
