"""The in-process gateway lab: a real `Gateway` on loopback (real TLS, real WebSockets, real
tunnel sessions) with stand-in agents and an authenticated caller. Registered for the whole
suite by tests/conftest.py; a folder narrows or widens it by overriding `lab_planes`.

- `pki`: the lab's certificates and gateway files (`Pki`); `lab_planes`, `extra_planes`: what
  its planes.yaml names;
- `gateway`: the in-process `gateway.app.Gateway`, started, and stopped after the test (every
  fixture called `gateway` in this suite is such an object);
- `connect_agent(plane, bundle=, claim=, handler=)`: a stand-in agent, registered, as a
  context manager yielding a `FakeAgent`; `dial_agent`: the same, bare, for any gateway;
- `caller`: an aiohttp session with the caller certificate; `planes`: (PLANE_A, PLANE_B);
- `loopback_gateway_settings(folder)`: settings of such a gateway, for tests that build one.

It never starts processes or API servers: those are envtest's (`envtest.pytest_plugin`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

import certs
from certs import PlaneRef
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.callers import CallerSettings
from protocol import Connection, RequestReceived, Role
from tests.kit.waits import within
from tunnel import Heartbeat, RequestHandler, TunnelSession, TunnelStream, WebSocketChannel
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

PLANE_A = certs.plane_ref("ns-a", "plane-a")
PLANE_B = certs.plane_ref("ns-b", "plane-b")
PLANE_C = certs.plane_ref("ns-c", "plane-c")
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


@dataclass
class Pki:
    directory: Path
    gateway_ca: certs.CertificateBundle
    caller_ca: certs.CertificateBundle
    caller: certs.CertificateBundle
    agent_cas: dict[certs.PlaneRef, certs.CertificateBundle] = field(default_factory=dict)

    def agent_cert(self, plane: certs.PlaneRef) -> certs.CertificateBundle:
        return certs.issue_agent(self.agent_cas[plane], plane=plane)

    def agent_ssl(self, bundle: certs.CertificateBundle) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.gateway_ca.certificate_pem().decode())
        cert, key = (
            self.directory / f"agent-{id(bundle)}.crt",
            self.directory / f"agent-{id(bundle)}.key",
        )
        cert.write_bytes(bundle.chain_pem())
        key.write_bytes(bundle.private_key_pem())
        context.load_cert_chain(cert, key)
        return context

    def caller_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.gateway_ca.certificate_pem().decode())
        cert, key = self.directory / "caller.crt", self.directory / "caller.key"
        cert.write_bytes(self.caller.certificate_pem())
        key.write_bytes(self.caller.private_key_pem())
        context.load_cert_chain(cert, key)
        return context


@pytest.fixture
def lab_planes() -> tuple[certs.PlaneRef, ...]:
    """The planes the lab's gateway knows (a folder's conftest may override this)."""
    return PLANE_A, PLANE_B


@pytest.fixture
def extra_planes() -> list[dict[str, str]]:
    """More entries for planes.yaml; a test parametrizes this to add a broken plane."""
    return []


@pytest.fixture
def pki(
    tmp_path: Path, lab_planes: tuple[certs.PlaneRef, ...], extra_planes: list[dict[str, str]]
) -> Pki:
    """The lab's certificates and gateway files in `tmp_path`: a gateway CA and server
    certificate, a caller CA and the caller `jane` (group `ops`), an agent CA per plane, and a
    planes.yaml naming each plane (plane B requires the agent identity explicitly)."""
    gateway_ca = certs.create_ca("gateway-ca")
    server = certs.issue_server(
        gateway_ca, common_name="gateway", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    (tmp_path / "server.crt").write_bytes(server.chain_pem())
    (tmp_path / "server.key").write_bytes(server.private_key_pem())
    caller_ca = certs.create_ca("caller-ca")
    (tmp_path / "caller-ca.crt").write_bytes(caller_ca.certificate_pem())
    pki = Pki(
        directory=tmp_path,
        gateway_ca=gateway_ca,
        caller_ca=caller_ca,
        caller=certs.issue_client(caller_ca, common_name="jane", organizations=["ops"]),
    )
    entries: list[dict[str, object]] = []
    for plane in lab_planes:
        pki.agent_cas[plane] = certs.create_ca(f"agents of {plane}")
        (tmp_path / f"{plane.name}-ca.crt").write_bytes(pki.agent_cas[plane].certificate_pem())
        entry: dict[str, object] = {"plane": str(plane), "clientCA": f"{plane.name}-ca.crt"}
        if plane == PLANE_B:
            entry["requireIdentity"] = True
        entries.append(entry)
    (tmp_path / "planes.yaml").write_text(yaml.safe_dump({"planes": entries + extra_planes}))
    return pki


@pytest.fixture
async def gateway(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> AsyncIterator[Gateway]:
    gateway = Gateway(loopback_gateway_settings(pki.directory))
    await gateway.start()
    yield gateway
    await gateway.stop()
    assert gateway.callers.active_connections == 0


async def default_handler(stream: TunnelStream, request: RequestReceived) -> None:
    """A stand-in API server: echoes, streams, upgrades, by path."""
    path = request.path.decode()
    if path.startswith("/echo"):
        headers = [(b"x-seen-" + k.lower(), v) for k, v in request.headers]
        stream.respond(200, [(b"content-type", b"text/plain"), *headers])
        while chunk := await stream.read():
            await stream.write(chunk)
        stream.end()
    elif path.startswith("/big"):
        size = int(path.split("=")[1])
        stream.respond(200, [(b"content-length", str(size).encode())])
        block = b"x" * 65536
        while size > 0:
            await stream.write(block[: min(size, len(block))])
            size -= len(block)
        stream.end()
    elif path.startswith("/forever"):
        stream.respond(200, [(b"content-type", b"application/json")])
        await stream.write(b'{"type":"ADDED"}\n')
        await asyncio.Event().wait()  # a watch with no further events, until cancelled
    elif path.startswith("/upgrade"):
        stream.respond(101, [(b"upgrade", b"SPDY/3.1")])
        while chunk := await stream.read():
            await stream.write(bytes(chunk).upper())
        stream.end()
    else:
        stream.respond(404, [(b"content-length", b"0")], end_stream=True)


@dataclass
class FakeAgent:
    session: TunnelSession
    task: asyncio.Task[str]

    async def stop(self) -> None:
        self.session.close("fake agent stopped")
        await self.task


@contextlib.asynccontextmanager
async def fake_agent(
    dial: DialAgent,
    gateway: Gateway,
    pki: Pki,
    plane: certs.PlaneRef,
    *,
    bundle: certs.CertificateBundle | None = None,
    claim: str | None = None,
    handler: RequestHandler = default_handler,
) -> AsyncIterator[FakeAgent]:
    """An agent connected (HELLO exchanged and registered) for `plane`."""
    bundle = bundle or pki.agent_cert(plane)
    session, task = await dial(gateway, plane, pki.agent_ssl(bundle), handler, claim=claim)
    agent = FakeAgent(session, task)
    try:
        yield agent
    finally:
        if not session.closed:
            await agent.stop()


def caller_session(gateway: Gateway, pki: Pki) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url=f"https://127.0.0.1:{gateway.callers.port}",
        connector=aiohttp.TCPConnector(ssl=pki.caller_ssl()),
    )


def short_lived(pki: Pki, plane: certs.PlaneRef) -> certs.CertificateBundle:
    """An agent certificate that expired an hour ago."""
    return certs.issue_agent(
        pki.agent_cas[plane],
        plane=plane,
        not_before=datetime.now(UTC) - timedelta(days=2),
        validity=timedelta(days=1),
    )


class AgentFactory(Protocol):
    """What the `connect_agent` fixture is: `fake_agent` bound to this test's gateway."""

    def __call__(
        self,
        plane: certs.PlaneRef,
        *,
        bundle: certs.CertificateBundle | None = None,
        claim: str | None = None,
        handler: RequestHandler = default_handler,
    ) -> contextlib.AbstractAsyncContextManager[FakeAgent]: ...


