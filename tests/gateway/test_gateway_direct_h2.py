"""Direct-mode planes over HTTP/2, against a real kube-apiserver: the gateway's own pool puts a
plane's requests and watches on one connection, counts them by protocol, and keeps HTTP/1.1
for `upstream_http2=False` (the gateway's --no-direct-upstream-http2)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from certs import plane_ref
from envtest import KubeAPIServer
from gateway.direct import DirectPlane, DirectPlanes, DirectSettings
from gateway.interfaces import DirectCredentials
from gateway.metrics import GatewayMetrics
from kubeproxy import LocalStream
from protocol import ErrorCode
from tests.kit.waits import eventually, scaled, wait_for

pytestmark = pytest.mark.kube

TIMEOUT = scaled(20.0)
PLANE = plane_ref("org", "direct-h2")
REQUESTS = "planelink_gateway_direct_upstream_requests_total"
CONNECTIONS = "planelink_gateway_direct_upstream_connections"


@pytest.fixture(scope="module")
def target(kube_servers: Callable[[str], KubeAPIServer]) -> KubeAPIServer:
    return kube_servers("direct-target")


@pytest.fixture
def target_namespace(target: KubeAPIServer) -> str:
    name = f"direct-h2-{uuid.uuid4().hex[:8]}"
    target.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def gateway_metrics() -> GatewayMetrics:
    return GatewayMetrics()


async def _serve(
    target: KubeAPIServer, settings: DirectSettings, metrics: GatewayMetrics
) -> AsyncIterator[DirectPlane]:
    planes = DirectPlanes(settings=settings, metrics=metrics)
    credentials = DirectCredentials(
        server=target.url, ca_pem=target.ca_file.read_bytes(), bearer_token=target.admin_token
    )
    planes.set(PLANE, credentials)
    served = planes.backend(PLANE)
    assert served is not None
    try:
        yield served
    finally:
        await planes.stop()


@pytest.fixture
async def plane(
    target: KubeAPIServer, gateway_metrics: GatewayMetrics
) -> AsyncIterator[DirectPlane]:
    async for served in _serve(target, DirectSettings(drain_grace=TIMEOUT), gateway_metrics):
        yield served


@pytest.fixture
async def plane_http1(
    target: KubeAPIServer, gateway_metrics: GatewayMetrics
) -> AsyncIterator[DirectPlane]:
    settings = DirectSettings(drain_grace=TIMEOUT, upstream_http2=False)
    async for served in _serve(target, settings, gateway_metrics):
        yield served


def _open(plane: DirectPlane, method: str, path: str, *, body: bytes | None = None) -> LocalStream:
    return plane.open_stream(
        method=method,
        path=path,
        headers=[(b"Content-Type", b"application/json")] if body is not None else [],
        end_stream=body is None,
        upgrade=False,
    )


async def _request(
    plane: DirectPlane, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    stream = _open(plane, method, path, body=body)
    if body is not None:
        await stream.write(body)
        stream.end()
    status = (await wait_for(stream.response(), TIMEOUT)).status
    answer = b""
    while piece := await wait_for(stream.read(), TIMEOUT):
        answer += piece
    return status, answer


async def _next_event(watch: LocalStream, buffer: bytearray) -> dict[str, object]:
    while b"\n" not in buffer:
        piece = await wait_for(watch.read(), TIMEOUT)
        assert piece, "the watch ended"
        buffer += piece
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    event: dict[str, object] = json.loads(line)
    return event


def _configmap(namespace: str, name: str) -> bytes:
    metadata = {"name": name, "namespace": namespace}
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}).encode()


async def test_requests_and_watches_share_one_http2_connection(
    plane: DirectPlane, gateway_metrics: GatewayMetrics, target_namespace: str
) -> None:
    collection = f"/api/v1/namespaces/{target_namespace}/configmaps"
    watches = [_open(plane, "GET", f"{collection}?watch=1") for _ in range(3)]
    for watch in watches:
        assert (await wait_for(watch.response(), TIMEOUT)).status == 200
    status, _ = await _request(plane, "POST", collection, _configmap(target_namespace, "one"))
    assert status == 201
    for watch in watches:
        event = await _next_event(watch, bytearray())
        assert event["type"] == "ADDED"

    assert plane.h2_pool is not None
    assert (plane.h2_pool.protocol, plane.h2_pool.opened) == ("h2", 1)
    assert plane.pool.opened == 0  # nothing went over HTTP/1.1
    metrics = plane.metrics
    assert metrics.sample(REQUESTS, protocol="http2") == 4
    assert metrics.sample(REQUESTS, protocol="http1") == 0
    assert metrics.sample(CONNECTIONS, state="active") == 1  # three watches: one connection

    # The gateway's own /metrics shows them by plane.
    by_plane = gateway_metrics.registry.get_sample_value
    assert by_plane(REQUESTS, {"plane": str(PLANE), "protocol": "http2"}) == 4
    assert by_plane(CONNECTIONS, {"plane": str(PLANE), "state": "active"}) == 1

    for watch in watches:
        watch.reset(ErrorCode.CANCEL, "test done")
    await eventually(
        lambda: metrics.sample(CONNECTIONS, state="idle") == 1,
        within=10,
        message="never: the connection idle once its streams ended",
    )
    assert metrics.sample(CONNECTIONS, state="active") == 0


async def test_the_probe_and_callers_share_one_http2_connection(
    plane: DirectPlane, target_namespace: str
) -> None:
    answer = await plane.fetch("/readyz", limit=TIMEOUT)
    assert (answer.status, answer.body) == (200, "ok")
    answer = await plane.fetch("/openapi/v2", limit=TIMEOUT)  # megabytes: cut at the limit
    assert answer.status == 200
    assert len(answer.body) == 300
    status, _ = await _request(plane, "GET", f"/api/v1/namespaces/{target_namespace}/configmaps")
    assert status == 200
    assert plane.metrics.sample(REQUESTS, protocol="http2") == 3
    assert plane.metrics.sample(REQUESTS, protocol="http1") == 0
    assert plane.h2_pool is not None
    assert plane.h2_pool.opened == 1
    assert plane.pool.opened == 0
    assert all(not c.exchanges for c in plane.h2_pool.connections)  # the cut one too


async def test_turned_off_every_request_goes_over_http1(
    plane_http1: DirectPlane, target_namespace: str
) -> None:
    assert plane_http1.h2_pool is None
    collection = f"/api/v1/namespaces/{target_namespace}/configmaps"
    status, _ = await _request(plane_http1, "POST", collection, _configmap(target_namespace, "x"))
    assert status == 201
    status, body = await _request(plane_http1, "GET", collection)
    assert status == 200
    assert [item["metadata"]["name"] for item in json.loads(body)["items"]] == ["x"]
    assert plane_http1.metrics.sample(REQUESTS, protocol="http1") == 2
    assert plane_http1.metrics.sample(REQUESTS, protocol="http2") == 0


async def test_a_wrong_token_gets_the_api_servers_401(target: KubeAPIServer) -> None:
    # kube-apiserver sends GOAWAY before its 401 to an unauthenticated HTTP/2 client: the
    # answer still comes through, and the next request gets a connection of its own.
    planes = DirectPlanes(settings=DirectSettings(drain_grace=TIMEOUT))
    credentials = DirectCredentials(
        server=target.url, ca_pem=target.ca_file.read_bytes(), bearer_token="not-the-token"
    )
    planes.set(PLANE, credentials)
    plane = planes.backend(PLANE)
    assert plane is not None
    try:
        for _ in range(2):
            status, body = await _request(plane, "GET", "/api")
            assert status == 401, body
            assert json.loads(body)["reason"] == "Unauthorized"
        assert plane.h2_pool is not None
        assert plane.h2_pool.opened == 2
        assert plane.h2_pool.open_connections == 0
    finally:
        await planes.stop()
