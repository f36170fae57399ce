"""The agent proxying to a real kube-apiserver: requests, bodies, watches, large lists, resets,
failures, and the in-cluster configuration, as seen from a test gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import yaml

import certs
import http1
from envtest import KubeAPIServer, free_port
from kubeproxy import Upstream
from protocol import ErrorCode, SendLimits, Settings
from tests.kit.waits import eventually, wait_for
from tunnel import StreamResetError, TunnelStream

if TYPE_CHECKING:
    from tests.agent.conftest import GatewayConnection, RunningAgent, StartAgent, TestGateway

PLANE = "agent-tests/edge"


async def _connect(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    plane_server: KubeAPIServer,
    *,
    upstream_http2: bool,
) -> tuple[RunningAgent, GatewayConnection]:
    running = await start_agent(
        kubeconfig=plane_server.kubeconfig_path, upstream_http2=upstream_http2
    )
    connection = await fake_gateway.next_connection()
    await wait_for(connection.session.wait_ready())
    return running, connection


@pytest.fixture
async def connected(
    start_agent: StartAgent, fake_gateway: TestGateway, plane_server: KubeAPIServer
) -> tuple[RunningAgent, GatewayConnection]:
    """An agent of the real API server (by kubeconfig, HTTP/2 as by default), connected to
    the test gateway."""
    return await _connect(start_agent, fake_gateway, plane_server, upstream_http2=True)


@pytest.fixture
async def connected_http1(
    start_agent: StartAgent, fake_gateway: TestGateway, plane_server: KubeAPIServer
) -> tuple[RunningAgent, GatewayConnection]:
    """The same with `--no-upstream-http2`: one HTTP/1.1 connection per open request."""
    return await _connect(start_agent, fake_gateway, plane_server, upstream_http2=False)


class Lines:
    """Newline-delimited JSON from a stream (a watch), one object at a time."""

    def __init__(self, stream: TunnelStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def next(self) -> Any:
        while b"\n" not in self.buffer:
            chunk = await self.stream.read()
            if not chunk:
                raise EOFError("the stream ended")
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return json.loads(line)


def _configmap(plane_namespace: str, name: str, **data: str) -> bytes:
    metadata = {"name": name, "namespace": plane_namespace}
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    return json.dumps(manifest).encode()


async def test_get_namespaces_through_the_agent(
    connected: tuple[RunningAgent, GatewayConnection], plane_namespace: str
) -> None:
    _, connection = connected
    reply = await connection.request(
        "GET", "/api/v1/namespaces", headers=((b"Accept", b"application/json"),)
    )
    assert reply.status == 200
    assert reply.header("content-type") == "application/json"
    names = {item["metadata"]["name"] for item in reply.json()["items"]}
    assert {"default", "kube-system", plane_namespace} <= names


async def test_hello_says_which_plane_and_versions(
    connected: tuple[RunningAgent, GatewayConnection],
) -> None:
    _, connection = connected
    peer = await connection.session.wait_ready()
    assert connection.path == f"/agent/v1/connect?plane={PLANE}"
    assert connection.subprotocol == "planelink.v1"
    assert peer.identity["plane"] == PLANE
    assert peer.identity["agent-id"] == "agent-under-test"
    assert peer.identity["agent-version"]
    assert peer.identity["kubernetes-version"].startswith("v1.32")
    assert peer.capabilities == ("upgrade", "replicas")


@pytest.mark.parametrize("upstream_http2", [True, False], ids=["http2", "http1"])
async def test_create_a_configmap_then_get_it(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    plane_server: KubeAPIServer,
    plane_namespace: str,
    upstream_http2: bool,
) -> None:
    running, connection = await _connect(
        start_agent, fake_gateway, plane_server, upstream_http2=upstream_http2
    )
    collection = f"/api/v1/namespaces/{plane_namespace}/configmaps"
    body = _configmap(plane_namespace, "with-length", colour="blue")
    created = await connection.request(
        "POST",
        collection,
        headers=((b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body))),
        body=body,
    )
    assert created.status == 201, created.body
    # Without Content-Length the agent sends the body upstream chunked.
    chunked = await connection.request(
        "POST",
        collection,
        headers=((b"Content-Type", b"application/json"),),
        body=_configmap(plane_namespace, "chunked", colour="green"),
    )
    assert chunked.status == 201, chunked.body

    fetched = await connection.request("GET", f"{collection}/with-length")
    assert fetched.status == 200
    assert fetched.json()["data"] == {"colour": "blue"}
    listed = await connection.request("GET", collection)
    names = {item["metadata"]["name"] for item in listed.json()["items"]}
    assert names >= {"with-length", "chunked"}
    metrics = running.agent.metrics
    protocol = "http2" if upstream_http2 else "http1"
    assert metrics.sample("planelink_agent_upstream_requests_total", protocol=protocol) == 4


async def test_a_watch_delivers_events_while_it_is_open(
    connected: tuple[RunningAgent, GatewayConnection],
    plane_server: KubeAPIServer,
    plane_namespace: str,
) -> None:
    _, connection = connected
    collection = f"/api/v1/namespaces/{plane_namespace}/configmaps"
    watch = connection.open("GET", f"{collection}?watch=1")
    assert (await wait_for(watch.response())).status == 200
    events = Lines(watch)

    # One object created through the tunnel itself, alongside the open watch...
    created = await connection.request(
        "POST", collection, body=_configmap(plane_namespace, "first")
    )
    assert created.status == 201
    event = await wait_for(events.next())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "first")
    # ...and one behind the agent's back, by kubectl.
    await plane_server.akubectl("create", "configmap", "second", "-n", plane_namespace)
    event = await wait_for(events.next())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "second")
    watch.reset(ErrorCode.CANCEL, "test done")


@pytest.mark.parametrize("upstream_http2", [True, False], ids=["http2", "http1"])
async def test_a_large_list_streams_through_with_bounded_memory(
    start_agent: StartAgent,
    fake_gateway: TestGateway,
    plane_server: KubeAPIServer,
    plane_namespace: str,
    upstream_http2: bool,
) -> None:
    running, connection = await _connect(
        start_agent, fake_gateway, plane_server, upstream_http2=upstream_http2
    )
    await _create_many(plane_server, plane_namespace, count=2000, size=3072)
    agent = running.agent
    # What may be in flight for one stream: one piece in the proxy's hands, the protocol's
    # send queue for the stream, and the credit the gateway granted.
    bound = http1.READ_SIZE + SendLimits().max_stream_buffer + Settings().initial_stream_window

    stream = connection.open("GET", f"/api/v1/namespaces/{plane_namespace}/configmaps")
    assert (await wait_for(stream.response())).status == 200
    received = bytearray()
    in_flight_peak = 0
    while chunk := await wait_for(stream.read()):
        received += chunk
        taken = agent.metrics.sample("planelink_agent_body_bytes_total", direction="to_gateway")
        in_flight_peak = max(in_flight_peak, int(taken) - len(received))
        await asyncio.sleep(0)  # a slow reader: the agent may run ahead, as far as it can
    assert len(json.loads(received)["items"]) == 2000
    assert len(received) > 4 * bound  # the body is much larger than what may be in flight
    assert in_flight_peak <= bound
    assert agent.proxy.stats.peak_held_bytes <= http1.READ_SIZE
    assert agent.proxy.stats.held_bytes == 0
    if upstream_http2:
        # The stream that served the list ended; its connection stays for the next ones.
        assert agent.h2_pool is not None
        assert [len(c.exchanges) for c in agent.h2_pool.connections] == [0]
        requests = "planelink_agent_upstream_requests_total"
        assert agent.metrics.sample(requests, protocol="http2") == 1
        assert agent.metrics.sample(requests, protocol="http1") == 0
    else:
        # The connection that served the list was read to its end: it went back to the pool.
        assert agent.pool.active == 0
        assert agent.pool.idle >= 1


async def test_a_reset_mid_watch_ends_the_handler_and_the_upstream_watch(
    connected_http1: tuple[RunningAgent, GatewayConnection],
    plane_server: KubeAPIServer,
    plane_namespace: str,
) -> None:
    """Over HTTP/1.1 (over HTTP/2: test_agent_kube_h2, a reset ends the stream only)."""
    running, connection = connected_http1
    agent = running.agent
    await plane_server.akubectl("create", "configmap", "present", "-n", plane_namespace)
    watches_before = await _settled_watches(plane_server)
    agent.pool.close()  # no idle connection: the watch gets a connection of its own

    watch = connection.open("GET", f"/api/v1/namespaces/{plane_namespace}/configmaps?watch=true")
    assert (await wait_for(watch.response())).status == 200
    event = await wait_for(Lines(watch).next())
    assert event["object"]["metadata"]["name"] == "present"
    assert (agent.proxy.stats.active, agent.pool.active) == (1, 1)
    # (Awaited, not read once: the API server's own watches restart now and then.)
    await _until_watches(plane_server, watches_before + 1)

    watch.reset(ErrorCode.CANCEL, "the caller went away")
    await wait_for(agent.proxy.wait_idle())
    session = agent.session
    assert session is not None
    await eventually(
        lambda: session.running_handlers == 0 and session.open_streams == 0,
        within=10,
        message="never: session.running_handlers == 0 and session.open_streams == 0",
    )
    assert (agent.pool.active, agent.pool.idle) == (0, 0)  # aborted, not pooled
    # The API server saw its watch end too (its own gauge of long-running requests).
    await _until_watches(plane_server, watches_before)
    with pytest.raises(StreamResetError):
        await watch.read()


async def test_an_unreachable_api_server_gives_a_502_status(
    start_agent: StartAgent, fake_gateway: TestGateway
) -> None:
    unreachable = Upstream(scheme="https", host="127.0.0.1", port=free_port(), token="t")
    running = await start_agent(upstream=unreachable)
    connection = await fake_gateway.next_connection()
    reply = await connection.request("GET", "/api/v1/namespaces")
    assert reply.status == 502
    assert reply.header("content-type") == "application/json"
    status = reply.json()
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 502, "InternalError")
    assert "connection refused" in status["message"]
    metrics = running.agent.metrics
    assert metrics.sample("planelink_agent_streams_total", outcome="upstream_error") == 1


async def test_an_untrusted_api_server_certificate_gives_a_502(
    start_agent: StartAgent, fake_gateway: TestGateway, plane_server: KubeAPIServer, tmp_path: Path
) -> None:
    config = plane_server.kubeconfig()
    other_ca = certs.create_ca("not the API server's CA").certificate_pem()
    config["clusters"][0]["cluster"]["certificate-authority-data"] = base64.b64encode(
        other_ca
    ).decode()
    path = tmp_path / "wrong-ca.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    await start_agent(kubeconfig=path)
    connection = await fake_gateway.next_connection()
    reply = await connection.request("GET", "/api")
    assert reply.status == 502
    assert "certificate not trusted" in reply.json()["message"]


async def test_in_cluster_configuration_from_a_service_account_folder(
    start_agent: StartAgent, fake_gateway: TestGateway, plane_server: KubeAPIServer, tmp_path: Path
) -> None:
    root = tmp_path / "serviceaccount"
    root.mkdir()
    (root / "token").write_text(plane_server.admin_token + "\n")
    (root / "ca.crt").write_bytes(plane_server.ca_file.read_bytes())
    (root / "namespace").write_text("openchoreo-data-plane")
    environ = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(plane_server.port),
    }
    running = await start_agent(in_cluster_root=root, environ=environ)
    assert running.agent.upstream.url == f"https://127.0.0.1:{plane_server.port}"
    connection = await fake_gateway.next_connection()
    reply = await connection.request("GET", "/api/v1/namespaces/default")
    assert reply.status == 200
    assert reply.json()["metadata"]["name"] == "default"


async def test_an_upgrade_the_api_server_refuses_is_relayed_as_a_response(
    connected: tuple[RunningAgent, GatewayConnection], plane_namespace: str
) -> None:
    running, connection = connected
    stream = connection.open(
        "POST",
        f"/api/v1/namespaces/{plane_namespace}/pods/missing/exec?command=sh&stdout=true",
        headers=(
            (b"Connection", b"Upgrade"),
            (b"Upgrade", b"SPDY/3.1"),
            (b"X-Stream-Protocol-Version", b"v4.channel.k8s.io"),
        ),
        end_stream=False,
        upgrade=True,
    )
    response = await wait_for(stream.response())
    assert response.status == 404
    body = bytearray()
    while chunk := await wait_for(stream.read()):
        body += chunk
    assert json.loads(body)["reason"] == "NotFound"
    stream.end()
    await wait_for(running.agent.proxy.wait_idle())
    assert running.agent.pool.active == 0


# -- helpers ----------------------------------------------------------------------------------


async def _create_many(
    server: KubeAPIServer, plane_namespace: str, *, count: int, size: int
) -> None:
    """Create ConfigMaps directly on the API server (not through the agent), 32 at a time."""
    context = ssl.create_default_context(cafile=str(server.ca_file))
    headers = {"Authorization": f"Bearer {server.admin_token}", "Content-Type": "application/json"}
    url = f"{server.url}/api/v1/namespaces/{plane_namespace}/configmaps"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=32), headers=headers
    ) as client:

        async def create(index: int) -> None:
            body = _configmap(plane_namespace, f"cm-{index:04d}", payload="x" * size)
            async with client.post(url, data=body) as answer:
                assert answer.status == 201, await answer.text()

        await wait_for(asyncio.gather(*(create(i) for i in range(count))), 120)


async def _settled_watches(server: KubeAPIServer) -> int:
    """ConfigMap watches the API server is serving, once the count holds still: watches of
    earlier tests on this shared server may still be ending (nothing announces when)."""

    async def settled() -> int:
        previous = await server.watches_served("configmaps")
        while True:
            await asyncio.sleep(0.2)
            current = await server.watches_served("configmaps")
            if current == previous:
                return current
            previous = current

    return await wait_for(settled(), 30)


async def _until_watches(server: KubeAPIServer, count: int) -> None:
    """Returns once the API server serves `count` ConfigMap watches."""

    last: int | None = None

    async def reached() -> None:
        nonlocal last
        while True:
            last = await server.watches_served("configmaps")
            if last == count:
                return
            await asyncio.sleep(0.05)  # the API server's gauge announces nothing

    try:
        await wait_for(reached())
    except TimeoutError:
        raise AssertionError(f"{count} ConfigMap watches expected, {last} seen last") from None
