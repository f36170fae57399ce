"""Fixtures for every test: the real API servers (envtest) and the pinned Helm binary."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from certs import PlaneRef
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.callers import CallerSettings
from protocol import Connection, Role
from tunnel import Heartbeat, RequestHandler, TunnelSession, WebSocketChannel
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

pytest_plugins = ["envtest.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]
_AGENT_NUMBERS = itertools.count(1)


class DialAgent(Protocol):
    """What the `dial_agent` fixture is (see `_dial_agent`)."""

    def __call__(
        self,
        gateway: Gateway,
        plane: PlaneRef,
        agent_ssl: ssl.SSLContext,
        handler: RequestHandler,
        *,
        claim: str | None = None,
    ) -> Awaitable[tuple[TunnelSession, asyncio.Task[str]]]: ...


@pytest.fixture(scope="session")
def helm() -> Path:
    """Helm at the pinned version, built from the Go module proxy by deploy/build-helm.sh
    (cached after the first build)."""
    built = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture
def loopback_gateway_settings() -> Callable[[Path], GatewaySettings]:
    """Settings of a gateway on loopback (ports chosen by the kernel, a 1 s / 5 s heartbeat)
    that reads `server.crt`, `server.key`, `caller-ca.crt` and `planes.yaml` from a folder."""

    def settings(directory: Path) -> GatewaySettings:
        return GatewaySettings(
            server_certificate=directory / "server.crt",
            server_key=directory / "server.key",
            caller_ca=directory / "caller-ca.crt",
            planes_file=directory / "planes.yaml",
            agents=AgentListenerSettings(host="127.0.0.1", port=0, heartbeat=Heartbeat(1, 5)),
            callers=CallerSettings(host="127.0.0.1", port=0, request_timeout=10),
            operator_host="127.0.0.1",
            operator_port=0,
            drain_grace=2,
        )

    return settings


async def _dial_agent(
    gateway: Gateway,
    plane: PlaneRef,
    agent_ssl: ssl.SSLContext,
    handler: RequestHandler,
    *,
    claim: str | None = None,
) -> tuple[TunnelSession, asyncio.Task[str]]:
    """A stand-in agent of `plane` (claiming `claim` in its URL, if given), connected to
    `gateway`: HELLOs exchanged and the agent registered. Returns its session and the task
    that runs it; the caller ends both."""
    url = (
        f"wss://127.0.0.1:{gateway.agent_listener.port}{AGENT_CONNECT_PATH}?plane={claim or plane}"
    )
    agent_id = f"fake-{next(_AGENT_NUMBERS)}"
    websocket = await connect(
        url,
        ssl=agent_ssl,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        ping_interval=None,
    )
    session = TunnelSession(
        WebSocketChannel(websocket),
        Connection(Role.AGENT, identity={IDENTITY_PLANE: str(plane), IDENTITY_AGENT_ID: agent_id}),
        heartbeat=Heartbeat(1, 5),
        request_handler=handler,
    )
    task = asyncio.create_task(session.run())
    await session.wait_ready()
    while not any(a.agent_id == agent_id for a in gateway.agents.agents(plane)):
        await gateway.agents.wait_for_change()
    return session, task


@pytest.fixture
def dial_agent() -> DialAgent:
    """`await dial_agent(gateway, plane, agent_ssl, handler, claim=None)`: a registered
    stand-in agent, as (session, task)."""
    return _dial_agent
