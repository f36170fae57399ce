"""What every role's registry exports the same way (`tunnel.role_metrics`), the gateway's agent
and certificate gauges, and the agent's certificate gauges: pure, no sockets."""

from __future__ import annotations

import asyncio
import platform
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import certs
from agent.metrics import AgentMetrics
from gateway.metrics import AgentSample, GatewayMetrics
from gateway.peers.merge import merge_metrics
from tunnel.role_metrics import (
    CertificateExpiry,
    CertificateExpiryCollector,
    file_expiries,
    file_not_after,
    planelink_version,
)

EXPIRY = "planelink_gateway_certificate_expiration_timestamp_seconds"


def page(metrics: GatewayMetrics | AgentMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def series(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of `name`'s samples in an exposition."""
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def test_build_info_names_the_loop_it_is_scraped_on() -> None:
    """Scrapes run on the role's loop: asyncio's, or uvloop's under PLANELINK_TEST_EVENT_LOOP."""
    expected = "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"
    for metrics in (GatewayMetrics(), AgentMetrics()):
        [labels] = series(page(metrics), "planelink_build_info")
        assert labels["event_loop"] == expected


def ca_valid_for(days: int) -> certs.CertificateBundle:
    return certs.create_ca(f"valid {days} days", validity=timedelta(days=days))


def test_each_role_registry_has_process_python_and_build_info_of_its_own() -> None:
    gateways = [GatewayMetrics(), GatewayMetrics()]  # a second one must not collide
    agent = AgentMetrics()
    for metrics, role in ((gateways[0], "gateway"), (gateways[1], "gateway"), (agent, "agent")):
        memory = metrics.registry.get_sample_value("process_resident_memory_bytes")
        assert memory is not None
        assert memory > 0
        build = {
            "version": planelink_version(),
            "python": platform.python_version(),
            "role": role,
            "event_loop": "none",  # scraped outside any loop
        }
        assert metrics.registry.get_sample_value("planelink_build_info", build) == 1
        assert series(page(metrics), "python_info"), "the Python collector is registered"
        assert series(page(metrics), "python_gc_collections_total")
    assert planelink_version() != "unknown", "the package is installed in the test venv"


def test_no_series_ends_in_created() -> None:
    gateway, agent = GatewayMetrics(), AgentMetrics()
    gateway.requests.labels("ns/p", "2xx").inc()
    gateway.request_duration.labels("ns/p", "2xx").observe(0.1)
    agent.connects.inc()
    agent.upstream_duration.labels("2xx").observe(0.1)
    for text in (page(gateway), page(agent)):
        assert "planelink_gateway_requests_total" in text or "planelink_agent_connects" in text
        assert "_created" not in text


def test_no_created_series_in_a_fresh_process_that_imports_a_role() -> None:
    """The switch is thrown by importing a role's metrics, before any test configures it."""
    script = (
        "from prometheus_client import Counter, generate_latest;"
        "import gateway.metrics;"
        "from gateway.reconciler.metrics import ReconcilerMetrics;"
        "from prometheus_client import CollectorRegistry;"
        "r = CollectorRegistry(); m = ReconcilerMetrics(r); m.reconciles.labels('ok').inc();"
        "print(generate_latest(r).decode())"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert 'planelink_reconciler_reconciles_total{result="ok"} 1.0' in shown
    assert "_created" not in shown


def test_merged_workers_keep_their_process_series_apart() -> None:
    texts = {"gw-w0": page(GatewayMetrics()), "gw-w1": page(GatewayMetrics())}
    merged = merge_metrics(texts).decode()
    memory = series(merged, "process_resident_memory_bytes")
    assert sorted(labels["worker"] for labels in memory) == ["gw-w0", "gw-w1"]
    every = [
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(merged)
        for sample in family.samples
    ]
    assert len(every) == len(set(every)), "no two samples share a name and labels"
    assert {labels["worker"] for labels in series(merged, "planelink_build_info")} == set(texts)


def test_certificate_expiry_is_the_earliest_per_kind_and_plane() -> None:
    collector = CertificateExpiryCollector(
        "test_expiration_timestamp_seconds",
        [
            lambda: [
                CertificateExpiry("agent", "ns/a", 300.0),
                CertificateExpiry("agent", "ns/a", 200.0),
            ],
            lambda: [
                CertificateExpiry("agent", "ns/b", 100.0),
                CertificateExpiry("serving", "", 50.0),
            ],
        ],
    )
    (family,) = collector.collect()
    found = {(s.labels["kind"], s.labels["plane"]): s.value for s in family.samples}
    assert found == {("agent", "ns/a"): 200.0, ("agent", "ns/b"): 100.0, ("serving", ""): 50.0}


def test_a_file_expires_with_its_first_certificate_and_an_unreadable_one_is_left_out(
    tmp_path: Path,
) -> None:
    short, long = ca_valid_for(10), ca_valid_for(400)
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(long.certificate_pem() + short.certificate_pem())
    (tmp_path / "junk.crt").write_text("not a certificate")
    assert file_not_after(bundle) == short.certificate.not_valid_after_utc.timestamp()
    assert file_not_after(tmp_path / "junk.crt") is None
    assert file_not_after(tmp_path / "missing.crt") is None
    found = file_expiries([("caller_ca", bundle), ("peer", tmp_path / "missing.crt")])
    assert found == [CertificateExpiry("caller_ca", "", file_not_after(bundle) or 0.0)]


def test_the_gateway_shows_heartbeat_age_and_zero_agents_for_a_known_plane() -> None:
    metrics = GatewayMetrics()
    metrics.watch_planes(lambda: ["ns/a", "ns/b"])
    metrics.watch_agents(lambda: [AgentSample("ns/a", "agent-1", 0.002, 3, heartbeat_age=1.5)])
    metrics.watch_agents(lambda: [AgentSample("ns/c", "direct", None, 0)])  # a direct plane
    get = metrics.registry.get_sample_value
    assert get("planelink_gateway_agents_connected", {"plane": "ns/a"}) == 1
    assert get("planelink_gateway_agents_connected", {"plane": "ns/b"}) == 0
    assert get("planelink_gateway_agents_connected", {"plane": "ns/c"}) == 1
    labels = {"plane": "ns/a", "agent": "agent-1"}
    assert get("planelink_gateway_agent_heartbeat_age_seconds", labels) == 1.5
    assert get("planelink_gateway_agent_streams_active", labels) == 3
    assert series(page(metrics), "planelink_gateway_agent_heartbeat_age_seconds") == [labels]


def test_the_agent_shows_when_its_certificate_and_gateway_ca_expire(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    ca = ca_valid_for(30)
    client = certs.issue_agent(ca, plane="ns/a", validity=timedelta(days=5))
    (tmp_path / "ca.crt").write_bytes(ca.certificate_pem())
    metrics.credentials_loaded(
        plane="ns/a", client=client.certificate, gateway_ca=tmp_path / "ca.crt"
    )
    name = "planelink_agent_certificate_expiration_timestamp_seconds"
    client_at = metrics.sample(name, kind="client", plane="ns/a")
    assert client_at == client.certificate.not_valid_after_utc.timestamp()
    in_five_days = (datetime.now(UTC) + timedelta(days=5)).timestamp()
    assert abs(client_at - in_five_days) < 3600
    assert metrics.sample(name, kind="gateway_ca", plane="ns/a") == (
        ca.certificate.not_valid_after_utc.timestamp()
    )
    # A renewed certificate replaces the old values; an unreadable CA file is left out.
    renewed = certs.issue_agent(ca, plane="ns/a", validity=timedelta(days=20))
    metrics.credentials_loaded(plane="ns/a", client=renewed.certificate, gateway_ca=tmp_path / "x")
    shown = series(page(metrics), name)
    assert shown == [{"kind": "client", "plane": "ns/a"}]
    assert metrics.sample(name, kind="client", plane="ns/a") > client_at