@pytest.fixture
def connect_agent(gateway: Gateway, pki: Pki, dial_agent: DialAgent) -> AgentFactory:
    def factory(
        plane: certs.PlaneRef,
        *,
        bundle: certs.CertificateBundle | None = None,
        claim: str | None = None,
        handler: RequestHandler = default_handler,
    ) -> contextlib.AbstractAsyncContextManager[FakeAgent]:
        return fake_agent(
            dial_agent, gateway, pki, plane, bundle=bundle, claim=claim, handler=handler
        )

    return factory


@pytest.fixture
async def caller(gateway: Gateway, pki: Pki) -> AsyncIterator[aiohttp.ClientSession]:
    async with caller_session(gateway, pki) as session:
        yield session


PlanePair = tuple[certs.PlaneRef, certs.PlaneRef]


@pytest.fixture
def planes() -> PlanePair:
    return PLANE_A, PLANE_B


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


async def agent_session(
    port: int,
    plane: PlaneRef,
    agent_ssl: ssl.SSLContext,
    handler: RequestHandler,
    *,
    agent_id: str,
    claim: str | None = None,
) -> tuple[TunnelSession, asyncio.Task[str]]:
    """A stand-in agent of `plane` (claiming `claim` in its URL, if given) dialled to the agent
    port `port` of any gateway, in-process or not: HELLOs exchanged. Returns its session and
    the task that runs it; the caller ends both."""
    websocket = await connect(
        f"wss://127.0.0.1:{port}{AGENT_CONNECT_PATH}?plane={claim or plane}",
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
    async with within(10):
        await session.wait_ready()
    return session, task


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
    agent_id = f"fake-{next(_AGENT_NUMBERS)}"
    session, task = await agent_session(
        gateway.agent_listener.port, plane, agent_ssl, handler, agent_id=agent_id, claim=claim
    )
    async with within(10):
        while not any(a.agent_id == agent_id for a in gateway.agents.agents(plane)):
            await gateway.agents.wait_for_change()
    return session, task


@pytest.fixture
def dial_agent() -> DialAgent:
    """`await dial_agent(gateway, plane, agent_ssl, handler, claim=None)`: a registered
    stand-in agent, as (session, task)."""
    return _dial_agent
