"""The HAProxy kit itself: its config balances to servers in rotation, its runtime API moves
servers in and out, and its health checks drop a server whose /readyz fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kit.haproxy import Frontend, LoadBalancer, Server
from tests.kit.waits import wait_for


@dataclass
class FakeReplica:
    """Says its name to whoever connects to its service port; answers /readyz 200 while
    `ready`, else 503."""

    name: str
    ready: bool = True
    service: asyncio.Server | None = None
    health: asyncio.Server | None = None

    async def start(self) -> Server:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(self.name.encode())
            writer.close()

        async def readyz(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            status = "200 OK" if self.ready else "503 Service Unavailable"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            writer.close()

        self.service = await asyncio.start_server(greet, "127.0.0.1", 0)
        self.health = await asyncio.start_server(readyz, "127.0.0.1", 0)
        port = self.service.sockets[0].getsockname()[1]
        return Server(self.name, {"front": port}, self.health.sockets[0].getsockname()[1])

    def close(self) -> None:
        for server in (self.service, self.health):
            if server is not None:
                server.close()


@pytest.fixture
async def replicas() -> AsyncIterator[list[FakeReplica]]:
    made = [FakeReplica("one"), FakeReplica("two")]
    yield made
    for replica in made:
        replica.close()


async def _answer(balancer: LoadBalancer) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port("front"))
    try:
        return (await wait_for(reader.read(), 5)).decode()
    finally:
        writer.close()


async def test_servers_move_in_and_out_of_rotation(
    replicas: list[FakeReplica], tmp_path: Path
) -> None:
    servers = [await replica.start() for replica in replicas]
    balancer = LoadBalancer(tmp_path, servers, frontends=(Frontend("front"),), enabled={"one"})
    await balancer.start()
    try:
        await balancer.wait_status("one", "UP")
        assert (await balancer.statuses())["front", "two"] == "MAINT"
        assert {await _answer(balancer) for _ in range(4)} == {"one"}

        await balancer.enable("two")
        await balancer.wait_status("two", "UP")
        assert {await _answer(balancer) for _ in range(4)} == {"one", "two"}

        # A failing health check takes a server out without anyone telling the balancer.
        replicas[0].ready = False
        await balancer.wait_status("one", "DOWN")
        assert {await _answer(balancer) for _ in range(4)} == {"two"}

        await balancer.disable("two")
        assert (await balancer.statuses())["front", "two"] == "MAINT"
        replicas[0].ready = True
        await balancer.wait_status("one", "UP")
        assert {await _answer(balancer) for _ in range(4)} == {"one"}
    finally:
        await balancer.stop()
