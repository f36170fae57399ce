"""The whole product on real API servers: gateway + one agent per data plane + real kubectl."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer, run_kubectl
from envtest.pytest_plugin import ServerFactory
from planelink.local import LocalPlanelink
from tests.kit.waits import scaled, wait_for

PLANE_A = plane_ref("org-a", "plane-a")
PLANE_B = plane_ref("org-b", "plane-b")


class Lab:
    """A running planelink with two data planes, and kubectl through it."""

    def __init__(self, local: LocalPlanelink, servers: dict[PlaneRef, KubeAPIServer]) -> None:
        self.local = local
        self.servers = servers

    async def kubectl(
        self, plane: PlaneRef, *args: str, stdin: bytes | None = None, limit: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Real kubectl, through the gateway, against `plane`."""
        return await run_kubectl(
            self.local.caller_kubeconfig(plane), *args, input=stdin, timeout=scaled(limit)
        )

    def raw_client(self) -> aiohttp.ClientSession:
        """An HTTPS client with the caller's certificate, to see exactly what kubectl gets."""
        context = self.local.caller_ssl_context()
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    def plane_url(self, plane: PlaneRef, path: str) -> str:
        assert self.local.gateway is not None
        port = self.local.gateway.callers.port
        return f"https://127.0.0.1:{port}/planes/{plane.namespace}/{plane.name}/k8s{path}"

    async def direct(self, plane: PlaneRef, *args: str) -> subprocess.CompletedProcess[str]:
        """kubectl straight at the plane's API server (to check what the tunnel did), off the
        event loop: the gateway and the agents run in it."""
        return await self.servers[plane].akubectl(*args, check=False)


@pytest.fixture
def planes() -> tuple[PlaneRef, PlaneRef]:
    return PLANE_A, PLANE_B


@pytest.fixture
async def lab(kube_servers: ServerFactory, tmp_path: Path) -> AsyncIterator[Lab]:
    servers = {PLANE_A: kube_servers("e2e-plane-a"), PLANE_B: kube_servers("e2e-plane-b")}
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={plane: server.kubeconfig_path for plane, server in servers.items()},
    )
    await local.start()
    for plane in servers:
        await wait_for(local.wait_connected(plane), 30)
    yield Lab(local, servers)
    await local.stop()
