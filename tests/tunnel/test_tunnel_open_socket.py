"""`tunnel.tls_alerts.open_socket`: an address literal is connected to without a resolver (asyncio
resolves in a thread it starts and keeps), a name through the resolver."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from tunnel.tls_alerts import _literal_address, open_socket


@pytest.mark.parametrize(
    ("host", "family", "address"),
    [
        ("127.0.0.1", socket.AF_INET, ("127.0.0.1", 443)),
        ("::1", socket.AF_INET6, ("::1", 443, 0, 0)),
    ],
)
def test_a_literal_is_its_own_address(
    host: str, family: socket.AddressFamily, address: tuple[object, ...]
) -> None:
    (info,) = _literal_address(host, 443) or []
    assert info[0] == family
    assert info[1] == socket.SOCK_STREAM
    assert info[4] == address


@pytest.mark.parametrize("host", ["localhost", "gateway.example", "fe80::1%eth0", "", "1.2.3"])
def test_anything_else_goes_to_the_resolver(host: str) -> None:
    assert _literal_address(host, 443) is None


async def test_a_literal_is_dialled_without_a_resolver_thread() -> None:
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    threads = threading.active_count()
    try:
        sock = await open_socket("127.0.0.1", port)
        assert sock.getpeername() == ("127.0.0.1", port)
        sock.close()
        assert threading.active_count() == threads
    finally:
        server.close()
        await server.wait_closed()
