"""Callers through the gateway to fake agents: routing, streaming, refusals, failures."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from certs import plane_ref
from gateway import callers
from gateway.app import Gateway
from gateway.callers import CallerRefused, no_agent_message, route
from protocol import ErrorCode, RequestReceived
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.waits import wait_for
from tunnel import TunnelStream

A = "/planes/ns-a/plane-a/k8s"


def test_route_splits_plane_and_path() -> None:
    target = route("/planes/my-org/prod/k8s/api/v1/pods?watch=1&limit=5")
    assert target.plane == plane_ref("my-org", "prod")
    assert target.path == "/api/v1/pods?watch=1&limit=5"
    assert target.long_running
    assert route("/planes/my-org/prod/k8s").path == "/"
    assert not route("/planes/my-org/prod/k8s/api/v1/pods").long_running
    assert route("/planes/a/b/k8s/api/v1/namespaces/x/pods/p/exec?command=ls").long_running


@pytest.mark.parametrize(
    "target", ["/", "/planes/a/k8s/api", "/planes/a/b/c/api", "http://evil/planes/a/b/k8s/"]
)
def test_route_refuses_other_paths(target: str) -> None:
    with pytest.raises(CallerRefused) as refused:
        route(target)
    assert refused.value.status == 404


@pytest.mark.parametrize("target", ["/planes/Bad_NS/p/k8s/api", "/planes/ns/-p/k8s/api"])
def test_an_invalid_plane_is_refused_every_time(target: str) -> None:
    for _ in range(2):  # valid planes are remembered; invalid ones never
        with pytest.raises(CallerRefused) as refused:
            route(target)
        assert refused.value.status == 404


def test_the_planes_remembered_are_bounded() -> None:
    for i in range(3 * callers._PLANES_SEEN_LIMIT):
        assert route(f"/planes/ns/p{i}/k8s/").plane == plane_ref("ns", f"p{i}")
    assert len(callers._planes_seen) <= callers._PLANES_SEEN_LIMIT


def test_the_no_agent_message_says_since_when() -> None:
    plane = plane_ref("org", "prod")
    left = no_agent_message(plane, left_at=100.0, started_at=0.0, now=100.0 + 3 * 60 + 7.9)
    assert left.startswith(
        "no agent of dataplane org/prod is connected (the last one disconnected 3m07s ago); "
    )
    never = no_agent_message(plane, left_at=None, started_at=0.0, now=2 * 3600 + 5 * 60)
    assert "(none has connected since the gateway started 2h05m ago)" in never
    assert "planelink status" in never


async def test_request_reaches_the_agent_and_streams_back(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]):
        body = b"0123456789" * 100_000  # 1 MB each way
        async with caller.post(
            f"{A}/echo?x=1", data=body, headers={"Authorization": "Bearer secret", "X-Trace": "t1"}
        ) as response:
            assert response.status == 200
            assert await response.read() == body
            seen = {
                k.lower(): v for k, v in response.headers.items() if k.lower().startswith("x-seen-")
            }
    assert seen["x-seen-x-trace"] == "t1"
    assert "x-seen-authorization" not in seen  # the caller's credentials stay at the gateway
    assert "x-seen-host" not in seen


async def test_unknown_plane_is_404_status(caller: aiohttp.ClientSession) -> None:
    async with caller.get("/planes/nope/nope/k8s/api") as response:
        assert response.status == 404
        status = await response.json()
    assert status["kind"] == "Status"
    assert status["reason"] == "NotFound"
    assert status["message"].startswith("dataplane nope/nope not found: ")
    assert "kubectl get dataplanes -A" in status["message"]
    # kubectl's discovery drops a 404's message; its warning handler prints this one.
    assert response.headers["Warning"] == f'299 - "{status["message"]}"'


async def test_plane_without_agent_is_503_and_retry_after_only_while_agents_return(
    gateway: Gateway, caller: aiohttp.ClientSession
) -> None:
    # Just started: the plane's agents may be dialing back in, so callers retry soon...
    async with caller.get(f"{A}/api") as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
    # ...and later they are told at once, without a Retry-After that client-go would obey
    # ten times over before kubectl showed anything.
    gateway.trust.startup.agents_return_within = 0
    async with caller.get(f"{A}/api") as response:
        assert response.status == 503
        assert "Retry-After" not in response.headers
        status = await response.json()
    assert status["reason"] == "ServiceUnavailable"
    assert status["message"].startswith(
        "no agent of dataplane ns-a/plane-a is connected (none has connected since the gateway "
        "started "
    )
    assert response.headers["Warning"] == f'299 - "{status["message"]}"'


async def test_caller_impersonation_is_refused(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]),
        caller.get(f"{A}/echo", headers={"Impersonate-User": "system:admin"}) as response,
    ):
        assert response.status == 403
        assert "Impersonate-User" in (await response.json())["message"]


async def test_agent_death_fails_inflight_requests_at_once(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]) as agent, caller.get(f"{A}/forever?watch=1") as response:
        assert response.status == 200
        assert await response.content.readline() == b'{"type":"ADDED"}\n'
        await agent.stop()
        # The response had started: the connection is cut, not left hanging.
        with pytest.raises(aiohttp.ClientPayloadError):
            await wait_for(response.content.read(), 5)


async def test_agent_gone_before_head_is_503(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    started = asyncio.Event()

    async def stall(stream: TunnelStream, request: RequestReceived) -> None:
        started.set()
        await asyncio.Event().wait()

    async with connect_agent(planes[0], handler=stall) as agent:
        request = asyncio.create_task(caller.get(f"{A}/api/v1/pods"))
        await started.wait()
        await agent.stop()
        response = await wait_for(request, 5)
        assert response.status == 503
        assert "disconnected" in (await response.json())["message"]
        response.release()


async def test_caller_leaving_a_watch_cancels_the_agent_side(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]) as agent:
        response = await caller.get(f"{A}/forever?watch=1")
        assert await response.content.readline() == b'{"type":"ADDED"}\n'
        assert agent.session.running_handlers == 1
        response.close()  # the caller hangs up mid-watch
        await wait_for(agent.session.wait_idle(), 5)
        assert agent.session.running_handlers == 0
        await wait_for(gateway.agents.agents(planes[0])[0].session.wait_idle(), 5)


async def test_upgrade_becomes_a_byte_pipe(
    gateway: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]) as agent:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.callers.port, ssl=pki.caller_ssl(), server_hostname="127.0.0.1"
        )
        writer.write(
            f"POST {A}/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\n\r\nearly bytes ".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"upgrade: SPDY/3.1" in head.lower().replace(b"spdy", b"SPDY")
        writer.write(b"and more")
        expected = b"EARLY BYTES AND MORE"
        received = b""
        while len(received) < len(expected):
            received += await reader.read(100)
        assert received == expected
        writer.close()  # the caller hangs up: the agent's side of the pipe ends too
        await wait_for(agent.session.wait_idle(), 5)


async def test_operator_endpoints(
    gateway: Gateway, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]),
        aiohttp.ClientSession(f"http://127.0.0.1:{gateway.operator_port}") as http,
    ):
        async with http.get("/readyz") as ready:
            assert ready.status == 200
        async with http.get("/planes") as answer:
            report = {f"{p['namespace']}/{p['name']}": p for p in (await answer.json())["planes"]}
        assert report["ns-a/plane-a"]["connectedAgents"] == 1
        assert report["ns-a/plane-a"]["agents"][0]["agentId"].startswith("fake-")
        assert report["ns-b/plane-b"]["connectedAgents"] == 0
        async with http.get("/metrics") as metrics:
            text = await metrics.text()
        assert 'planelink_gateway_agents_connected{plane="ns-a/plane-a"} 1.0' in text


async def test_one_connection_carries_request_after_request(
    gateway: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.callers.port, ssl=pki.caller_ssl(), server_hostname="127.0.0.1"
        )
        try:
            for index in range(3):
                body = f"request {index}".encode()
                head_lines = f"POST {A}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}"
                writer.write(head_lines.encode() + b"\r\n\r\n" + body)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert b"connection: close" not in head.lower()
                # No Content-Length from the agent: the gateway frames the body as chunked.
                assert b"transfer-encoding: chunked" in head.lower()
                size = int(await reader.readuntil(b"\r\n"), 16)
                assert await reader.readexactly(size + 2) == body + b"\r\n"
                assert await reader.readuntil(b"\r\n\r\n") == b"0\r\n\r\n"
        finally:
            writer.close()


async def test_an_early_answer_streams_while_the_caller_is_still_uploading(
    gateway: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    """The agent answers before the body is in (as the echo does once it has a first piece),
    and the caller reads that answer before it sends the rest: the gateway waits on the
    response while the body is still being read from the same connection."""

    async def count_body(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(200, [(b"content-type", b"text/plain")])
        await stream.write(b"answering early\n")
        size = 0
        while piece := await stream.read():
            size += len(piece)
        await stream.write(b"read %d bytes\n" % size)
        stream.end()

    async with connect_agent(planes[0], handler=count_body):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.callers.port, ssl=pki.caller_ssl(), server_hostname="localhost"
        )
        try:
            writer.write(
                f"POST {A}/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n".encode()
                + b"01234"
            )
            head = await wait_for(reader.readuntil(b"\r\n\r\n"))
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"answering early\n" in await wait_for(reader.readuntil(b"early\n"))
            # The relay now waits on the agent while the body's reader waits on the caller.
            writer.write(b"56789")
            rest = await wait_for(reader.readuntil(b"bytes\n"))
            assert rest.endswith(b"read 10 bytes\n")
        finally:
            writer.transport.abort()


async def test_a_request_refused_unprocessed_goes_to_another_agent(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    """A tunnel going away (its GOAWAY says which streams it never processed) or an agent at
    its limit refuses a stream unprocessed: a request without a body is asked of another."""
    refused: list[bytes] = []

    async def refusing(stream: TunnelStream, request: RequestReceived) -> None:
        refused.append(request.path)
        stream.reset(ErrorCode.REFUSED_STREAM, "not processed")

    async with connect_agent(planes[0], handler=refusing), connect_agent(planes[0]):
        # Both idle: the first connected is picked first, and refuses.
        async with caller.get(f"{A}/echo") as response:
            assert response.status == 200
        assert refused == [b"/echo"]
        # A request with a body cannot be asked twice: the refusal reaches the caller.
        async with caller.post(f"{A}/echo", data=b"once") as response:
            assert response.status in {429, 502, 503}
        assert refused == [b"/echo", b"/echo"]
