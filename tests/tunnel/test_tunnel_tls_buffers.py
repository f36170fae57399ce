"""A TLS connection's read buffer is bounded by the process-wide setting (asyncio: 256 KiB)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from pathlib import Path

import pytest

import certs
from planelink.cli import build_parser
from tunnel.tls import DEFAULT_TLS_READ_BUFFER, set_tls_read_buffer, tls_read_buffer

CONNECTIONS = 200
KIB = 1024


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def restore_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", tls_read_buffer())


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = certs.create_ca("test CA")
    leaf = certs.issue_server(ca, common_name="server", ip_addresses=["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(leaf.chain_pem())
    (tmp_path / "tls.key").write_bytes(leaf.private_key_pem())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=ca.certificate_pem().decode())
    return server, client


async def _rss_per_connection(tmp_path: Path) -> float:
    """Open CONNECTIONS TLS connections to ourselves (both ends here), exchange a little, and
    return the RSS growth per end."""
    server_ssl, client_ssl = _contexts(tmp_path)
    server_ends: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        server_ends.append(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]
    clients: list[asyncio.StreamWriter] = []
    before = _rss()
    try:
        for _ in range(CONNECTIONS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl)
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            clients.append(writer)
        return (_rss() - before) / (2 * CONNECTIONS)
    finally:
        for writer in clients + server_ends:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_tls_connection_costs_a_bounded_read_buffer(
    restore_buffer: None, tmp_path: Path
) -> None:
    set_tls_read_buffer(DEFAULT_TLS_READ_BUFFER)
    per_end = await _rss_per_connection(tmp_path)
    # asyncio's default (256 KiB, zero-filled) would cost more than 256 KiB per end.
    assert per_end < 2 * DEFAULT_TLS_READ_BUFFER, f"{per_end / KIB:.0f} KiB per connection end"


def test_the_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="between"):
        set_tls_read_buffer(1024)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--tls-read-buffer", "lots", "crd"])
    args = build_parser().parse_args(["--tls-read-buffer", "65536", "crd"])
    assert args.tls_read_buffer == 65536
