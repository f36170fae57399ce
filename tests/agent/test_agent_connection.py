"""The agent's side of the connection: certificates read at every attempt, rejections logged
and backed off, dead tunnels found by heartbeat, and health endpoints that tell the truth."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

import certs
from tests.kit.waits import eventually, scaled, wait_for

if TYPE_CHECKING:
    from tests.agent.conftest import AgentTls, StartAgent, TestGateway


async def test_a_renewed_certificate_is_used_on_the_next_connection(
    start_agent: StartAgent, fake_gateway: TestGateway, agent_tls: AgentTls, unused_kubeconfig: Path
) -> None:
    running = await start_agent(kubeconfig=unused_kubeconfig)
    first = await fake_gateway.next_connection()
    assert first.serial == agent_tls.bundle.certificate.serial_number

    renewed = agent_tls.renew()  # cert-manager rewrites tls.crt and tls.key
    first.session.close("the gateway restarts")
    second = await fake_gateway.next_connection()
    assert second.serial == renewed.certificate.serial_number != first.serial
    assert running.agent.metrics.sample("planelink_agent_connects_total") == 2


async def test_a_rejection_is_logged_with_its_reason_and_backed_off(
    start_agent: StartAgent, fake_gateway: TestGateway, unused_kubeconfig: Path
) -> None:
    fake_gateway.refuse(403, "UnknownPlane", "plane agent-tests/edge is not registered")
    with structlog.testing.capture_logs() as logs:
        running = await start_agent(
            kubeconfig=unused_kubeconfig,
            backoff_base=0.02,
            backoff_cap=0.1,
            random=lambda: 0.5,
        )
        await eventually(
            lambda: len(_failures(logs)) >= 5, within=10, message="never: len(_failures(logs)) >= 5"
        )
    failures = _failures(logs)
    for entry in failures:
        assert entry["log_level"] == "warning"
        assert entry["reason"] == (
            "the gateway rejected the agent: HTTP 403 UnknownPlane: "
            "plane agent-tests/edge is not registered"
        )
    # Full jitter with the drawn 0.5: half of 0.02, 0.04, 0.08, then of the 0.1 cap.
    delays = [entry["retry_in_seconds"] for entry in failures[:5]]
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05]
    assert [entry["attempt"] for entry in failures[:5]] == [1, 2, 3, 4, 5]
    # One log line per failure: the gateway counted at least as many attempts.
    assert fake_gateway.rejections >= len(failures)
    metrics = running.agent.metrics
    assert metrics.sample(
        "planelink_agent_connect_failures_total", reason="rejected:UnknownPlane"
    ) >= len(failures)
    assert not running.agent.state.up
    assert "UnknownPlane" in running.agent.state.reason


async def test_dial_failures_start_over_once_a_tunnel_is_set_up(
    start_agent: StartAgent, fake_gateway: TestGateway, unused_kubeconfig: Path
) -> None:
    fake_gateway.refuse(503, "Unavailable", "not ready")  # no Retry-After: the agent backs off
    running = await start_agent(kubeconfig=unused_kubeconfig, backoff_reset_after=3600.0)
    agent = running.agent
    await eventually(
        lambda: agent.reconnect.dials.attempt >= 3,
        within=10,
        message="never: agent.reconnect.dials.attempt >= 3",
    )
    fake_gateway.accept()
    connection = await fake_gateway.next_connection()
    await wait_for(agent.state.wait(up=True))
    connection.session.close("gateway restart")
    await wait_for(agent.state.wait(up=False))
    # The tunnel was set up: dial failures start afresh, though it did not stay up long...
    await eventually(
        lambda: agent.reconnect.tunnels.attempt == 1,
        within=10,
        message="never: agent.reconnect.tunnels.attempt == 1",
    )
    assert agent.reconnect.dials.attempt == 0
    # ...and a gateway that accepts and drops at once is backed off from, not hammered.
    for dropped in range(2, 5):
        connection = await fake_gateway.next_connection()
        await wait_for(agent.state.wait(up=True))
        connection.session.close("accepted, then dropped")
        await eventually(
            lambda: agent.reconnect.tunnels.attempt == dropped,  # noqa: B023 - awaited here
            within=10,
            message=f"never: agent.reconnect.tunnels.attempt == {dropped}",
        )
        assert agent.reconnect.dials.attempt == 0


async def test_a_gateway_that_says_retry_after_is_dialed_again_after_that_delay(
    start_agent: StartAgent, fake_gateway: TestGateway, unused_kubeconfig: Path
) -> None:
    fake_gateway.refuse(503, "Starting", "the gateway is starting", retry_after=1)
    with structlog.testing.capture_logs() as logs:
        running = await start_agent(
            kubeconfig=unused_kubeconfig, backoff_base=0.02, backoff_cap=5.0, random=lambda: 0.5
        )
        await eventually(
            lambda: len(_failures(logs)) >= 2, within=10, message="never: len(_failures(logs)) >= 2"
        )
    # Retry-After, plus the drawn half of its half again; no failure counted toward backoff.
    assert [entry["retry_in_seconds"] for entry in _failures(logs)[:2]] == [1.25, 1.25]
    assert running.agent.reconnect.dials.attempt == 0
    fake_gateway.accept()
    await wait_for(running.agent.state.wait(up=True))


async def test_a_silent_gateway_is_detected_by_heartbeat(
    start_agent: StartAgent, fake_gateway: TestGateway, unused_kubeconfig: Path
) -> None:
    fake_gateway.silent = True  # says HELLO, then never answers: a half-open connection
    interval, timeout = 0.1, 0.5  # not scaled: the session measures the silence it acts on
    with structlog.testing.capture_logs() as logs:
        running = await start_agent(
            kubeconfig=unused_kubeconfig, heartbeat_interval=interval, heartbeat_timeout=timeout
        )
        state = running.agent.state
        await wait_for(state.wait(up=True))
        up_at = time.monotonic()
        await wait_for(state.wait(up=False))
        down_after = time.monotonic() - up_at
    # The session measures silence from the last message it received (the HELLO, which came a
    # moment before the test saw the tunnel up) and checks it every interval: never before the
    # timeout (the log rounds to 0.1 s, of which the timeout is a multiple), soon after it.
    silences = [
        entry["silent_seconds"] for entry in logs if entry["event"] == "tunnel silent, closing"
    ]
    assert silences
    assert all(timeout <= silent <= timeout + interval + scaled(2.0) for silent in silences)
    assert down_after <= timeout + interval + scaled(2.0)
    assert "no message from the peer" in state.reason
    lost = [entry for entry in logs if entry["event"] == "tunnel down"]
    assert lost
    assert "no message from the peer" in lost[0]["reason"]
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{running.health_url}/readyz") as answer,
    ):
        assert answer.status == 503
        assert "no message from the peer" in await answer.text()
    # The agent dials again, without waiting long for a close the dead peer never sends.
    await wait_for(state.wait(up=True), seconds=5)
    metrics = running.agent.metrics
    assert metrics.sample("planelink_agent_connect_failures_total", reason="tunnel_lost") >= 1


async def test_health_endpoints_follow_the_tunnel(
    start_agent: StartAgent, fake_gateway: TestGateway, unused_kubeconfig: Path
) -> None:
    fake_gateway.refuse(403, "CertificateNotTrusted", "not signed by the plane's CA")
    running = await start_agent(kubeconfig=unused_kubeconfig)
    base = running.health_url
    async with aiohttp.ClientSession() as client:
        await eventually(
            lambda: fake_gateway.rejections >= 1,
            within=10,
            message="never: gateway.rejections >= 1",
        )
        async with client.get(f"{base}/healthz") as answer:
            assert answer.status == 200
        async with client.get(f"{base}/readyz") as answer:
            assert answer.status == 503
            text = await answer.text()
        assert text.startswith("not ready:")
        assert "CertificateNotTrusted" in text or "not connected yet" in text
        async with client.get(f"{base}/metrics") as answer:
            assert "planelink_agent_tunnel_up 0.0" in await answer.text()

        fake_gateway.accept()
        await fake_gateway.next_connection()
        await wait_for(running.agent.state.wait(up=True))
        async with client.get(f"{base}/readyz") as answer:
            assert answer.status == 200
        async with client.get(f"{base}/healthz") as answer:
            assert answer.status == 200
        async with client.get(f"{base}/metrics") as answer:
            assert answer.headers["Content-Type"].startswith("text/plain")
            page = await answer.text()
    assert "planelink_agent_tunnel_up 1.0" in page
    assert "planelink_agent_connects_total 1.0" in page
    assert 'planelink_agent_connect_failures_total{reason="rejected:CertificateNotTrusted"}' in page
    assert "# TYPE planelink_agent_upstream_request_duration_seconds histogram" in page


async def test_a_gateway_certificate_the_agent_does_not_trust_is_named(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    agent_tls: AgentTls,
    unused_kubeconfig: Path,
) -> None:
    stranger = certs.create_ca("a stranger")
    (agent_tls.directory / "ca.crt").write_bytes(stranger.certificate_pem())
    running = await start_agent(kubeconfig=unused_kubeconfig)
    metrics = running.agent.metrics
    failures = "planelink_agent_connect_failures_total"
    await eventually(
        lambda: metrics.sample(failures, reason="gateway_untrusted") >= 2,
        within=10,
        message="never: 2 connect failures for gateway_untrusted",
    )
    reason = running.agent.state.reason
    assert reason.startswith("the agent does not trust the gateway: the gateway's certificate ")
    assert "(trusted: 'CN=a stranger' [SHA-256 " in reason
    assert f"--gateway-ca {agent_tls.directory / 'ca.crt'}" in reason
    assert fake_gateway.connections.empty()


async def test_an_agent_certificate_the_gateway_does_not_trust_is_reported(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    agent_tls: AgentTls,
    unused_kubeconfig: Path,
) -> None:
    agent_tls.write(certs.issue_agent(certs.create_ca("a stranger"), plane="agent-tests/edge"))
    running = await start_agent(kubeconfig=unused_kubeconfig)
    metrics = running.agent.metrics
    # TLS 1.3: the gateway checks the certificate after the handshake and hangs up.
    await eventually(
        lambda: metrics.sample("planelink_agent_connect_failures_total", reason="closed") >= 2,
        within=10,
        message="never: 2 connect failures for closed",
    )
    assert "does not accept the agent's client certificate" in running.agent.state.reason
    assert fake_gateway.connections.empty()


async def test_unreadable_certificate_files_are_retried_until_they_appear(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    agent_tls: AgentTls,
    unused_kubeconfig: Path,
) -> None:
    key = agent_tls.directory / "tls.key"
    saved = key.read_bytes()
    key.unlink()  # the Secret is not mounted yet
    running = await start_agent(kubeconfig=unused_kubeconfig)
    metrics = running.agent.metrics
    await eventually(
        lambda: metrics.sample("planelink_agent_connect_failures_total", reason="credentials") >= 1,
        within=10,
        message="never: 1 connect failures for credentials",
    )
    assert "cannot load the agent's TLS files" in running.agent.state.reason
    key.write_bytes(saved)
    await fake_gateway.next_connection()
    await wait_for(running.agent.state.wait(up=True))


def _failures(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "connection attempt failed"]
