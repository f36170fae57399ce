"""1,000 watches through one agent to a real kube-apiserver over HTTP/2: the agent holds
ceil(1000 / the server's stream limit) connections, every watch sees its events, a watch nobody
reads stalls only itself, and cancelling one watch ends exactly that one on the API server."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest

from envtest import HTTP2_MAX_STREAMS_PER_CONNECTION, KubeAPIServer
from kubeproxy.h2pool import DEFAULT_STREAM_WINDOW, H2Exchange, H2Pool, connections_needed
from protocol import ErrorCode
from tests.agent.test_agent_kube import Lines, _create_many, _settled_watches, _until_watches
from tests.kit.waits import eventually, wait_for, within
from tunnel import TunnelStream

if TYPE_CHECKING:
    from tests.agent.conftest import GatewayConnection, RunningAgent, StartAgent, TestGateway

pytestmark = pytest.mark.kube

WATCHES = 1000
BIG_OBJECT = 300_000
"""Bytes of one ConfigMap of the unread watch's namespace: four of them are more than the
tunnel's stream window and the HTTP/2 stream window together, so that watch must stall."""


@pytest.fixture
async def connected(
    start_agent: StartAgent, fake_gateway: TestGateway, plane_server: KubeAPIServer
) -> tuple[RunningAgent, GatewayConnection]:
    running = await start_agent(
        kubeconfig=plane_server.kubeconfig_path,
        upstream_http2=True,
        max_streams=WATCHES + 100,
    )
    connection = await fake_gateway.next_connection()
    await wait_for(connection.session.wait_ready())
    return running, connection


def _namespace(server: KubeAPIServer) -> str:
    name = f"scale-{uuid.uuid4().hex[:8]}"
    server.kubectl("create", "namespace", name)
    return name


def _stalled(exchange: H2Exchange) -> bool:
    """The server may send the stream nothing more, and its bytes wait here."""
    h2_connection = exchange.connection.h2
    return (
        exchange.buffered > 0 and h2_connection.remote_flow_control_window(exchange.stream_id) == 0
    )


def _exchanges(pool: H2Pool) -> list[H2Exchange]:
    return [e for connection in pool.connections for e in connection.exchanges.values()]


async def _next_names(watches: list[TunnelStream], lines: dict[TunnelStream, Lines]) -> set[str]:
    """The name in each watch's next event (one set: they all saw the same object)."""

    async def name(watch: TunnelStream) -> str:
        event = await lines[watch].next()
        return str(event["object"]["metadata"]["name"])

    async with within(120):
        return set(await asyncio.gather(*(name(watch) for watch in watches)))


async def test_a_thousand_watches_over_few_connections(
    connected: tuple[RunningAgent, GatewayConnection], plane_server: KubeAPIServer
) -> None:
    running, connection = connected
    agent = running.agent
    pool = agent.h2_pool
    assert pool is not None
    read_namespace, unread_namespace = _namespace(plane_server), _namespace(plane_server)
    before = await _settled_watches(plane_server)

    # The unread watch first: it shares its connection with the first of the others.
    unread = connection.open("GET", f"/api/v1/namespaces/{unread_namespace}/configmaps?watch=1")
    assert (await wait_for(unread.response())).status == 200
    path = f"/api/v1/namespaces/{read_namespace}/configmaps?watch=1"
    watches = [connection.open("GET", path) for _ in range(WATCHES - 1)]
    async with within(180):
        statuses = await asyncio.gather(*(watch.response() for watch in watches))
    assert {response.status for response in statuses} == {200}
    await _until_watches(plane_server, before + WATCHES)

    # As few connections as the server's stream limit allows, and the gauge says the same.
    max_streams = pool.connections[0].max_streams
    assert max_streams == HTTP2_MAX_STREAMS_PER_CONNECTION
    needed = connections_needed(WATCHES, max_streams)
    assert (pool.open_connections, pool.opened) == (needed, needed)
    assert len(_exchanges(pool)) == WATCHES
    metrics = agent.metrics
    assert metrics.sample("planelink_agent_upstream_connections", state="active") == needed
    assert metrics.sample("planelink_agent_upstream_requests_total", protocol="http2") == WATCHES
    assert agent.pool.active == 0  # no watch on HTTP/1.1

    # The watch nobody reads stops at the API server once its windows are full: what it holds
    # here and what its consumer took since the window last reopened (less than half of it)
    # make the whole window, and the server may send it nothing more.
    await _create_many(plane_server, unread_namespace, count=4, size=BIG_OBJECT)
    await eventually(
        lambda: any(_stalled(e) for e in _exchanges(pool)),
        within=30,
        message="never: the unread watch's HTTP/2 stream window full",
    )
    stalled = next(e for e in _exchanges(pool) if _stalled(e))
    assert stalled.buffered > DEFAULT_STREAM_WINDOW // 2
    assert len(stalled.connection.exchanges) == max_streams  # it shares a full connection

    # ...and every other watch, those beside it included, sees an event.
    lines = {watch: Lines(watch) for watch in watches}
    await plane_server.akubectl("create", "configmap", "first", "-n", read_namespace)
    assert await _next_names(watches, lines) == {"first"}

    # Cancelling one watch ends exactly that watch: on the API server, in the pool.
    cancelled, *kept = watches
    cancelled.reset(ErrorCode.CANCEL, "the caller went away")
    await _until_watches(plane_server, before + WATCHES - 1)
    await eventually(
        lambda: len(_exchanges(pool)) == WATCHES - 1,
        within=10,
        message="never: one stream fewer in the pool",
    )
    assert pool.open_connections == needed
    await plane_server.akubectl("create", "configmap", "second", "-n", read_namespace)
    assert await _next_names(kept, lines) == {"second"}

    # The unread watch resumes when read: its events were held back, not lost.
    unread_lines = Lines(unread)
    async with within(60):
        names = [(await unread_lines.next())["object"]["metadata"]["name"] for _ in range(4)]
    assert sorted(names) == [f"cm-{index:04d}" for index in range(4)]

    for watch in (unread, *kept):
        watch.reset(ErrorCode.CANCEL, "test done")
    await _until_watches(plane_server, before)
    await eventually(lambda: not _exchanges(pool), within=10, message="never: no stream left")
    assert metrics.sample("planelink_agent_upstream_connections", state="active") == 0
