"""An agent that does not trust the gateway's certificate: a real handshake between the agent's
dialer and an in-process gateway. The agent names the gateway's certificate, why it refuses it
and the setting to fix; the gateway logs that the agent did not trust it, never that it
refused the agent."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import certs
from agent.dialer import DialFailed, dial, distrusted_gateway, load_client_credentials
from agent.settings import (
    CLIENT_CERT_SETTING,
    CLIENT_KEY_SETTING,
    GATEWAY_CA_SETTING,
    AgentTlsFiles,
)
from gateway.app import Gateway
from gateway.tls_alerts import untrusted_by_peer
from tests.kit.gateway_lab import Pki, PlanePair
from tests.kit.waits import eventually, scaled
from tunnel.contract import AGENT_CONNECT_PATH


def _files(directory: Path, bundle: certs.CertificateBundle, gateway_ca: bytes) -> AgentTlsFiles:
    directory.mkdir()
    (directory / "tls.crt").write_bytes(bundle.chain_pem())
    (directory / "tls.key").write_bytes(bundle.private_key_pem())
    (directory / "ca.crt").write_bytes(gateway_ca)
    return AgentTlsFiles(
        certificate=certs.CredentialFile(directory / "tls.crt", CLIENT_CERT_SETTING),
        key=certs.CredentialFile(directory / "tls.key", CLIENT_KEY_SETTING),
        gateway_ca=certs.CredentialFile(directory / "ca.crt", GATEWAY_CA_SETTING),
    )


def _sample(gateway: Gateway, name: str, labels: dict[str, str]) -> float:
    return gateway.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_agent_that_does_not_trust_the_gateway(
    gateway: Gateway, pki: Pki, planes: PlanePair, tmp_path: Path
) -> None:
    plane = planes[0]
    stranger = certs.create_ca()  # the agent was given another CA than the gateway's
    files = _files(tmp_path / "agent", pki.agent_cert(plane), stranger.certificate_pem())
    url = f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={plane}"
    distrusted = {"port": "agent", "reason": "untrusted_by_peer"}
    with capture_logs() as logs:
        with pytest.raises(DialFailed) as failed:
            await dial(
                url,
                load_client_credentials(files),
                open_timeout=scaled(10),
                max_message_size=1 << 20,
                user_agent="test",
            )
        await eventually(
            lambda: (
                _sample(gateway, "planelink_gateway_connections_refused_total", distrusted) >= 1
            ),
            within=10,
            message="the gateway never counted an agent that did not trust it",
        )

    server = certs.describe(certs.load_certificate((pki.directory / "server.crt").read_bytes()))
    stranger_info = certs.describe(stranger.certificate)
    assert failed.value.reason == "gateway_untrusted"
    message = failed.value.message
    assert message.startswith(
        f"the agent does not trust the gateway: the gateway's certificate {server.label} "
        f"[SHA-256 {server.sha256_fingerprint[:23]}...] was issued by 'CN=gateway-ca' [key id "
    )
    assert (
        f"which is not a trusted CA (trusted: {stranger_info.subject!r} "
        f"[SHA-256 {stranger_info.sha256_fingerprint[:23]}..."
    ) in message
    assert (
        f"the agent trusts the CA certificates of --gateway-ca {tmp_path / 'agent' / 'ca.crt'}"
    ) in message
    assert "PLANELINK_GATEWAY_CA" in message
    assert "gatewayCA.secretName" in message

    line = next(e for e in logs if e["event"] == "agent did not trust the gateway's certificate")
    assert line["reason"] == "untrusted_by_peer"
    assert "alert unknown_ca" in line["detail"]
    assert "--gateway-ca / PLANELINK_GATEWAY_CA" in line["detail"]
    # Not a rejection of the agent: no "agent refused" line, no rejection counted.
    assert not [e for e in logs if str(e["event"]).startswith("agent refused")]
    assert _sample(gateway, "planelink_gateway_agent_rejections_total", {"reason": "TLSError"}) == 0
    tls_failed = {"port": "agent", "reason": "tls_failed"}
    assert _sample(gateway, "planelink_gateway_connections_refused_total", tls_failed) == 0


def test_a_hostname_mismatch_names_the_certificate_s_names(
    pki: Pki, planes: PlanePair, tmp_path: Path
) -> None:
    files = _files(tmp_path / "agent", pki.agent_cert(planes[0]), pki.gateway_ca.certificate_pem())
    server = certs.issue_server(
        pki.gateway_ca, common_name="gateway", dns_names=["gw.example"], ip_addresses=["10.0.0.1"]
    )
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = 62
    error.verify_message = "Hostname mismatch, certificate is not valid for 'gw.internal'."
    failure = distrusted_gateway(
        error,
        server.certificate,
        credentials=load_client_credentials(files),
        url="wss://gw.internal:8443/agent",
    )
    info = certs.describe(server.certificate)
    assert failure.reason == "gateway_name_mismatch"
    assert failure.message == (
        f"the gateway's certificate {info.label} [SHA-256 {info.sha256_fingerprint[:23]}...] is "
        "not for 'gw.internal': its names are [gw.example, 10.0.0.1] (dial one of them in "
        "--gateway-url / PLANELINK_GATEWAY_URL, or re-issue the gateway's certificate with "
        "--dns gw.internal)"
    )


def test_without_the_certificate_the_hint_is_still_given(
    pki: Pki, planes: PlanePair, tmp_path: Path
) -> None:
    files = _files(tmp_path / "agent", pki.agent_cert(planes[0]), pki.gateway_ca.certificate_pem())
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = 20
    error.verify_message = "unable to get local issuer certificate"
    failure = distrusted_gateway(
        error, None, credentials=load_client_credentials(files), url="wss://gw:8443/agent"
    )
    assert failure.reason == "gateway_untrusted"
    assert failure.message.startswith(
        "the agent does not trust the gateway's certificate (unable to get local issuer "
        "certificate); the agent trusts the CA certificates of --gateway-ca "
    )


@pytest.mark.parametrize(
    ("reason", "port", "alert", "where"),
    [
        ("TLSV1_ALERT_UNKNOWN_CA", "agent", "unknown_ca", "--gateway-ca"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "caller", "bad_certificate", "kubeconfig"),
        ("SSLV3_ALERT_CERTIFICATE_EXPIRED", "peer", "certificate_expired", "--peer-ca"),
    ],
)
def test_a_client_s_alert_about_the_gateway_s_certificate_is_told_apart(
    reason: str, port: str, alert: str, where: str
) -> None:
    error = ssl.SSLError(1, f"[SSL: {reason}] alert ({reason})")
    error.reason = reason
    detail = untrusted_by_peer(error, port=port)
    assert detail is not None
    assert detail.startswith(f"the {port} aborted the TLS handshake with alert {alert}: ")
    assert where in detail


def test_other_handshake_failures_are_not_distrust() -> None:
    refused = ssl.SSLError(1, "[SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE]")
    refused.reason = "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert untrusted_by_peer(refused, port="agent") is None
    assert untrusted_by_peer(ConnectionResetError(), port="agent") is None
