"""A gateway in-process with fake agents: real TLS, real WebSockets, real tunnel sessions."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest
import yaml

import certs
from gateway.app import Gateway, GatewaySettings
from protocol import RequestReceived
from tests.conftest import DialAgent
from tunnel import RequestHandler, TunnelSession, TunnelStream

PLANE_A = certs.plane_ref("ns-a", "plane-a")
PLANE_B = certs.plane_ref("ns-b", "plane-b")


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
def pki(tmp_path: Path) -> Pki:
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
    for plane in (PLANE_A, PLANE_B):
        pki.agent_cas[plane] = certs.create_ca(f"agents of {plane}")
        (tmp_path / f"{plane.name}-ca.crt").write_bytes(pki.agent_cas[plane].certificate_pem())
    (tmp_path / "planes.yaml").write_text(
        yaml.safe_dump(
            {
                "planes": [
                    {"plane": str(PLANE_A), "clientCA": "plane-a-ca.crt"},
                    {"plane": str(PLANE_B), "clientCA": "plane-b-ca.crt", "requireIdentity": True},
                ]
            }
        )
    )
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
    from datetime import UTC, datetime

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
