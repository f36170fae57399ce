"""The accepted connections of both ports send small writes at once (TCP_NODELAY): asyncio sets
it only on sockets whose `proto` says TCP, which those of `socket.create_server` do not."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import certs
from gateway.acceptor import Admitted, TlsAcceptor
from gateway.admission import AdmissionSettings
from gateway.metrics import GatewayMetrics
from tests.kit.waits import wait_for


class _Recorder(asyncio.Protocol):
    def __init__(self, made: asyncio.Future[asyncio.BaseTransport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.made.done():
            self.made.set_result(transport)


async def test_an_accepted_connection_has_nagle_off(tmp_path: Path) -> None:
    ca = certs.create_ca("nodelay test CA")
    server = certs.issue_server(ca, common_name="gateway", ip_addresses=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(server.chain_pem())
    (tmp_path / "tls.key").write_bytes(server.private_key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    made: asyncio.Future[asyncio.BaseTransport] = asyncio.get_running_loop().create_future()

    def factory(_: Admitted) -> asyncio.Protocol:
        return _Recorder(made)

    acceptor = TlsAcceptor(
        "caller",
        settings=AdmissionSettings(),
        tls_context=lambda: context,
        protocol_factory=factory,
        on_tls_failure=lambda reason, detail: None,
        tls_failure_event="refused",
        metrics=GatewayMetrics(),
    )
    listener = acceptor.listen("127.0.0.1", 0, backlog=16)
    acceptor.serve()
    try:
        client = ssl.create_default_context(cadata=ca.certificate_pem().decode())
        _, writer = await wait_for(
            asyncio.open_connection("127.0.0.1", listener.getsockname()[1], ssl=client)
        )
        transport = await wait_for(made)
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        writer.close()
    finally:
        await acceptor.close()
