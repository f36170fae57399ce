"""Path tricks through real agents to real API servers: what the data plane makes of them.

The gateway routes by the literal `/planes/<ns>/<name>/k8s` prefix and relays the rest of the
target unchanged (`test_known_callers.py` proves that with stand-in agents). Here the rest
goes through the real agent to a real kube-apiserver, which decides what `..`, `%2e%2e`,
`%2f`, `//` and `;` mean: the answer must come from the plane the prefix names — never a
redirect to another plane's URL, never another plane's objects. A namespace that exists on
plane A alone tells which server answered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer
from envtest.pytest_plugin import ServerFactory
from planelink.local import LocalPlanelink
from tests.kit.waits import scaled

TIMEOUT = scaled(30.0)
PLANE_A = plane_ref("org-a", "plane-a")
PLANE_B = plane_ref("org-b", "plane-b")


@dataclass
class RealPlanes:
    local: LocalPlanelink
    only_on_a: str
    """A namespace that exists on plane A's API server and not on plane B's."""

    async def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        """GET `target` as written, on a raw TLS connection as the caller."""
        assert self.local.gateway is not None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            self.local.gateway.callers.port,
            ssl=self.local.caller_ssl_context(),
            server_hostname="127.0.0.1",
        )
        try:
            writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            async with asyncio.timeout(TIMEOUT):
                raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            key.strip().lower(): value.strip()
            for key, _, value in (line.partition(":") for line in lines[1:])
        }
        return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def real_planes(kube_servers: ServerFactory, tmp_path: Path) -> AsyncIterator[RealPlanes]:
    # The servers of tests/e2e: one pair of API servers serves both suites in a full run.
    servers: dict[PlaneRef, KubeAPIServer] = {
        PLANE_A: kube_servers("e2e-plane-a"),
        PLANE_B: kube_servers("e2e-plane-b"),
    }
    only_on_a = f"known-{uuid.uuid4().hex[:8]}"
    await servers[PLANE_A].akubectl("create", "namespace", only_on_a)
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={plane: server.kubeconfig_path for plane, server in servers.items()},
    )
    await local.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            for plane in servers:
                await local.wait_connected(plane)
        yield RealPlanes(local, only_on_a)
    finally:
        await local.stop()
        await servers[PLANE_A].akubectl("delete", "namespace", only_on_a, "--wait=false")


def _prefix(plane: PlaneRef) -> str:
    return f"/planes/{plane.namespace}/{plane.name}/k8s"


async def test_path_tricks_stay_on_the_plane_the_prefix_names(real_planes: RealPlanes) -> None:
    a, b, only_a = _prefix(PLANE_A), _prefix(PLANE_B), real_planes.only_on_a
    # The marker: plane A's server has the namespace, plane B's does not.
    assert (await real_planes.get(f"{a}/api/v1/namespaces/{only_a}"))[0] == 200
    assert (await real_planes.get(f"{b}/api/v1/namespaces/{only_a}"))[0] == 404

    # An encoded slash is decoded by the data plane's own server: still plane A's object.
    status, _, body = await real_planes.get(f"{a}/api/v1/namespaces%2f{only_a}")
    assert status == 200
    assert only_a.encode() in body

    for target in (
        f"{b}/../../../..{a}/api/v1/namespaces/{only_a}",
        f"{b}/%2e%2e/%2e%2e/%2e%2e/%2e%2e{a}/api/v1/namespaces/{only_a}",
        f"{b}/api/v1/namespaces/../../../../..{a}/api/v1/namespaces/{only_a}",
        f"{b}/api/v1/namespaces%2f..%2f..%2f..%2f..%2f..{a}/api/v1/namespaces/{only_a}",
        f"{b}//api/v1/namespaces/{only_a}",
        f"{b}/api;/v1/namespaces/{only_a}",
    ):
        status, headers, body = await real_planes.get(target)
        # A 200 would be plane A's namespace through plane B's URL.
        assert status in (400, 404), (target, status, body[:200])
        assert "location" not in headers, (target, headers)
