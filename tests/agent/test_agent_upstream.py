"""The agent against an upstream test peer: what a real API server cannot be made to show —
upgrades end to end, rotating tokens, header policy, connection reuse, timeouts, pieces that
must be flushed as they arrive, and paths that must never leave the configured server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import certs
from agent import AgentMetrics
from kubeproxy import ConnectionPool, Proxy, TLSSettings, Upstream, load_kubeconfig
from protocol import Connection, ErrorCode, RequestReceived, Role
from tests.kit.waits import eventually, wait_for
from tunnel import StreamResetError, TunnelSession, TunnelStream, memory_channel_pair

if TYPE_CHECKING:
    from tests.agent.conftest import StartAgent, TestGateway, UpstreamPeer


async def test_an_upgrade_is_piped_both_ways(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    running = await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    stream = connection.open(
        "POST",
        "/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
        headers=(
            (b"Connection", b"Upgrade"),
            (b"Upgrade", b"SPDY/3.1"),
            (b"X-Stream-Protocol-Version", b"v4.channel.k8s.io"),
        ),
        end_stream=False,
        upgrade=True,
    )
    response = await wait_for(stream.response())
    assert response.status == 101
    headers = {name.lower(): value for name, value in response.headers}
    assert headers[b"upgrade"] == b"SPDY/3.1"
    assert headers[b"connection"] == b"Upgrade"
    recorded = upstream_peer.requests[-1]
    assert recorded.header("upgrade") == "SPDY/3.1"
    assert recorded.header("connection") == "Upgrade"
    assert recorded.header("x-stream-protocol-version") == "v4.channel.k8s.io"

    # The peer's first bytes came in the same packet as its 101 head: none may be lost.
    assert await _read_exactly(stream, 6) == b"hello:"
    await stream.write(b"ping")
    assert await _read_exactly(stream, 4) == b"ping"
    await stream.write(b"bye")
    assert await _read_exactly(stream, 3) == b"bye"
    assert await wait_for(stream.read()) == b""  # the peer closed: the agent ended its side
    stream.end()
    await wait_for(running.agent.proxy.wait_idle())
    agent = running.agent
    assert agent.metrics.sample("planelink_agent_streams_total", outcome="upgraded") == 1
    assert agent.metrics.sample("planelink_agent_body_bytes_total", direction="to_upstream") == 7
    # A connection that served an upgrade is never reused.
    assert (agent.pool.active, agent.pool.idle) == (0, 0)
    reply = await connection.request("GET", "/api")
    assert json.loads(reply.body)["connection"] != recorded.connection


async def test_the_service_account_token_is_reread_as_it_rotates(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    root = tmp_path / "serviceaccount"
    root.mkdir()
    (root / "token").write_text("token-one")
    (root / "ca.crt").write_bytes(upstream_peer.ca_pem)
    environ = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(upstream_peer.port),
    }
    await start_agent(in_cluster_root=root, environ=environ)
    connection = await fake_gateway.next_connection()

    assert (await connection.request("GET", "/api/v1/pods")).status == 200
    assert upstream_peer.requests[-1].header("authorization") == "Bearer token-one"

    # The kubelet rotates a projected token by swapping the file.
    staging = root / "..token.new"
    staging.write_text("token-two\n")
    staging.replace(root / "token")
    assert (await connection.request("GET", "/api/v1/pods")).status == 200
    assert upstream_peer.requests[-1].header("authorization") == "Bearer token-two"


async def test_headers_host_and_credentials_are_the_agents_own(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig", token="mine"))
    connection = await fake_gateway.next_connection()
    reply = await connection.request(
        "GET",
        "/api/v1/namespaces?limit=1",
        headers=(
            (b"Host", b"evil.example.com"),
            (b"Authorization", b"Bearer the-callers"),
            (b"Impersonate-User", b"jane"),
            (b"Impersonate-Group", b"devs"),
            (b"Impersonate-Group", b"ops"),
            (b"Expect", b"100-continue"),
            (b"Connection", b"X-Caller-Hop"),
            (b"X-Caller-Hop", b"dropped"),
            (b"Accept", b"application/json"),
        ),
    )
    assert reply.status == 200
    recorded = upstream_peer.requests[-1]
    assert recorded.target == "/api/v1/namespaces?limit=1"
    assert recorded.header("host") == f"127.0.0.1:{upstream_peer.port}"
    assert [value for name, value in recorded.headers if name.lower() == b"authorization"] == [
        b"Bearer mine"
    ]
    assert recorded.header("impersonate-user") == "jane"
    groups = [value for name, value in recorded.headers if name.lower() == b"impersonate-group"]
    assert groups == [b"devs", b"ops"]
    assert recorded.header("accept") == "application/json"
    for absent in ("expect", "x-caller-hop"):
        assert recorded.header(absent) is None
    # Hop-by-hop headers of the response (those its Connection header names) stop here too.
    assert reply.header("x-hop") is None
    assert reply.header("connection") is None
    assert reply.header("content-length") == str(len(reply.body))


async def test_keep_alive_connections_are_reused_and_expire(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    running = await start_agent(
        # Long enough that /two finds /one's connection still idle, however slow the machine.
        kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"),
        pool_idle_timeout=2.0,
    )
    connection = await fake_gateway.next_connection()
    first = (await connection.request("GET", "/one")).json()["connection"]
    second = (await connection.request("GET", "/two")).json()["connection"]
    assert first == second
    assert running.agent.pool.idle == 1
    # The idle connection expires, and the peer sees it closed.
    await eventually(
        lambda: running.agent.pool.idle == 0 and upstream_peer.open_connections == 0,
        within=10,
        message="never: running.agent.pool.idle == 0 and upstream_peer.open_connections == 0",
    )
    third = (await connection.request("GET", "/three")).json()["connection"]
    assert third != first


async def test_a_connection_the_server_closed_is_not_used_again(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    for _ in range(5):
        # /close answers with keep-alive and then hangs up: the next request on that
        # connection would fail; the agent notices the close or retries on a new one.
        assert (await connection.request("GET", "/close")).status == 200
        assert (await connection.request("GET", "/after")).status == 200


async def test_a_bodiless_request_is_retried_once_when_a_kept_connection_drops_it(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    first = await connection.request("GET", "/drop-next")
    # The server takes the next request on that connection and hangs up without an answer,
    # as a server closing an idle connection at that very moment does.
    second = await connection.request("GET", "/after")
    assert second.status == 200
    assert second.json()["connection"] != first.json()["connection"]
    assert upstream_peer.dropped == 1  # it was sent on the kept connection, then retried


async def test_pieces_are_passed_on_as_they_arrive(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    stream = connection.open("GET", "/follow?follow=true")
    response = await wait_for(stream.response())
    assert response.status == 200
    assert dict(response.headers).get(b"Transfer-Encoding") is None  # the gateway re-frames
    for line in (b"first line\n", b"second line\n", b"third line\n"):
        # The peer sends the next line only now: it can only arrive if the last one was
        # passed on at once, not held back for more.
        upstream_peer.follow.put_nowait(line)
        assert await _read_exactly(stream, len(line)) == line
    upstream_peer.follow.put_nowait(None)
    assert await wait_for(stream.read()) == b""


async def test_no_response_head_in_time_gives_a_504(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    running = await start_agent(
        kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"),
        upstream_response_timeout=0.3,
    )
    connection = await fake_gateway.next_connection()
    reply = await connection.request("GET", "/hang")
    assert reply.status == 504
    status = reply.json()
    assert (status["reason"], status["code"]) == ("Timeout", 504)
    assert "no response from the API server" in status["message"]
    assert running.agent.pool.active == 0


async def test_an_upstream_failure_after_the_head_resets_the_stream(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    running = await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    stream = connection.open("GET", "/break")
    assert (await wait_for(stream.response())).status == 200
    received = bytearray()
    with pytest.raises(StreamResetError) as reset:
        await _read_into(stream, received)
    assert reset.value.code is ErrorCode.CONNECT_ERROR
    assert "closed in the middle of a message body" in reset.value.message
    # What was passed on before the failure may arrive or be dropped with the reset.
    assert b"0123456789".startswith(bytes(received))
    await wait_for(running.agent.proxy.wait_idle())
    assert (running.agent.pool.active, running.agent.pool.idle) == (0, 0)
    metrics = running.agent.metrics
    assert metrics.sample("planelink_agent_streams_total", outcome="upstream_error") == 1


async def test_a_response_head_too_large_for_the_tunnel_gives_a_502(
    start_agent: StartAgent, fake_gateway: TestGateway, upstream_peer: UpstreamPeer, tmp_path: Path
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    reply = await connection.request("GET", "/huge-head")  # over the gateway's 64 KiB limit
    assert reply.status == 502
    # The agent's reader refuses a head over 64 KiB before the tunnel's own limit could.
    assert "the message head is larger than 65536 bytes" in reply.json()["message"]
    assert (await connection.request("GET", "/api")).status == 200  # the tunnel is fine


async def test_a_body_longer_than_its_content_length_is_refused(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    connection = await fake_gateway.next_connection()
    before = len(upstream_peer.requests)
    reply = await connection.request(
        "POST", "/api/v1/things", headers=((b"Content-Length", b"4"),), body=b"smuggled-more"
    )
    assert reply.status == 400
    assert "Content-Length" in reply.json()["message"]
    # Nothing past the declared length reached the server as a request of its own.
    assert all(r.target == "/api/v1/things" for r in upstream_peer.requests[before:])


# -- requests may only go to the configured server -------------------------------------------


@pytest.fixture
async def proxy_with_rewrite(
    upstream_peer: UpstreamPeer, tmp_path: Path
) -> AsyncIterator[tuple[TunnelSession, list[RequestReceived]]]:
    """A gateway session whose requests reach the proxy rewritten by the test: the protocol
    itself refuses most malformed heads, and the proxy must refuse them too, on its own."""
    rewrites: list[RequestReceived] = []
    upstream = load_kubeconfig(upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    pool = ConnectionPool(upstream)
    proxy = Proxy(pool=pool, metrics=AgentMetrics(), response_timeout=5.0)

    async def handler(stream: TunnelStream, request: RequestReceived) -> None:
        await proxy.handle(stream, rewrites.pop(0) if rewrites else request)

    gateway_end, agent_end = memory_channel_pair()
    fake_gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY))
    agent = TunnelSession(agent_end, Connection(Role.AGENT), request_handler=handler)
    tasks = [asyncio.create_task(fake_gateway.run()), asyncio.create_task(agent.run())]
    await fake_gateway.wait_ready()
    yield fake_gateway, rewrites
    fake_gateway.close("test over")
    await asyncio.gather(*tasks)
    pool.close()


@pytest.mark.parametrize(
    ("path", "target"),
    [
        (b"http://evil.example.com/api", b""),
        (b"evil.example.com:443", b""),
        (b"*", b""),
        (b"/api", b"metrics-server"),
    ],
)
async def test_requests_for_anywhere_else_are_refused(
    proxy_with_rewrite: tuple[TunnelSession, list[RequestReceived]],
    upstream_peer: UpstreamPeer,
    path: bytes,
    target: bytes,
) -> None:
    fake_gateway, rewrites = proxy_with_rewrite
    stream = fake_gateway.open_stream(method="GET", path="/placeholder", end_stream=True)
    original = RequestReceived(1, b"GET", b"/placeholder", (), b"", upgrade=False)
    rewrites.append(dataclasses.replace(original, path=path, target=target))
    response = await wait_for(stream.response())
    body = bytearray()
    while chunk := await wait_for(stream.read()):
        body += chunk
    assert response.status == 400
    status = json.loads(body)
    assert (status["kind"], status["reason"]) == ("Status", "BadRequest")
    assert upstream_peer.requests == []


async def test_an_upstream_needs_no_more_than_its_own_address() -> None:
    upstream = Upstream(scheme="https", host="::1", port=6443, base_path="/k8s/")
    assert upstream.url == "https://[::1]:6443/k8s"
    assert upstream.authorization() is None


async def _read_into(stream: TunnelStream, into: bytearray) -> None:
    while chunk := await wait_for(stream.read()):
        into += chunk


async def _read_exactly(stream: TunnelStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await wait_for(stream.read())
        assert chunk, f"the stream ended after {bytes(data)!r}"
        data += chunk
    return bytes(data)


async def test_the_agent_takes_at_most_max_streams_at_once(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    await start_agent(kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"), max_streams=2)
    connection = await fake_gateway.next_connection()
    await wait_for(connection.session.wait_ready())
    hanging = [connection.open("GET", "/hang") for _ in range(2)]
    with pytest.raises(StreamResetError) as refused:
        connection.open("GET", "/one")
    assert refused.value.code is ErrorCode.REFUSED_STREAM
    for stream in hanging:
        stream.reset(ErrorCode.CANCEL, "done")
    # Once those are closed, a new stream is taken again.
    await eventually(
        lambda: connection.session.available_streams == 2,
        within=10,
        message="never: connection.session.available_streams == 2",
    )
    reply = await connection.request("GET", "/one")
    assert reply.status == 200


def test_a_given_ca_is_the_only_one_trusted() -> None:
    """With a CA given (kubeconfig data, the in-cluster file, a direct plane's), no public CA
    of the system can stand in for the API server's: the context holds that CA alone."""
    ca = certs.create_ca("cluster-ca")
    context = TLSSettings(
        ca_data=ca.certificate_pem(), ca_file=None, client_cert_pem=None, client_key_pem=None
    ).context()
    trusted = context.get_ca_certs(binary_form=True)
    assert trusted == [ca.certificate.public_bytes(Encoding.DER)]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
