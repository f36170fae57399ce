"""Pytest fixtures that start real API servers.

Enable with `pytest_plugins = ["envtest.pytest_plugin"]` in a conftest.py. Then a test asks:

- `control_plane` — one server for the whole session, with the DataPlane CRD installed;
- `kube_servers` — a factory: `kube_servers("plane-a")` starts (once per session) a server of
  that name, so "one control plane and two data planes" is three fixtures' worth of servers;
- `namespace` — a fresh namespace on the control plane, deleted after the test;
- `control_plane_client` — a kubernetes_asyncio ApiClient for the control plane, as the admin.

Every server started here is stopped, and its files removed, when the session ends, whether the
tests passed or not. Tests using them carry the `kube` marker (added automatically).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from kubernetes_asyncio.client import ApiClient

from envtest.binaries import KubeBinaries, find_binaries
from envtest.client import api_client, install_crd
from envtest.server import KubeAPIServer, ServerOptions

ServerFactory = Callable[[str], KubeAPIServer]
_KUBE_FIXTURES = frozenset({"kube_binaries", "kube_servers", "control_plane", "namespace"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _KUBE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)


@pytest.fixture(scope="session")
def kube_binaries() -> KubeBinaries:
    return find_binaries()


@pytest.fixture(scope="session")
def kube_servers(kube_binaries: KubeBinaries) -> Iterator[ServerFactory]:
    servers: dict[str, KubeAPIServer] = {}

    def start(name: str) -> KubeAPIServer:
        if name not in servers:
            server = KubeAPIServer(options=ServerOptions(name=name), binaries=kube_binaries)
            server.start()
            servers[name] = server
        return servers[name]

    try:
        yield start
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def control_plane(kube_servers: ServerFactory) -> KubeAPIServer:
    server = kube_servers("control-plane")
    install_crd(server)
    return server


@pytest.fixture
def namespace(control_plane: KubeAPIServer) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def control_plane_client(control_plane: KubeAPIServer) -> AsyncIterator[ApiClient]:
    client = await api_client(control_plane)
    async with client:
        yield client
