"""A real mutual-TLS handshake on 127.0.0.1 with the stdlib ssl module.

The server presents an issue_server() certificate, the client an issue_agent() certificate; both
sides verify the other against the CA, and the server then runs verify_client_certificate() on
the peer's DER bytes - exactly what the gateway does when an agent dials in.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

import certs
from tests.kit.waits import scaled

TIMEOUT = scaled(10)


def server_context(
    tmp_path: Path, server: certs.CertificateBundle, trusted_pem: bytes
) -> ssl.SSLContext:
    cert, key = certs.write_pem_files(
        server, tmp_path / "server", cert_name="tls.crt", key_name="tls.key"
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=trusted_pem.decode())
    return ctx


def client_context(
    tmp_path: Path, client: certs.CertificateBundle, ca: certs.CertificateBundle
) -> ssl.SSLContext:
    cert, key = certs.write_pem_files(
        client, tmp_path / "client", cert_name="tls.crt", key_name="tls.key"
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname + CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca.certificate_pem().decode())
    ctx.load_cert_chain(cert, key)
    return ctx


class Gateway:
    """A minimal TLS server that verifies each peer like the planelink gateway does."""

    def __init__(
        self, ctx: ssl.SSLContext, trusted: list[x509.Certificate], plane: certs.PlaneRef
    ) -> None:
        self.ctx = ctx
        self.trusted = trusted
        self.plane = plane
        self.outcome: asyncio.Future[certs.CertificateInfo] = (
            asyncio.get_running_loop().create_future()
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        try:
            info = certs.verify_client_certificate(
                der, trusted=self.trusted, expected_identity=certs.plane_uri(self.plane)
            )
        except certs.CertificateRejected as exc:
            self.outcome.set_exception(exc)
            writer.write(f"rejected: {exc.reason.value}\n".encode())
        else:
            self.outcome.set_result(info)
            writer.write(
                f"welcome {certs.planes_in_certificate(certs.load_certificate(der))[0]}\n".encode()
            )
        await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serving(gateway: Gateway) -> AsyncIterator[int]:
    server = await asyncio.start_server(gateway.handle, "127.0.0.1", 0, ssl=gateway.ctx)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def exchange(port: int, ctx: ssl.SSLContext, hostname: str) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=hostname
    )
    try:
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
async def test_mutual_tls_accepts_agent(
    tmp_path: Path,
    ca: certs.CertificateBundle,
    agent: certs.CertificateBundle,
    plane: certs.PlaneRef,
    hostname: str,
) -> None:
    server = certs.issue_server(
        ca, common_name="gateway", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    gateway = Gateway(
        server_context(tmp_path, server, ca.certificate_pem()), [ca.certificate], plane
    )
    async with asyncio.timeout(TIMEOUT), serving(gateway) as port:
        line = await exchange(port, client_context(tmp_path, agent, ca), hostname)
        info = await gateway.outcome
    assert line == b"welcome my-org/prod\n"
    assert info.uris == (certs.plane_uri(plane),)


async def test_mutual_tls_pinned_self_signed_agent(
    tmp_path: Path, ca: certs.CertificateBundle, plane: certs.PlaneRef
) -> None:
    # cert-manager style: the agent Secret's ca.crt is its own tls.crt, and that is clientCA.
    pinned = certs.self_signed_client(common_name="cluster-agent", uris=[certs.plane_uri(plane)])
    server = certs.issue_server(ca, common_name="gateway", dns_names=["localhost"])
    gateway = Gateway(
        server_context(tmp_path, server, pinned.certificate_pem()), [pinned.certificate], plane
    )
    async with asyncio.timeout(TIMEOUT), serving(gateway) as port:
        line = await exchange(port, client_context(tmp_path, pinned, ca), "localhost")
        info = await gateway.outcome
    assert line == b"welcome my-org/prod\n"
    assert info.self_signed


async def test_tls_layer_accepts_but_identity_is_refused(
    tmp_path: Path, ca: certs.CertificateBundle, plane: certs.PlaneRef
) -> None:
    # Same CA, different plane: the handshake succeeds, the gateway's identity check refuses.
    intruder = certs.issue_agent(ca, plane="my-org/staging")
    server = certs.issue_server(ca, common_name="gateway", dns_names=["localhost"])
    gateway = Gateway(
        server_context(tmp_path, server, ca.certificate_pem()), [ca.certificate], plane
    )
    async with asyncio.timeout(TIMEOUT), serving(gateway) as port:
        line = await exchange(port, client_context(tmp_path, intruder, ca), "localhost")
        with pytest.raises(certs.CertificateRejected) as rejected:
            await gateway.outcome
    assert line == b"rejected: IdentityMismatch\n"
    assert rejected.value.reason is certs.RejectionReason.IDENTITY_MISMATCH


async def test_tls_handshake_refuses_agent_from_other_ca(
    tmp_path: Path,
    ca: certs.CertificateBundle,
    other_ca: certs.CertificateBundle,
    plane: certs.PlaneRef,
) -> None:
    stranger = certs.issue_agent(other_ca, plane=plane)
    server = certs.issue_server(ca, common_name="gateway", dns_names=["localhost"])
    gateway = Gateway(
        server_context(tmp_path, server, ca.certificate_pem()), [ca.certificate], plane
    )
    async with asyncio.timeout(TIMEOUT), serving(gateway) as port:
        # With TLS 1.3 the client learns of the refusal on its first read, as an alert or EOF.
        try:
            line = await exchange(port, client_context(tmp_path, stranger, ca), "localhost")
        except (ssl.SSLError, ConnectionError):
            line = b""
    assert line == b""
    assert not gateway.outcome.done()  # the handler never ran
