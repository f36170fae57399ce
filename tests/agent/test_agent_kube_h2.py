"""The agent with `--upstream-http2`: against a real kube-apiserver, requests and watches go over
HTTP/2, many on one connection, and a caller that goes away ends its watch only; upgrades, and
servers without h2 (the upstream test peer), stay on HTTP/1.1."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from envtest import KubeAPIServer
from protocol import ErrorCode
from tests.agent.test_agent_kube import Lines, _configmap, _settled_watches, _until_watches
from tests.kit.waits import wait_for

if TYPE_CHECKING:
    from tests.agent.conftest import (
        GatewayConnection,
        RunningAgent,
        StartAgent,
        TestGateway,
        UpstreamPeer,
    )


@pytest.fixture
async def connected(
    start_agent: StartAgent, fake_gateway: TestGateway, plane_server: KubeAPIServer
) -> tuple[RunningAgent, GatewayConnection]:
    running = await start_agent(kubeconfig=plane_server.kubeconfig_path, upstream_http2=True)
    connection = await fake_gateway.next_connection()
    await wait_for(connection.session.wait_ready())
    return running, connection


async def test_requests_go_over_http2(
    connected: tuple[RunningAgent, GatewayConnection], plane_namespace: str
) -> None:
    running, connection = connected
    h2_pool = running.agent.h2_pool
    assert h2_pool is not None
    collection = f"/api/v1/namespaces/{plane_namespace}/configmaps"
    created = await connection.request(
        "POST", collection, body=_configmap(plane_namespace, "over-h2", key="value")
    )
    assert created.status == 201, created.body
    listed = await connection.request("GET", collection)
    assert listed.status == 200
    assert [item["metadata"]["name"] for item in listed.json()["items"]] == ["over-h2"]
    assert (h2_pool.protocol, h2_pool.opened) == ("h2", 1)


async def test_cancelling_one_watch_ends_that_watch_only_on_the_api_server(
    connected: tuple[RunningAgent, GatewayConnection],
    plane_server: KubeAPIServer,
    plane_namespace: str,
) -> None:
    running, connection = connected
    h2_pool = running.agent.h2_pool
    assert h2_pool is not None
    watches_before = await _settled_watches(plane_server)
    collection = f"/api/v1/namespaces/{plane_namespace}/configmaps"
    watches = [connection.open("GET", f"{collection}?watch=1") for _ in range(3)]
    for watch in watches:
        assert (await wait_for(watch.response())).status == 200
    await _until_watches(plane_server, watches_before + 3)
    assert h2_pool.opened == 1  # three watches, one connection

    cancelled, *kept = watches
    cancelled.reset(ErrorCode.CANCEL, "the caller went away")
    await _until_watches(plane_server, watches_before + 2)
    created = await connection.request("POST", collection, body=_configmap(plane_namespace, "x"))
    assert created.status == 201
    for watch in kept:
        event = await wait_for(Lines(watch).next())
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "x")
        watch.reset(ErrorCode.CANCEL, "test done")
    assert h2_pool.opened == 1


async def test_upgrades_and_servers_without_h2_stay_on_http1(
    start_agent: StartAgent, fake_gateway: TestGateway, upstream_peer: UpstreamPeer, tmp_path: Path
) -> None:
    kubeconfig = upstream_peer.kubeconfig(tmp_path / "kubeconfig")
    running = await start_agent(kubeconfig=kubeconfig, upstream_http2=True)
    h2_pool = running.agent.h2_pool
    assert h2_pool is not None
    connection = await fake_gateway.next_connection()
    await wait_for(connection.session.wait_ready())
    upgrade = connection.open(
        "POST",
        "/api/v1/namespaces/default/pods/web/exec?command=sh",
        headers=((b"Connection", b"Upgrade"), (b"Upgrade", b"SPDY/3.1")),
        end_stream=False,
        upgrade=True,
    )
    assert (await wait_for(upgrade.response())).status == 101
    protocol_after_upgrade = h2_pool.protocol
    assert protocol_after_upgrade is None  # an upgrade never asks the HTTP/2 pool
    upgrade.reset(ErrorCode.CANCEL, "test done")
    reply = await connection.request("GET", "/api")
    assert reply.status == 200
    assert h2_pool.protocol == "http/1.1"  # the peer offers no h2: the request fell back
    assert h2_pool.opened == 0
    assert upstream_peer.requests[-1].target == "/api"


@pytest.mark.parametrize(
    ("declared", "sent"),
    [(4, b"smuggled-more"), (1000, b'{"kind": "ConfigMap"}')],
    ids=["longer", "shorter"],
)
async def test_a_body_that_breaks_its_content_length_is_refused(
    connected: tuple[RunningAgent, GatewayConnection],
    plane_namespace: str,
    declared: int,
    sent: bytes,
) -> None:
    running, connection = connected
    agent = running.agent
    assert agent.h2_pool is not None
    collection = f"/api/v1/namespaces/{plane_namespace}/configmaps"
    length = (b"Content-Length", str(declared).encode())
    reply = await connection.request("POST", collection, headers=(length,), body=sent)
    assert reply.status == 400, reply.body
    assert "does not match its Content-Length" in reply.json()["message"]
    refused = agent.metrics.sample("planelink_agent_streams_total", outcome="bad_request")
    assert refused == 1
    # The API server never took the stream as a whole request: it was reset, alone.
    assert all(not c.exchanges for c in agent.h2_pool.connections)
    listed = await connection.request("GET", collection)
    assert listed.status == 200
    assert listed.json()["items"] == []
    assert agent.h2_pool.opened == 1
    assert agent.metrics.sample("planelink_agent_upstream_requests_total", protocol="http2") == 2
