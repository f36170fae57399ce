"""The agent's HTTP/2 client against a real kube-apiserver: multiplexing, watches, flow control."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from envtest import KubeAPIServer
from kubeproxy import TLSSettings, load_kubeconfig
from kubeproxy.h2pool import (
    ALPN,
    DEFAULT_STREAM_WINDOW,
    H2Exchange,
    H2Pool,
    Http2NotOffered,
    connections_needed,
)
from tests.kit.waits import eventually, wait_for, within

if TYPE_CHECKING:
    from tests.agent.conftest import UpstreamPeer

WATCHES = 300
IDLE_TIMEOUT = 0.5


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


class WatchEvents:
    """The events of a watch, one JSON line each, read as the test asks for them."""

    def __init__(self, exchange: H2Exchange) -> None:
        self.exchange = exchange
        self._buffer = bytearray()

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            piece = await wait_for(self.exchange.body_piece())
            assert piece, "the watch ended"
            self._buffer += piece
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        event: dict[str, Any] = json.loads(line)
        return event


async def test_a_get_goes_over_h2(pool: H2Pool) -> None:
    exchange = await pool.request("GET", "/version")
    head = await wait_for(exchange.response_head())
    assert head.status == 200
    assert pool.protocol == "h2"
    assert json.loads(await _body(exchange))["gitVersion"].startswith("v1.")
    assert exchange.closed
    assert pool.opened == 1


async def test_concurrent_first_requests_open_one_connection(pool: H2Pool) -> None:
    exchanges = await wait_for(
        asyncio.gather(*(pool.request("GET", "/version") for _ in range(10)))
    )
    for exchange in exchanges:
        assert (await wait_for(exchange.response_head())).status == 200
        await _body(exchange)
    assert (pool.opened, len(pool.connections)) == (1, 1)


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
    event = await WatchEvents(watch).next()
    assert event["type"] == "ADDED"
    assert event["object"]["metadata"]["name"] == "seen"
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
        assert (await WatchEvents(watch).next())["type"] == "ADDED"
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
    # The unread watch stopped at the API server once its stream window was full: it holds
    # exactly that window here, no more (240 kB of events were sent its way).
    await eventually(
        lambda: unread.buffered == DEFAULT_STREAM_WINDOW,
        within=10,
        message="never: the unread watch's window full",
    )
    assert not unread.connection.closed
    # It resumes when read.
    events = WatchEvents(unread)
    async with within(30):
        names = [(await events.next())["object"]["metadata"]["name"] for _ in range(8)]
    assert names == [f"big-{index}" for index in range(8)]
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
    event = await WatchEvents(kept).next()
    assert event["object"]["metadata"]["name"] == name
    assert not connection.closed
    assert pool.opened == 1
    kept.cancel()


async def test_connections_are_bounded_and_a_full_pool_waits_for_a_stream(
    plane_server: KubeAPIServer, plane_namespace: str
) -> None:
    pool = H2Pool(load_kubeconfig(plane_server.kubeconfig_path), max_connections=1)
    try:
        first = await _watch(pool, plane_namespace)
        room = first.connection.max_streams - 1
        watches = [first, *[await _watch(pool, plane_namespace) for _ in range(room)]]
        with capture_logs() as logs:
            waiting = asyncio.ensure_future(pool.request("GET", "/version"))
            await eventually(lambda: pool.waiting == 1, within=10, message="never waited")
        [warning] = [line for line in logs if line["log_level"] == "warning"]
        assert warning["connections"] == 1
        assert warning["streams_per_connection"] == first.connection.max_streams
        assert not waiting.done()
        watches.pop().cancel()
        exchange = await wait_for(waiting)
        assert (await wait_for(exchange.response_head())).status == 200
        assert pool.opened == 1
        for watch in watches:
            watch.cancel()
    finally:
        pool.close()


async def test_a_server_without_h2_is_left_to_http1(
    upstream_peer: UpstreamPeer, tmp_path: Path
) -> None:
    pool = H2Pool(load_kubeconfig(upstream_peer.kubeconfig(tmp_path / "kubeconfig")))
    try:
        with pytest.raises(Http2NotOffered):
            await wait_for(pool.request("GET", "/version"))
        assert pool.protocol == "http/1.1"
        assert (pool.opened, pool.connections) == (0, [])
        with pytest.raises(Http2NotOffered):  # remembered: no second connection attempt
            await pool.request("GET", "/version")
    finally:
        pool.close()


def test_the_http1_context_never_offers_h2() -> None:
    tls = TLSSettings(ca_data=None, ca_file=None, client_cert_pem=None, client_key_pem=None)
    plain, negotiating = tls.context(), tls.context(ALPN)
    assert plain is not negotiating
    assert (tls.context(), tls.context(ALPN)) == (plain, negotiating)  # built once each


async def test_a_connection_without_streams_closes_after_the_idle_timeout(
    plane_server: KubeAPIServer, plane_namespace: str
) -> None:
    pool = H2Pool(load_kubeconfig(plane_server.kubeconfig_path), idle_timeout=IDLE_TIMEOUT)
    try:
        watch = await _watch(pool, plane_namespace)
        busy = watch.connection
        await asyncio.sleep(IDLE_TIMEOUT * 2)  # the behaviour under test is a duration
        assert not busy.closed  # a stream is open: never idle
        watch.cancel()
        await eventually(lambda: busy.closed, within=10, message="never: the idle one closed")
        assert pool.connections == []
        exchange = await pool.request("GET", "/version")
        assert (await wait_for(exchange.response_head())).status == 200
        assert exchange.connection is not busy
        assert pool.opened == 2
    finally:
        pool.close()
