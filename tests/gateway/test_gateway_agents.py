"""Which agents the gateway accepts: per-plane trust, checked in TLS and before the upgrade."""

from __future__ import annotations

import dataclasses
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from structlog.testing import capture_logs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

import certs
from gateway.app import Gateway
from gateway.interfaces import PlaneTrust
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.waits import wait_for
from tunnel.contract import AGENT_CONNECT_PATH, REJECTION_HEADER, SUBPROTOCOL


def _rejections(gateway: Gateway, reason: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "planelink_gateway_agent_rejections_total", {"reason": reason}
    )
    return value or 0.0


async def _dial(
    gateway: Gateway, pki: Pki, bundle: certs.CertificateBundle | None, plane: str
) -> ClientConnection:
    context = (
        pki.agent_ssl(bundle)
        if bundle is not None
        else ssl.create_default_context(cadata=pki.gateway_ca.certificate_pem().decode())
    )
    url = f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={plane}"
    return await connect(
        url, ssl=context, subprotocols=[Subprotocol(SUBPROTOCOL)], ping_interval=None
    )


async def _refused_before_upgrade(
    gateway: Gateway, pki: Pki, bundle: certs.CertificateBundle | None, plane: str
) -> tuple[int, str, str]:
    with pytest.raises(InvalidStatus) as refused:
        await _dial(gateway, pki, bundle, plane)
    response = refused.value.response
    return response.status_code, response.headers[REJECTION_HEADER], response.body.decode()


async def test_agent_of_another_plane_is_refused(
    gateway: Gateway, pki: Pki, planes: PlanePair
) -> None:
    plane_a, plane_b = planes
    with capture_logs() as logs:
        status, reason, body = await _refused_before_upgrade(
            gateway, pki, pki.agent_cert(plane_b), str(plane_a)
        )
    assert (status, reason) == (403, "Untrusted")
    assert body.startswith("plane ns-a/plane-a: ")
    assert _rejections(gateway, "Untrusted") == 1
    refusal = next(entry for entry in logs if entry["event"] == "agent refused")
    assert refusal["reason"] == "Untrusted"
    assert refusal["path"] == f"{AGENT_CONNECT_PATH}?plane=ns-a/plane-a"


async def test_identity_is_checked_when_the_plane_asks(
    gateway: Gateway, pki: Pki, planes: PlanePair
) -> None:
    plane_a, plane_b = planes
    # Signed by plane B's CA, but naming plane A: plane B requires its own name.
    wrong_name = certs.issue_agent(pki.agent_cas[plane_b], plane=plane_a)
    status, reason, _ = await _refused_before_upgrade(gateway, pki, wrong_name, str(plane_b))
    assert (status, reason) == (403, "IdentityMismatch")


