"""An agent *process* killed with SIGKILL mid-request: no WebSocket close, no GOAWAY, only the
kernel closing its socket. Its callers learn at once, not after a heartbeat timeout: a request
still waiting for its answer gets 503 Status JSON, a watch already answered is cut."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from certs import plane_ref
from envtest.pytest_plugin import ServerFactory
from gateway.app import Gateway, GatewaySettings
from tests.kit.waits import eventually, scaled, wait_for, within
from tunnel import Heartbeat

HEARTBEAT = Heartbeat(interval=10, timeout=60)
"""Both sides' heartbeat: far longer than what the test allows the gateway to notice the loss,
so only the closed connection can have told it."""
PROMPTLY = scaled(5.0)
BASE = "/planes/ns-a/plane-a/k8s/api/v1/namespaces/default/configmaps"
PLANE = plane_ref("ns-a", "plane-a")


@pytest.fixture
async def gateway(
    pki: Any, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> AsyncIterator[Gateway]:
    settings = loopback_gateway_settings(pki.directory)
    settings = dataclasses.replace(
        settings, agents=dataclasses.replace(settings.agents, heartbeat=HEARTBEAT)
    )
    gateway = Gateway(settings)
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.fixture
async def agent_process(
    gateway: Gateway, pki: Any, kube_servers: ServerFactory, tmp_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`planelink agent` of plane A as its own process, serving a real API server."""
    tls = tmp_path / "agent-tls"
    tls.mkdir()
    bundle = pki.agent_cert(PLANE)
    (tls / "tls.crt").write_bytes(bundle.chain_pem())
    (tls / "tls.key").write_bytes(bundle.private_key_pem())
    (tls / "ca.crt").write_bytes(pki.gateway_ca.certificate_pem())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "planelink.agent_cli",
        f"--gateway-url=wss://127.0.0.1:{gateway.agent_listener.port}",
        f"--plane={PLANE}",
        f"--tls-dir={tls}",
        f"--kubeconfig={kube_servers('lifecycle-plane').kubeconfig_path}",
        "--health-address=127.0.0.1:0",
        f"--heartbeat-interval={HEARTBEAT.interval}",
        f"--heartbeat-timeout={HEARTBEAT.timeout}",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with within(30):
            while not gateway.agents.agents(PLANE):
                await gateway.agents.wait_for_change()
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _stalled_upload(started: asyncio.Event) -> AsyncIterator[bytes]:
    """A request body that never ends: the API server cannot answer before it has it all."""
    yield b'{"apiVersion": "v1", "kind": "ConfigMap",'
    started.set()
    await asyncio.Event().wait()


async def _read_to_the_end(response: aiohttp.ClientResponse) -> None:
    while await response.content.read(65536):
        pass


async def test_a_killed_agent_fails_its_callers_at_once(
    gateway: Gateway, caller: aiohttp.ClientSession, agent_process: asyncio.subprocess.Process
) -> None:
    (agent,) = gateway.agents.agents(PLANE)
    watch = await caller.get(f"{BASE}?watch=1")
    assert watch.status == 200
    uploading = asyncio.Event()
    upload = asyncio.create_task(
        caller.post(
            BASE,
            data=_stalled_upload(uploading),
            headers={"content-type": "application/json"},
        )
    )
    await wait_for(uploading.wait(), 10)
    # Both exchanges are on the agent's tunnel before it dies (nothing announces a stream
    # opening: bounded polling).
    await eventually(
        lambda: agent.session.open_streams >= 2,
        within=10,
        message="the upload and the watch never both reached the agent's tunnel",
    )

    agent_process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    answer = await asyncio.wait_for(upload, timeout=PROMPTLY)
    assert answer.status == 503
    status = await answer.json()
    assert (status["kind"], status["code"]) == ("Status", 503)
    assert time.monotonic() - killed_at < PROMPTLY
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(_read_to_the_end(watch), timeout=PROMPTLY)
    assert time.monotonic() - killed_at < PROMPTLY
    watch.close()
    answer.close()

    assert await agent_process.wait() == -signal.SIGKILL
    assert gateway.agents.agents(PLANE) == []
    assert agent.session.open_streams == 0
    lost = gateway.metrics.registry.get_sample_value(
        "planelink_gateway_agent_rejections_total", {"reason": "TrustRevoked"}
    )
    assert not lost  # a lost agent is not a refused one
