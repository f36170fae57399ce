"""The agent's HTTP/2 client against a real kube-apiserver: multiplexing, watches, flow control."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from envtest import KubeAPIServer
from kubeproxy import load_kubeconfig
from kubeproxy.h2pool import H2Exchange, H2Pool, connections_needed
from tests.kit.waits import wait_for, within

WATCHES = 300


@pytest.fixture
async def pool(plane_server: KubeAPIServer) -> AsyncIterator[H2Pool]:
    h2_pool = H2Pool(load_kubeconfig(plane_server.kubeconfig_path))
    yield h2_pool
    h2_pool.close()


async def _body(exchange: H2Exchange) -> bytes:
    data = bytearray()
    while piece := await wait_for(exchange.body_piece()):
        data += piece
    return bytes(data)


async def _create_configmap(pool: H2Pool, namespace: str, name: str, size: int = 10) -> None:
    body = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"x": "y" * size},
        }
    ).encode()
    exchange = await pool.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        end=False,
    )
    await wait_for(exchange.send(body, end=True))
    head = await wait_for(exchange.response_head())
    assert head.status == 201, await _body(exchange)
    await _body(exchange)


async def _watch(pool: H2Pool, namespace: str) -> H2Exchange:
    exchange = await pool.request("GET", f"/api/v1/namespaces/{namespace}/configmaps?watch=1")
    assert (await wait_for(exchange.response_head())).status == 200
    return exchange


async def _next_event(exchange: H2Exchange) -> dict[str, object]:
    line = bytearray()
    while b"\n" not in line:
        piece = await wait_for(exchange.body_piece())
        assert piece, "the watch ended"
        line += piece
    event: dict[str, object] = json.loads(line.split(b"\n", 1)[0])
    return event


async def _next_event_any(exchange: H2Exchange, *, skip: int) -> dict[str, object]:
    """The event after the first `skip` ones, reading line by line from the stream."""
    buffer = exchange.__dict__.setdefault("_test_lines", bytearray())
    while buffer.count(b"\n") <= skip:
        piece = await wait_for(exchange.body_piece())
        assert piece, "the watch ended"
        buffer += piece
    event: dict[str, object] = json.loads(buffer.split(b"\n")[skip])
    return event


async def test_a_get_goes_over_h2(pool: H2Pool) -> None:
    exchange = await pool.request("GET", "/version")
    head = await wait_for(exchange.response_head())
    assert head.status == 200
    assert pool.protocol == "h2"
    assert json.loads(await _body(exchange))["gitVersion"].startswith("v1.")
    assert exchange.closed
    assert pool.opened == 1


async def test_a_list(pool: H2Pool, plane_namespace: str) -> None:
    await _create_configmap(pool, plane_namespace, "listed")
    exchange = await pool.request("GET", f"/api/v1/namespaces/{plane_namespace}/configmaps")
    assert (await wait_for(exchange.response_head())).status == 200
    names = [item["metadata"]["name"] for item in json.loads(await _body(exchange))["items"]]
    assert "listed" in names
    assert pool.opened == 1


async def test_a_watch_sees_an_event(pool: H2Pool, plane_namespace: str) -> None:
    watch = await _watch(pool, plane_namespace)
    await _create_configmap(pool, plane_namespace, "seen")
    event = await _next_event(watch)
    assert event["type"] == "ADDED"
    assert event["object"]["metadata"]["name"] == "seen"  # type: ignore[index]
    watch.cancel()
    assert pool.opened == 1


async def test_many_watches_share_few_connections(pool: H2Pool, plane_namespace: str) -> None:
    async with within(120):
        watches = [await _watch(pool, plane_namespace) for _ in range(WATCHES)]
    max_streams = pool.connections[0].max_streams
    assert 0 < max_streams < 2**31
    assert pool.opened == connections_needed(WATCHES, max_streams)
    await _create_configmap(pool, plane_namespace, "for-all")
    for watch in (watches[0], watches[-1]):
        assert (await _next_event(watch))["type"] == "ADDED"
    for watch in watches:
        watch.cancel()
    assert all(not connection.exchanges for connection in pool.connections)


async def test_an_unread_watch_stalls_only_itself(pool: H2Pool, plane_namespace: str) -> None:
    unread = await _watch(pool, plane_namespace)
    # Far more than one stream window of events for the watch nobody reads.
    for index in range(8):
        await _create_configmap(pool, plane_namespace, f"big-{index}", size=30_000)
    exchange = await pool.request("GET", f"/api/v1/namespaces/{plane_namespace}/configmaps")
    assert exchange.connection is unread.connection
    assert (await wait_for(exchange.response_head())).status == 200
    assert len(json.loads(await _body(exchange))["items"]) >= 8
    # The unread watch holds at most its stream window here.
    assert 0 < unread.buffered <= 65_535
    # It resumes when read.
    seen = 0
    async with within(30):
        while seen < 8:
            event = await _next_event_any(unread, skip=seen)
            assert event["type"] == "ADDED"
            seen += 1
    unread.cancel()


async def test_cancelling_one_watch_closes_that_stream_only(
    pool: H2Pool, plane_namespace: str
) -> None:
    cancelled, kept = await _watch(pool, plane_namespace), await _watch(pool, plane_namespace)
    connection = kept.connection
    cancelled.cancel()
    assert cancelled.closed
    assert cancelled.stream_id not in connection.exchanges
    assert kept.stream_id in connection.exchanges
    name = f"after-{uuid.uuid4().hex[:6]}"
    await _create_configmap(pool, plane_namespace, name)
    event = await _next_event(kept)
    assert event["object"]["metadata"]["name"] == name  # type: ignore[index]
    assert not connection.closed
    assert pool.opened == 1
    kept.cancel()