async def test_unknown_and_malformed_planes(gateway: Gateway, pki: Pki, planes: PlanePair) -> None:
    bundle = pki.agent_cert(planes[0])
    assert (await _refused_before_upgrade(gateway, pki, bundle, "ns-x/nope"))[:2] == (
        404,
        "UnknownPlane",
    )
    assert (await _refused_before_upgrade(gateway, pki, bundle, "NOT_A_PLANE"))[:2] == (
        400,
        "PlaneInvalid",
    )


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "Expired"),
        ("unknown-ca", "Untrusted"),
        ("server-auth-only", "NotClientAuth"),
        ("no-certificate", "NoCertificate"),
        ("forged-signature", "BadSignature"),
    ],
)
async def test_refused_in_the_tls_handshake(
    gateway: Gateway, pki: Pki, planes: PlanePair, case: str, reason: str
) -> None:
    plane = planes[0]
    ca = pki.agent_cas[plane]
    bundle: certs.CertificateBundle | None
    if case == "expired":
        bundle = certs.issue_agent(
            ca,
            plane=plane,
            not_before=datetime.now(UTC) - timedelta(days=2),
            validity=timedelta(days=1),
        )
    elif case == "unknown-ca":
        bundle = certs.issue_agent(certs.create_ca("stranger"), plane=plane)
    elif case == "server-auth-only":
        bundle = certs.issue_client(ca, common_name="x", extended_key_usages=(certs.SERVER_AUTH,))
    elif case == "forged-signature":
        # Garbage that still parses: the plane's own CA issued it, then its signature (the
        # last bytes of the DER) was altered, as a forger changing any field would leave it.
        issued = certs.issue_agent(ca, plane=plane)
        der = bytearray(issued.certificate.public_bytes(Encoding.DER))
        der[-1] ^= 0xFF
        bundle = dataclasses.replace(issued, certificate=x509.load_der_x509_certificate(bytes(der)))
    else:
        bundle = None
    with capture_logs() as logs:
        with pytest.raises((ssl.SSLError, ConnectionError, EOFError, InvalidHandshake)):
            # With TLS 1.3 the client may learn of the refusal only when it reads the answer
            # to its upgrade request, which `connect` does.
            await _dial(gateway, pki, bundle, str(plane))
        while _rejections(gateway, reason) == 0:
            await wait_for(gateway.agent_listener.wait_for_rejection(), 5)
    assert _rejections(gateway, reason) == 1
    entry = next(e for e in logs if e["event"] == "agent refused in the TLS handshake")
    assert entry["reason"] == reason
    assert entry["remote"].startswith("127.0.0.1:")


async def test_pinned_self_signed_agent_certificate(
    gateway: Gateway, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    plane = certs.plane_ref("ns-c", "pinned")
    # Identity is checked for pinned certificates too: without SANs, the CN names the plane.
    pinned = certs.self_signed_client(common_name=str(plane))
    gateway.trust.set_plane(PlaneTrust(plane=plane, client_cas=(pinned.certificate,)))
    async with connect_agent(plane, bundle=pinned) as agent:
        assert len(gateway.agents.agents(plane)) == 1
        assert agent.session.peer is not None


async def test_removing_a_plane_disconnects_its_agents(
    gateway: Gateway, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    plane_a = planes[0]
    async with connect_agent(plane_a) as agent:
        gateway.trust.remove_plane(plane_a)
        reason = await wait_for(agent.task, 5)
        assert "deleted" in reason or "going away" in reason or reason
        while gateway.agents.agents(plane_a):
            await gateway.agents.wait_for_change()


async def test_rotating_the_ca_swaps_the_agents(
    gateway: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    plane_a = planes[0]
    async with connect_agent(plane_a) as old:
        new_ca = certs.create_ca("rotated")
        gateway.trust.set_plane(PlaneTrust(plane=plane_a, client_cas=(new_ca.certificate,)))
        await wait_for(old.task, 5)
        while gateway.agents.agents(plane_a):
            await gateway.agents.wait_for_change()
    assert _rejections(gateway, "TrustRevoked") == 1
    async with connect_agent(plane_a, bundle=certs.issue_agent(new_ca, plane=plane_a)):
        assert len(gateway.agents.agents(plane_a)) == 1


async def test_hello_must_name_the_plane_of_the_url(
    gateway: Gateway, pki: Pki, planes: PlanePair
) -> None:
    from protocol import Connection, Role
    from tunnel import TunnelSession, WebSocketChannel
    from tunnel.contract import IDENTITY_PLANE

    plane_a, plane_b = planes
    websocket = await _dial(gateway, pki, pki.agent_cert(plane_a), str(plane_a))
    session = TunnelSession(
        WebSocketChannel(websocket),
        Connection(Role.AGENT, identity={IDENTITY_PLANE: str(plane_b)}),
    )
    reason = await wait_for(session.run(), 5)
    assert "HELLO names plane ns-b/plane-b" in reason
    assert _rejections(gateway, "PlaneMismatch") == 1
    assert gateway.agents.agents(plane_a) == []
