"""A real gateway's and a real agent's /metrics: build info, certificate expiry of what they
serve and were presented, heartbeat age; and every metric the alert rules and the dashboard
read is one of them."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

import certs
from gateway.app import Gateway
from tests.agent.conftest import AgentTls, StartAgent
from tests.kit.gateway_lab import PLANE_A, PLANE_B, AgentFactory, Pki
from tests.kit.waits import scaled, wait_for
from tests.metrics.exposition import exposed_names, names_read
from tests.metrics.test_role_metrics import series

FILES = Path(__file__).resolve().parents[2] / "deploy" / "charts" / "planelink-gateway" / "files"
GATEWAY_EXPIRY = "planelink_gateway_certificate_expiration_timestamp_seconds"
AGENT_EXPIRY = "planelink_agent_certificate_expiration_timestamp_seconds"


async def fetch(url: str) -> str:
    async with aiohttp.ClientSession() as client, client.get(url) as answer:
        assert answer.status == 200
        return await answer.text()


def value(page: str, name: str, **labels: str) -> float:
    found = [
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return float(found[0])


def not_after(bundle: certs.CertificateBundle) -> float:
    return bundle.certificate.not_valid_after_utc.timestamp()


async def gateway_page(gateway: Gateway) -> str:
    return await fetch(f"http://127.0.0.1:{gateway.operator_port}/metrics")


async def test_the_gateway_shows_its_certificates_its_agents_and_their_heartbeats(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory
) -> None:
    bundle = pki.agent_cert(PLANE_A)
    async with connect_agent(PLANE_A, bundle=bundle):
        page = await gateway_page(gateway)
    assert "_created" not in page
    assert value(page, "planelink_gateway_agents_connected", plane=str(PLANE_A)) == 1
    assert value(page, "planelink_gateway_agents_connected", plane=str(PLANE_B)) == 0
    (heartbeat,) = series(page, "planelink_gateway_agent_heartbeat_age_seconds")
    assert heartbeat["plane"] == str(PLANE_A)
    age = value(page, "planelink_gateway_agent_heartbeat_age_seconds", **heartbeat)
    assert 0 <= age < scaled(5), "the lab's heartbeat timeout is 5 s: the agent would be gone"
    server = certs.load_pem_certificates((pki.directory / "server.crt").read_bytes())
    expected = {
        ("serving", ""): min(c.not_valid_after_utc.timestamp() for c in server),
        ("caller_ca", ""): not_after(pki.caller_ca),
        ("agent_ca", str(PLANE_A)): not_after(pki.agent_cas[PLANE_A]),
        ("agent_ca", str(PLANE_B)): not_after(pki.agent_cas[PLANE_B]),
        ("agent", str(PLANE_A)): not_after(bundle),
    }
    shown = {
        (labels["kind"], labels["plane"]): value(page, GATEWAY_EXPIRY, **labels)
        for labels in series(page, GATEWAY_EXPIRY)
    }
    assert shown == expected
    roles = [labels["role"] for labels in series(page, "planelink_build_info")]
    assert roles == ["gateway"]
    assert value(page, "process_open_fds") > 0

    after = await gateway_page(gateway)  # the agent is gone: its certificate and heartbeat too
    assert ("agent", str(PLANE_A)) not in {
        (labels["kind"], labels["plane"]) for labels in series(after, GATEWAY_EXPIRY)
    }
    assert series(after, "planelink_gateway_agent_heartbeat_age_seconds") == []
    assert value(after, "planelink_gateway_agents_connected", plane=str(PLANE_A)) == 0


async def test_the_agent_shows_when_its_certificate_and_gateway_ca_expire(
    start_agent: StartAgent, agent_tls: AgentTls, unused_kubeconfig: Path
) -> None:
    running = await start_agent(kubeconfig=unused_kubeconfig)
    await wait_for(running.agent.state.wait(up=True))
    page = await fetch(f"{running.health_url}/metrics")
    plane = str(running.agent.settings.plane)
    assert value(page, AGENT_EXPIRY, kind="client", plane=plane) == not_after(agent_tls.bundle)
    assert value(page, AGENT_EXPIRY, kind="gateway_ca", plane=plane) == not_after(
        agent_tls.pki.gateway_ca
    )
    assert [labels["role"] for labels in series(page, "planelink_build_info")] == ["agent"]
    assert value(page, "planelink_agent_streams_active") == 0
    assert "_created" not in page


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((FILES / "prometheus-rules.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((FILES / "grafana-dashboard.json").read_text())
    targets = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return targets + variables


async def test_the_rules_and_the_dashboard_read_only_metrics_the_roles_export(
    gateway: Gateway,
    connect_agent: AgentFactory,
    start_agent: StartAgent,
    unused_kubeconfig: Path,
) -> None:
    async with connect_agent(PLANE_A):
        gateway_names = exposed_names(await gateway_page(gateway))
    running = await start_agent(kubeconfig=unused_kubeconfig)
    await wait_for(running.agent.state.wait(up=True))
    agent_names = exposed_names(await fetch(f"{running.health_url}/metrics"))
    exported = gateway_names | agent_names | {"planelink_gateway_worker_up"}  # merged pages'
    for source, expressions in (
        ("prometheus-rules.yaml", rule_expressions()),
        ("grafana-dashboard.json", dashboard_expressions()),
    ):
        read = {name for expression in expressions for name in names_read(expression)}
        assert read, f"{source} reads no metric: the name pattern is broken"
        assert read - exported == set(), f"{source} reads metrics no role exports"
    rules_read = {name for expression in rule_expressions() for name in names_read(expression)}
    assert "planelink_agent_tunnel_up" in rules_read
    assert "planelink_agent_tunnel_up" in agent_names
