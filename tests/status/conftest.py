"""A gateway in-process with fake agents (real TLS, real tunnel sessions), the `planelink status`
command as a real process, and headless Chromium - for the health view of issue #6.

The gateway part is the minimum of tests/gateway/conftest.py: three planes, agents that
connect and answer nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import certs
from gateway.app import Gateway, GatewaySettings
from protocol import RequestReceived
from tests.kit.waits import scaled
from tunnel import TunnelSession, TunnelStream

PLANES = (
    certs.PlaneRef("ns-a", "plane-a"),
    certs.PlaneRef("ns-b", "plane-b"),
    certs.PlaneRef("ns-c", "plane-c"),
)
TIMEOUT = scaled(60.0)  # one process (Python CLI or Chromium) from start to exit
# What the `dial_agent` fixture (tests/conftest.py) is.
DialAgent = Callable[..., Awaitable[tuple[TunnelSession, "asyncio.Task[str]"]]]


@dataclass
class Pki:
    directory: Path
    gateway_ca: certs.CertificateBundle
    agent_cas: dict[certs.PlaneRef, certs.CertificateBundle]

    def agent_ssl(self, bundle: certs.CertificateBundle) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.gateway_ca.certificate_pem().decode())
        cert, key = (self.directory / f"agent-{id(bundle)}.{ext}" for ext in ("crt", "key"))
        cert.write_bytes(bundle.chain_pem())
        key.write_bytes(bundle.private_key_pem())
        context.load_cert_chain(cert, key)
        return context


@pytest.fixture
def extra_planes() -> list[dict[str, str]]:
    """More entries for planes.yaml; a test parametrizes this to add a broken plane."""
    return []


@pytest.fixture
def pki(tmp_path: Path, extra_planes: list[dict[str, str]]) -> Pki:
    gateway_ca = certs.create_ca("gateway-ca")
    server = certs.issue_server(
        gateway_ca, common_name="gateway", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
    )
    (tmp_path / "server.crt").write_bytes(server.chain_pem())
    (tmp_path / "server.key").write_bytes(server.private_key_pem())
    (tmp_path / "caller-ca.crt").write_bytes(certs.create_ca("caller-ca").certificate_pem())
    agent_cas = {plane: certs.create_ca(f"agents of {plane}") for plane in PLANES}
    for plane, ca in agent_cas.items():
        (tmp_path / f"{plane.name}-ca.crt").write_bytes(ca.certificate_pem())
    planes = [{"plane": str(p), "clientCA": f"{p.name}-ca.crt"} for p in PLANES] + extra_planes
    (tmp_path / "planes.yaml").write_text(yaml.safe_dump({"planes": planes}))
    return Pki(directory=tmp_path, gateway_ca=gateway_ca, agent_cas=agent_cas)


@pytest.fixture
async def gateway(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> AsyncIterator[Gateway]:
    gateway = Gateway(loopback_gateway_settings(pki.directory))
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
def operator_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.operator_port}"


async def _not_found(stream: TunnelStream, request: RequestReceived) -> None:
    stream.respond(404, [(b"content-length", b"0")], end_stream=True)


@contextlib.asynccontextmanager
async def _fake_agent(
    dial: DialAgent,
    gateway: Gateway,
    pki: Pki,
    plane: certs.PlaneRef,
    bundle: certs.CertificateBundle | None,
) -> AsyncIterator[TunnelSession]:
    """An agent connected (HELLO exchanged and registered) for `plane`."""
    bundle = bundle or certs.issue_agent(pki.agent_cas[plane], plane=plane)
    session, task = await dial(gateway, plane, pki.agent_ssl(bundle), _not_found)
    try:
        yield session
    finally:
        session.close("fake agent stopped")
        await task


AgentFactory = Callable[..., contextlib.AbstractAsyncContextManager[TunnelSession]]


@pytest.fixture
def connect_agent(gateway: Gateway, pki: Pki, dial_agent: DialAgent) -> AgentFactory:
    def factory(
        plane: certs.PlaneRef, bundle: certs.CertificateBundle | None = None
    ) -> contextlib.AbstractAsyncContextManager[TunnelSession]:
        return _fake_agent(dial_agent, gateway, pki, plane, bundle)

    return factory


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def _run(argv: list[str], *, env: dict[str, str] | None = None) -> Ran:
    """Run a process without blocking the event loop that serves the gateway."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


StatusRunner = Callable[..., Awaitable[Ran]]


@pytest.fixture
def planelink_status() -> StatusRunner:
    """`planelink status ARGS` as a real process; `env` adds to (or, with None, removes from)
    the environment."""

    async def run(*args: str, env: dict[str, str | None] | None = None) -> Ran:
        environ = dict(os.environ)
        environ.pop("PLANELINK_GATEWAY_OPERATOR_URL", None)
        for name, value in (env or {}).items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        return await _run([sys.executable, "-m", "planelink.status_cli", *args], env=environ)

    return run


BrowserRunner = Callable[..., Awaitable[Ran]]


@pytest.fixture
def chromium(tmp_path: Path) -> BrowserRunner:
    """Headless Chromium with a fresh profile; it must be installed (scripts/setup does)."""
    profiles = itertools.count(1)

    async def run(*args: str) -> Ran:
        binary = shutil.which("chromium")
        if binary is None:  # a failure, never a skip: the page is tested in a real browser
            pytest.fail(
                "chromium is not installed (not on PATH); the health page is tested in a real "
                "headless browser - install it with: apt-get install -y chromium",
                pytrace=False,
            )
        profile = tmp_path / f"chromium-profile-{next(profiles)}"
        profile.mkdir()
        return await _run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ]
        )

    return run
