"""What the replicas refuse: forwarding headers from a caller, and peers the peer CA did not
sign (another CA's certificate, a caller's, none at all)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

import certs
from certs import PlaneRef
from tests.kit.replicas import ReplicaLab
from tests.kit.waits import within
from tests.scaleout.conftest import MakeLab

FORGED = {"Planelink-Forwarded-By": "r1", "Planelink-Caller": "system:admin"}


@pytest.fixture
async def lab(make_lab: MakeLab) -> ReplicaLab:
    return await make_lab(replicas=2)


async def test_a_forged_forwarding_header_from_a_caller_is_refused(
    lab: ReplicaLab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    plane = planes[0]
    path = f"/planes/{plane.namespace}/{plane.name}/k8s/api/v1/namespaces"
    ports = [lab.lb.port("callers")] + [lab.replicas[name].caller_port for name in ("r1", "r2")]
    connector = aiohttp.TCPConnector(ssl=lab.caller_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as http, within(30):
        for port in ports:
            for name, value in FORGED.items():
                url = f"https://127.0.0.1:{port}{path}"
                async with http.get(url, headers={name: value}) as response:
                    assert response.status == 400, name
                    status = await response.json(content_type=None)
                    assert (status["kind"], status["code"]) == ("Status", 400)
            # The same request without the header is served.
            async with http.get(f"https://127.0.0.1:{port}{path}") as response:
                assert response.status == 200


def _client_context(lab: ReplicaLab, chain: Path | None, key: Path | None) -> ssl.SSLContext:
    """TLS to a peer listener: trusts the peer CA, presents `chain` (if any)."""
    context = ssl.create_default_context(cafile=str(lab.pki / "peers/ca.crt"))
    if chain is not None and key is not None:
        context.load_cert_chain(chain, key)
    return context


async def _peer_planes(lab: ReplicaLab, context: ssl.SSLContext) -> int:
    url = f"https://127.0.0.1:{lab.replicas['r1'].peer_port}/peer/v1/planes"
    connector = aiohttp.TCPConnector(ssl=context)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        within(30),
        http.get(url, server_hostname=certs.PEER_SERVER_NAME) as response,
    ):
        await response.read()
        return response.status


async def test_a_peer_certificate_from_another_ca_is_refused(
    lab: ReplicaLab, tmp_path: Path
) -> None:
    # The right certificate is let in: the refusals below are the peer CA's doing.
    assert await _peer_planes(lab, lab.peer_ssl_context()) == 200

    impostor_ca = certs.create_ca("planelink peers")  # the same name, another key
    impostor = certs.issue_peer(impostor_ca)
    (tmp_path / "impostor.crt").write_bytes(impostor.chain_pem())
    (tmp_path / "impostor.key").write_bytes(impostor.private_key_pem())
    callers = lab.pki / "callers"
    for chain, key in (
        (tmp_path / "impostor.crt", tmp_path / "impostor.key"),
        (callers / "tls.crt", callers / "tls.key"),  # a caller is not a peer
        (None, None),
    ):
        with pytest.raises(aiohttp.ClientError):
            await _peer_planes(lab, _client_context(lab, chain, key))
