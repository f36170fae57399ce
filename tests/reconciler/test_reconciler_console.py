"""A DataPlane's conditions, written by the reconciler to a real API server, on the console page
of the operator port: fed back through the ConditionSink port as the watch brings them, and
gone with the DataPlane."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

import certs
from gateway.console.state import ConsoleState
from gateway.direct import DirectPlanes
from gateway.metrics import GatewayMetrics
from gateway.operator import operator_server
from gateway.reconciler import Reconciler
from tests.kit.waits import eventually
from tests.reconciler.conftest import TIMEOUT, Kit


@pytest.fixture
async def console_state(kit: Kit) -> AsyncIterator[ConsoleState]:
    """A reconciler feeding a console's conditions."""
    state = ConsoleState()
    direct = DirectPlanes()
    reconciler = Reconciler(
        client=kit.client,
        trust=kit.trust,
        agents=kit.agents,
        direct=direct,
        settings=kit.settings(kit.namespace),
        registry=CollectorRegistry(),
        conditions=state.conditions,
    )
    async with asyncio.timeout(TIMEOUT):
        await reconciler.start()
    yield state
    await reconciler.stop()
    await direct.stop()


@pytest.fixture
async def page_url(kit: Kit, console_state: ConsoleState) -> AsyncIterator[str]:
    server = operator_server(
        host="127.0.0.1",
        port=0,
        trust=kit.trust,
        agents=kit.agents,
        metrics=GatewayMetrics(),
        ready=lambda: (True, "ready"),
        state=console_state,
    )
    await server.start()
    yield f"http://127.0.0.1:{server.port}/"
    await server.stop()


async def _chips(url: str, plane: certs.PlaneRef) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        html = await answer.text()
    card = html[html.index(f'data-plane="{plane}"') :]
    card = card[: card.index('class="plane-body"')]
    return [
        f"{kind}:{name} {reason}"
        for kind, name, reason in re.findall(
            r'<span class="chip (\w+)"[^>]*><strong>(\w+)</strong> (\w+)</span>', card
        )
    ]


async def test_the_page_shows_a_dataplanes_conditions(
    kit: Kit, console_state: ConsoleState, page_url: str
) -> None:
    ca = certs.create_ca("agents of plane-c")
    plane = certs.plane_ref(kit.namespace, "plane-c")
    await kit.create(
        kit.client,
        kit.agent_dataplane("plane-c", kit.namespace, {"value": ca.certificate_pem().decode()}),
    )
    await kit.await_dataplane(
        kit.client, kit.namespace, "plane-c", kit.has_condition("Ready", "False")
    )
    not_ready = [
        "bad:Ready NoAgentConnected",
        "bad:Connected NoAgentConnected",
        "ok:GatewayProvisioned Provisioned",
    ]

    async def chips_are(wanted: list[str]) -> bool:
        return await _chips(page_url, plane) == wanted

    await eventually(lambda: chips_are(not_ready), within=20, message="conditions not shown")

    kit.connect_agent(kit.agents, plane, ca)
    ready = ["ok:Ready Ready", "ok:Connected AgentConnected", "ok:GatewayProvisioned Provisioned"]
    await eventually(lambda: chips_are(ready), within=20, message="Ready not shown")
    async with aiohttp.ClientSession() as http, http.get(f"{page_url}planes") as answer:
        (report,) = [p for p in (await answer.json())["planes"] if p["name"] == "plane-c"]
    assert [(c["type"], c["status"], c["message"]) for c in report["conditions"]] == [
        ("Ready", "True", "1 agent connected"),
        ("Connected", "True", "1 agent connected"),
        ("GatewayProvisioned", "True", "the gateway holds this plane's credentials"),
    ]
    assert all(c["lastTransitionTime"] for c in report["conditions"])  # as the API server has it

    await kit.delete_dataplane(kit.client, kit.namespace, "plane-c")
    await eventually(
        lambda: console_state.conditions.of(plane) is None,
        within=20,
        message="conditions kept after the DataPlane was deleted",
    )
