"""The benchmarks' HTTP/2 client against the bench upstream's HTTP/2 side, in process."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import certs
from bench.h2client import H2Client, H2ClientError, h2_context
from bench.upstream import SMALL, serve
from envtest import free_port
from tests.kit.waits import wait_for, within

SMALL_PATH = "/api/v1/namespaces/bench/configmaps/small"
WATCH = "/api/v1/namespaces/bench/configmaps?watch=true&events=0&interval=0.01"


@dataclass
class Upstream:
    port: int
    ca_pem: str

    def client_context(self) -> ssl.SSLContext:
        return h2_context(ssl.create_default_context(cadata=self.ca_pem))

    async def connect(self, *, stream_window: int = 1 << 20) -> H2Client:
        return await H2Client.connect(
            "127.0.0.1", self.port, self.client_context(), stream_window=stream_window
        )


def _server_context(directory: Path) -> tuple[ssl.SSLContext, str]:
    ca = certs.create_ca("h2 client test CA")
    server = certs.issue_server(ca, common_name="upstream", ip_addresses=["127.0.0.1"])
    (directory / "tls.crt").write_bytes(server.chain_pem())
    (directory / "tls.key").write_bytes(server.private_key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    return context, ca.certificate_pem().decode()


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    context, ca_pem = _server_context(tmp_path)
    port = free_port()
    server = await serve(port, context, max_streams=2)
    async with server:
        yield Upstream(port, ca_pem)


async def test_concurrent_gets_share_one_connection(upstream: Upstream) -> None:
    client = await upstream.connect()
    try:
        assert client.max_concurrent_streams == 2
        # Ten GETs at once on a server allowing two: the rest wait for a stream to end.
        results = await wait_for(
            asyncio.gather(*(client.get(SMALL_PATH, [(b"x-bench", b"1")]) for _ in range(10)))
        )
        assert {status for status, _, _ in results} == {200}
        assert all(body == SMALL for _, _, body in results)
        _, headers, _ = results[0]
        assert (b"content-type", b"application/json") in headers
        assert client.requests == 10
        assert client.open_streams == 0
        status, _, _ = await client.get("/nowhere")
        assert status == 404
    finally:
        await client.close()


async def test_a_cancelled_watch_frees_its_stream_on_the_server(upstream: Upstream) -> None:
    client = await upstream.connect()
    try:
        async with within(10):
            async with client.stream(WATCH) as first, client.stream(WATCH) as second:
                assert (first.status, second.status) == (200, 200)
                event = await anext(aiter(first))
                assert json.loads(event)["type"] == "MODIFIED"
            # Both left their block before their (endless) bodies ended: reset. The server
            # allows two streams: a third and fourth only open if it took both resets.
            assert client.open_streams == 0
            async with client.stream(WATCH) as third, client.stream(WATCH) as fourth:
                assert json.loads(await anext(aiter(third)))["object"]["n"] == 0
                assert json.loads(await anext(aiter(fourth)))["object"]["n"] == 0
            assert client.usable
    finally:
        await client.close()


async def test_a_body_larger_than_the_stream_window_flows_as_it_is_read(
    upstream: Upstream,
) -> None:
    client = await upstream.connect(stream_window=65_535)
    try:
        async with within(10):
            size = 1 << 20
            async with client.stream(f"/bytes/{size}") as unread:
                # Nobody reads this one: it holds one window and stalls nothing else.
                assert unread.status == 200
                received = 0
                async with client.stream(f"/bytes/{size}") as read:
                    async for chunk in read:
                        received += len(chunk)
                assert received == size
                status, _, body = await client.get(f"/bytes/{size}")
                assert (status, len(body)) == (200, size)
    finally:
        await client.close()


async def test_a_server_that_does_not_pick_h2_is_refused(tmp_path: Path) -> None:
    context, ca_pem = _server_context(tmp_path)
    port = free_port()
    server = await serve(port, context)
    context.set_alpn_protocols(["http/1.1"])  # as a server without HTTP/2 would
    async with server:
        with pytest.raises(H2ClientError, match="did not pick h2"):
            await H2Client.connect(
                "127.0.0.1", port, h2_context(ssl.create_default_context(cadata=ca_pem))
            )
