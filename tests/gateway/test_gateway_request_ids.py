"""Request ids, the access log, and how long a caller waits for a plane's agent."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs
from structlog.typing import EventDict

from gateway.app import Gateway, GatewaySettings
from tests.kit.gateway_lab import AgentFactory, PlanePair
from tests.kit.waits import eventually, scaled, wait_for

A = "/planes/ns-a/plane-a/k8s"
REQUEST_ID = "Planelink-Request-Id"


@pytest.fixture
def agent_wait() -> float:
    return scaled(10)


@pytest.fixture
def access_log() -> bool:
    return True


@pytest.fixture
def loopback_gateway_settings(
    loopback_gateway_settings: Callable[[Path], GatewaySettings],
    agent_wait: float,
    access_log: bool,
) -> Callable[[Path], GatewaySettings]:
    def settings(directory: Path) -> GatewaySettings:
        base = loopback_gateway_settings(directory)
        callers = replace(base.callers, agent_wait=agent_wait, access_log=access_log)
        return replace(base, callers=callers, replica_id="replica-1")

    return settings


def access_lines(logs: list[EventDict]) -> list[EventDict]:
    return [line for line in logs if line["event"] == "access"]


async def logged(logs: list[EventDict], count: int) -> list[EventDict]:
    """The access lines, once there are `count` (a line is written after the answer)."""
    await eventually(
        lambda: len(access_lines(logs)) >= count, within=10, message=f"{count} access lines"
    )
    return access_lines(logs)


async def test_each_request_gets_a_fresh_id_that_the_agent_sees_too(
    connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    seen: list[tuple[str, str]] = []
    async with connect_agent(planes[0]):
        for _ in range(2):
            async with caller.get(f"{A}/echo") as response:
                assert response.status == 200
                seen.append(
                    (response.headers[REQUEST_ID], response.headers["x-seen-planelink-request-id"])
                )
    (first, first_at_agent), (second, second_at_agent) = seen
    assert first == first_at_agent
    assert second == second_at_agent
    assert first != second
    assert uuid.UUID(first).version == 4


async def test_a_caller_cannot_choose_its_request_id(
    connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]),
        caller.get(f"{A}/echo", headers={REQUEST_ID: "mine"}) as response,
    ):
        assert response.status == 400
        assert response.headers[REQUEST_ID] != "mine"  # a refusal has the gateway's id too


async def test_one_access_line_per_request_with_what_it_asked_for(
    connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]):
        with capture_logs() as logs:
            async with caller.get(f"{A}/api/v1/namespaces/team/configmaps?watch=1") as response:
                answered = response.headers[REQUEST_ID]
                assert response.status == 404  # the fake agent's answer to this path
            body = b"x" * 1000
            async with caller.put(f"{A}/echo", data=body) as response:
                assert await response.read() == body
            async with caller.get("/planes/nope/nope/k8s/api/v1/pods") as response:
                refused = response.headers[REQUEST_ID]
            watch, echo, unknown = await logged(logs, 3)
    assert watch["request_id"] == answered
    assert {key: watch[key] for key in ("verb", "resource", "namespace", "name", "status")} == {
        "verb": "watch",
        "resource": "configmaps",
        "namespace": "team",
        "name": "",
        "status": 404,
    }
    assert (watch["caller"], watch["auth"], watch["plane"], watch["replica"]) == (
        "jane",
        "certificate",
        "ns-a/plane-a",
        "replica-1",
    )
    assert "forwarded_to" not in watch
    assert (echo["verb"], echo["bytes_in"], echo["bytes_out"], echo["status"]) == (
        "put",
        1000,
        1000,
        200,
    )
    assert echo["duration"] > 0
    assert (unknown["request_id"], unknown["status"], unknown["verb"]) == (refused, 404, "list")
    assert unknown["plane"] == "nope/nope"


async def test_a_watch_is_logged_when_it_ends(
    connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]):
        with capture_logs() as logs:
            async with caller.get(f"{A}/forever?watch=1") as response:
                assert response.status == 200
                await wait_for(response.content.readline())
                assert not access_lines(logs)  # still open
            (line,) = await logged(logs, 1)
    assert line["status"] == 200
    assert line["bytes_out"] == len(b'{"type":"ADDED"}\n')


@pytest.mark.parametrize("access_log", [True, False])
async def test_the_access_log_can_be_turned_off(
    connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair, access_log: bool
) -> None:
    ids = []
    async with connect_agent(planes[0]):
        with capture_logs() as logs:
            # Two requests on one kept-alive connection: the first one's line is written before
            # the second is read.
            for _ in range(2):
                async with caller.get(f"{A}/echo") as response:
                    await response.read()
                    ids.append(response.headers[REQUEST_ID])  # the id is there all the same
            written = [line["request_id"] for line in access_lines(logs)]
    assert written[:1] == (ids[:1] if access_log else [])


async def test_a_request_waits_for_an_agent_that_is_coming_back(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    gateway.trust.startup.agents_return_within = 0
    async with connect_agent(planes[0]) as agent:
        await agent.stop()
    waiting = asyncio.create_task(caller.get(f"{A}/echo"))
    await eventually(
        lambda: gateway.callers._exchanges == 1, within=10, message="the request is in"
    )
    assert not waiting.done()  # no agent: it waits
    changed = gateway.agents.wait_for_change()
    async with connect_agent(planes[0]):
        await wait_for(changed)
        response = await wait_for(waiting, 20)
        assert response.status == 200
        response.release()


@pytest.mark.parametrize("agent_wait", [0.0])
async def test_a_plane_whose_agent_is_gone_is_answered_at_once(
    gateway: Gateway, connect_agent: AgentFactory, caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    gateway.trust.startup.agents_return_within = 0
    async with connect_agent(planes[0]) as agent:
        await agent.stop()
    started = asyncio.get_running_loop().time()
    async with caller.get(f"{A}/echo") as response:
        assert response.status == 503
        assert "Retry-After" not in response.headers
        status = await response.json()
    assert asyncio.get_running_loop().time() - started < scaled(2)
    assert status["message"].startswith(
        "no agent of dataplane ns-a/plane-a is connected (the last one disconnected 0s ago); "
    )
