"""TLS connections read into one buffer per thread: a connection holds none of its own (asyncio
gives each 256 KiB), and every byte still arrives, in order, whatever the buffer's size."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from pathlib import Path

import pytest

import certs
import tunnel.tls
from planelink.cli import build_parser
from tunnel.tls import (
    DEFAULT_TLS_READ_BUFFER,
    MIN_TLS_READ_BUFFER,
    SharedBufferSSLProtocol,
    set_tls_read_buffer,
)

CONNECTIONS = 200
KIB = 1024


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def restore_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stdlib's TLS protocol and the read size are put back after the test."""
    monkeypatch.setattr(asyncio.sslproto, "SSLProtocol", asyncio.sslproto.SSLProtocol)
    monkeypatch.setattr(tunnel.tls, "_read_size", tunnel.tls._read_size)


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


async def test_a_tls_connection_holds_no_read_buffer_of_its_own(
    restore_buffer: None, tmp_path: Path
) -> None:
    set_tls_read_buffer(DEFAULT_TLS_READ_BUFFER)
    assert asyncio.sslproto.SSLProtocol is SharedBufferSSLProtocol
    per_end = await _rss_per_connection(tmp_path)
    # A buffer of its own, even the smallest allowed, would cost more than this per end.
    assert per_end < MIN_TLS_READ_BUFFER, f"{per_end / KIB:.0f} KiB per connection end"


@pytest.mark.parametrize("read_size", [MIN_TLS_READ_BUFFER, DEFAULT_TLS_READ_BUFFER])
async def test_bodies_cross_shared_buffers_whole_and_in_order(
    restore_buffer: None, tmp_path: Path, read_size: int
) -> None:
    """Several connections at once, each a body larger than the buffers, both ends in this
    thread (so they share the buffers), then a clean TLS close: every byte arrives."""
    set_tls_read_buffer(read_size)
    server_ssl, client_ssl = _contexts(tmp_path)
    bodies = [bytes([n]) * 10 + bytes(range(256)) * (3000 + 997 * n) for n in range(4)]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = (await reader.readexactly(1))[0]
        writer.write(bodies[index])
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ssl)
    port = server.sockets[0].getsockname()[1]

    async def fetch(index: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl)
        writer.write(bytes([index]))
        body = await reader.read()  # to the end: the server's close_notify
        writer.close()
        return body

    try:
        received = await asyncio.gather(*(fetch(n) for n in range(len(bodies))))
    finally:
        server.close()
        await server.wait_closed()
    assert [len(body) for body in received] == [len(body) for body in bodies]
    assert received == bodies


def test_the_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="between"):
        set_tls_read_buffer(1024)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--tls-read-buffer", "lots", "crd"])
    args = build_parser().parse_args(["--tls-read-buffer", "65536", "crd"])
    assert args.tls_read_buffer == 65536
