"""One HTTP/2 caller connection with 1,000 watches through the gateway, against the real API
server: each sees its event, and cancelling one (RST_STREAM) ends exactly that watch on the API
server (its own `apiserver_longrunning_requests` says so) while the others go on.

The caller is `kubeproxy.h2pool.H2Pool` pointed at the gateway with the caller's kubeconfig and
held to one connection, so all 1,000 streams share it; the gateway advertises at least that many
concurrent streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from envtest.pytest_plugin import ServerFactory
from kubeproxy.h2pool import H2Exchange, H2Pool, connections_needed
from kubeproxy.upstream import load_kubeconfig
from tests.e2e.http2_lab import Lab, http2_lab, unique
from tests.kit.waits import eventually, scaled, wait_for, within

T = TypeVar("T")
WATCHES = 1000
UNREAD_EVENTS = 200


@pytest.fixture
async def lab(kube_servers: ServerFactory, tmp_path: Path) -> AsyncIterator[Lab]:
    async with http2_lab(kube_servers("e2e-http2"), tmp_path) as lab:
        yield lab


class Watch:
    """One watch on a stream of the caller's HTTP/2 connection, read an event at a time."""

    def __init__(self, exchange: H2Exchange) -> None:
        self.exchange = exchange
        self._buffer = b""

    async def next_event(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            piece = await self.exchange.body_piece()
            assert piece, "the watch ended"
            self._buffer += piece
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event


async def _each(
    watches: list[Watch], step: Callable[[Watch], Awaitable[T]], seconds: float
) -> list[T]:
    """`step` of every watch at once, within `seconds` (scaled)."""
    async with within(seconds):
        return await asyncio.gather(*(step(watch) for watch in watches))


async def test_one_http2_connection_carries_1000_watches_each_cancelled_alone(lab: Lab) -> None:
    namespace = unique("h2-watches")
    await lab.direct("create", "namespace", namespace)
    since = await lab.list_version(f"/api/v1/namespaces/{namespace}/configmaps")
    before = await lab.server.watches_served("configmaps")
    target = f"/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion={since}"

    pool = H2Pool(load_kubeconfig(lab.kubeconfig), max_connections=1, connect_timeout=scaled(10))
    try:
        first = await pool.request("GET", target)
        [connection] = pool.connections
        assert connection.max_streams >= WATCHES, "the gateway's SETTINGS_MAX_CONCURRENT_STREAMS"
        rest = [await pool.request("GET", target) for _ in range(WATCHES - 1)]
        watches = [Watch(exchange) for exchange in [first, *rest]]
        heads = await _each(watches, lambda w: w.exchange.response_head(), 120)
        assert {head.status for head in heads} == {200}
        await eventually(
            lambda: lab.serves_watches("configmaps", before + WATCHES),
            within=60,
            interval=0.5,
            message=f"the API server serves {WATCHES} more watches",
        )
        assert (pool.opened, len(pool.connections)) == (1, 1)  # one caller connection for all
        # The agent carries them on the fewest HTTP/2 connections the API server allows.
        h2_pool = lab.local.agent(lab.plane).h2_pool
        assert h2_pool is not None
        per_connection = h2_pool.connections[0].max_streams
        assert len(h2_pool.connections) == connections_needed(WATCHES, per_connection)

        await lab.direct("create", "configmap", "first", "-n", namespace)
        events = await _each(watches, Watch.next_event, 120)
        assert {(e["type"], e["object"]["metadata"]["name"]) for e in events} == {
            ("ADDED", "first")
        }

        cancelled = watches.pop(WATCHES // 2)
        cancelled.exchange.cancel()
        await eventually(
            lambda: lab.serves_watches("configmaps", before + WATCHES - 1),
            within=30,
            interval=0.2,
            message="the API server ended exactly the cancelled watch",
        )
        assert lab.local.gateway is not None
        [gateway_agent] = lab.local.gateway.agents.agents(lab.plane)
        assert gateway_agent.session.open_streams == WATCHES - 1

        await lab.direct("create", "configmap", "second", "-n", namespace)
        events = await _each(watches, Watch.next_event, 120)
        assert {(e["type"], e["object"]["metadata"]["name"]) for e in events} == {
            ("ADDED", "second")
        }
        assert await lab.server.watches_served("configmaps") == before + WATCHES - 1
    finally:
        pool.close()
    await eventually(
        lambda: lab.serves_watches("configmaps", before),
        within=60,
        interval=0.5,
        message="the caller's connection closed: the API server ended every watch",
    )


async def test_an_unread_watch_does_not_stall_the_others_on_its_connection(lab: Lab) -> None:
    """Flow control end to end: a watch its caller does not read stops at its own windows (the
    caller's stream, the tunnel's credit, the agent's stream to the API server), while a watch
    beside it on the same caller connection, and on the agent's, takes every event."""
    namespace = unique("h2-unread")
    await lab.direct("create", "namespace", namespace)
    since = await lab.list_version(f"/api/v1/namespaces/{namespace}/configmaps")
    target = f"/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion={since}"
    pool = H2Pool(load_kubeconfig(lab.kubeconfig), max_connections=1, connect_timeout=scaled(10))
    try:
        unread, read = [Watch(await pool.request("GET", target)) for _ in range(2)]
        for watch in (unread, read):
            assert (await watch.exchange.response_head()).status == 200

        async def names_read() -> list[str]:
            events = [await read.next_event() for _ in range(UNREAD_EVENTS)]
            return [event["object"]["metadata"]["name"] for event in events]

        reading = asyncio.create_task(names_read())
        # Far more than every window on the unread watch's way holds. One at a time: the API
        # server ends a watch that falls a few events behind a burst (its cacher's buffer per
        # watcher is small), and the watch read here must never be that one.
        await lab.create_configmaps(namespace, UNREAD_EVENTS, size=8 * 1024, at_once=1)
        names = await wait_for(reading, 120)
        assert names == [f"cm-{index:04d}" for index in range(UNREAD_EVENTS)]
        assert pool.opened == 1
        # What the unread watch holds here is its stream window, no more.
        assert unread.exchange.buffered <= pool.connections[0].h2.local_settings.initial_window_size
    finally:
        pool.close()
