"""Direct-mode planes through the gateway's own kubeproxy pool, against a small HTTP server:
the probe and callers share the pool, changed credentials drain, a removed plane closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

import certs
from certs import plane_ref
from gateway.direct import DirectPlanes, DirectSettings
from gateway.interfaces import DirectCredentials, PlaneUnreachable
from gateway.metrics import GatewayMetrics
from kubeproxy import LocalStream
from protocol import ErrorCode
from tests.kit.waits import scaled, wait_for
from tunnel import StreamResetError

TIMEOUT = scaled(10.0)
PLANE = plane_ref("org", "prod")
CA_PEM = certs.create_ca("direct-plane-ca").certificate_pem()


@dataclass
class FakeApiServer:
    """Answers /readyz and /version at once, and /watch with one chunk and then nothing
    until the client goes; remembers the Authorization each request carried."""

    port: int = 0
    connections: int = 0
    authorizations: list[str] = field(default_factory=list)
    watch_ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                for line in lines[1:]:
                    if line.lower().startswith("authorization:"):
                        self.authorizations.append(line.split(":", 1)[1].strip())
                if path == "/watch":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
                    )
                    await writer.drain()
                    await reader.read()  # until the proxy lets go of the watch
                    self.watch_ended.set()
                    return
                body = f"answer to {path}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def api_server() -> AsyncIterator[FakeApiServer]:
    fake = FakeApiServer()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake
        server.close()


def credentials(api_server: FakeApiServer, bearer: str = "token-1") -> DirectCredentials:
    return DirectCredentials(
        server=f"http://127.0.0.1:{api_server.port}", ca_pem=CA_PEM, bearer_token=bearer
    )


@pytest.fixture
async def planes() -> AsyncIterator[DirectPlanes]:
    planes = DirectPlanes(settings=DirectSettings(drain_grace=TIMEOUT, max_streams=2))
    yield planes
    await planes.stop()


def get(planes: DirectPlanes, path: str) -> LocalStream:
    served = planes.backend(PLANE)
    assert served is not None
    return served.open_stream(method="GET", path=path, headers=[], end_stream=True, upgrade=False)


async def open_watch(
    planes: DirectPlanes, api_server: FakeApiServer, bearer: str = "token-1"
) -> LocalStream:
    """A watch open through `planes`, served with `bearer` (the plane is set to it)."""
    planes.set(PLANE, credentials(api_server, bearer))
    watch = get(planes, "/watch")
    response = await wait_for(watch.response())
    assert response.status == 200
    return watch


async def cut(watch: LocalStream, api_server: FakeApiServer) -> StreamResetError:
    """How `watch` was reset, once its caller and the API server both saw it end."""
    with pytest.raises(StreamResetError) as reset:
        await wait_for(body_of(watch))
    await wait_for(api_server.watch_ended.wait())
    return reset.value


async def body_of(stream: LocalStream) -> bytes:
    body = b""
    while piece := await stream.read():
        body += piece
    return body


async def test_the_probe_and_callers_share_one_pool(
    planes: DirectPlanes, api_server: FakeApiServer
) -> None:
    assert planes.set(PLANE, credentials(api_server))
    assert not planes.set(PLANE, credentials(api_server))  # the same credentials: no change
    answer = await planes.fetch(PLANE, "/readyz", limit=TIMEOUT)
    assert (answer.status, answer.body) == (200, "answer to /readyz")
    assert answer.url == f"http://127.0.0.1:{api_server.port}/readyz"

    stream = get(planes, "/api/v1/namespaces")
    response = await wait_for(stream.response())
    assert response.status == 200
    assert await body_of(stream) == b"answer to /api/v1/namespaces"
    assert stream.done
    served = planes.backend(PLANE)
    assert served is not None
    assert served.pool.opened == 1  # the caller's request reused the probe's connection
    assert api_server.connections == 1
    assert api_server.authorizations == ["Bearer token-1", "Bearer token-1"]


async def test_a_server_url_with_a_path_prefixes_every_request(
    planes: DirectPlanes, api_server: FakeApiServer
) -> None:
    # A Rancher-style server URL: the API server is below a path of its host.
    server = f"http://127.0.0.1:{api_server.port}/k8s/clusters/c-1/"
    planes.set(PLANE, DirectCredentials(server=server, ca_pem=CA_PEM, bearer_token="t"))
    answer = await planes.fetch(PLANE, "/readyz", limit=TIMEOUT)
    assert answer.body == "answer to /k8s/clusters/c-1/readyz"

    stream = get(planes, "/api/v1/namespaces?limit=1")
    assert (await wait_for(stream.response())).status == 200
    assert await body_of(stream) == b"answer to /k8s/clusters/c-1/api/v1/namespaces?limit=1"


async def test_changed_credentials_serve_new_requests_and_drain_open_ones(
    planes: DirectPlanes, api_server: FakeApiServer
) -> None:
    watch = await open_watch(planes, api_server, "old")
    assert await watch.read() == b"first"
    old = planes.backend(PLANE)

    assert planes.set(PLANE, credentials(api_server, "new"))
    assert planes.backend(PLANE) is not old
    fresh = get(planes, "/version")
    await wait_for(fresh.response())
    assert await body_of(fresh) == b"answer to /version"
    assert api_server.authorizations == ["Bearer old", "Bearer new"]
    assert not api_server.watch_ended.is_set()  # the open watch goes on meanwhile

    await planes.stop()  # ends the drain at once: the watch is cut, upstream too
    assert (await cut(watch, api_server)).code is ErrorCode.CONNECTION_LOST


async def test_a_removed_plane_cuts_its_requests_at_once(
    planes: DirectPlanes, api_server: FakeApiServer
) -> None:
    watch = await open_watch(planes, api_server)
    assert planes.remove(PLANE)
    assert not planes.remove(PLANE)
    assert planes.backend(PLANE) is None
    assert not planes.serves(PLANE)
    assert (await cut(watch, api_server)).code is ErrorCode.CONNECTION_LOST


async def test_a_caller_reset_ends_the_upstream_request(
    planes: DirectPlanes, api_server: FakeApiServer
) -> None:
    watch = await open_watch(planes, api_server)
    watch.reset(ErrorCode.CANCEL, "the caller went away")
    assert watch.done
    await wait_for(api_server.watch_ended.wait())


async def test_past_its_stream_limit_a_plane_refuses_new_streams(
    planes: DirectPlanes, api_server: FakeApiServer
) -> None:
    planes.set(PLANE, credentials(api_server))
    watches = [get(planes, "/watch"), get(planes, "/watch")]
    with pytest.raises(StreamResetError) as refused:
        get(planes, "/version")
    assert refused.value.code is ErrorCode.REFUSED_STREAM  # the caller endpoint answers 429
    for watch in watches:
        watch.reset()


async def test_unusable_credentials_are_served_by_nobody_and_probe_as_unreachable() -> None:
    metrics = GatewayMetrics()
    planes = DirectPlanes(metrics=metrics)
    bad = DirectCredentials(server="https://", ca_pem=CA_PEM, bearer_token="t")
    assert planes.set(PLANE, bad)
    assert planes.serves(PLANE)
    assert planes.backend(PLANE) is None  # callers get "no agent connected" (503)
    with pytest.raises(PlaneUnreachable) as unreachable:
        await planes.fetch(PLANE, "/readyz", limit=TIMEOUT)
    assert unreachable.value.kind == "config"
    assert list(planes.samples()) == []
    await planes.stop()


async def test_a_served_plane_counts_as_its_one_agent(api_server: FakeApiServer) -> None:
    metrics = GatewayMetrics()
    planes = DirectPlanes(metrics=metrics)
    planes.set(PLANE, credentials(api_server))
    connected = metrics.registry.get_sample_value(
        "planelink_gateway_agents_connected", {"plane": str(PLANE)}
    )
    assert connected == 1
    served = planes.backend(PLANE)
    assert served is not None
    report = served.describe()
    assert report["agentId"] == "direct"
    assert report["direct"] is True
    assert report["remoteAddress"] == f"http://127.0.0.1:{api_server.port}"
    await planes.stop()


async def test_a_replaced_plane_is_cut_when_its_drain_grace_is_over(
    api_server: FakeApiServer,
) -> None:
    planes = DirectPlanes(settings=DirectSettings(drain_grace=0.05))
    watch = await open_watch(planes, api_server, "old")
    planes.set(PLANE, credentials(api_server, "new"))
    assert (await cut(watch, api_server)).message == "drain grace over"
    await planes.stop()
