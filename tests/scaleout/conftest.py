"""Fixtures of the scale-out tests: a `ReplicaLab` (tests/kit/replicas.py) over one control
plane and two data planes, each a real API server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer
from envtest.pytest_plugin import ServerFactory
from tests.kit.replicas import ReplicaLab

MakeLab = Callable[..., Awaitable[ReplicaLab]]


@pytest.fixture
def planes(namespace: str) -> tuple[PlaneRef, PlaneRef]:
    """Two planes, DataPlanes in the test's namespace of the control plane."""
    return plane_ref(namespace, "plane-a"), plane_ref(namespace, "plane-b")


@pytest.fixture
async def make_lab(
    kube_servers: ServerFactory,
    control_plane: KubeAPIServer,
    namespace: str,
    planes: tuple[PlaneRef, PlaneRef],
    tmp_path: Path,
) -> AsyncIterator[MakeLab]:
    """`await make_lab(replicas=3, pinned={plane: "r1"})`: a started lab, closed after the
    test."""
    labs: list[ReplicaLab] = []
    data_planes = {
        planes[0]: kube_servers("scaleout-plane-a"),
        planes[1]: kube_servers("scaleout-plane-b"),
    }

    async def make(
        *,
        replicas: int = 3,
        pinned: dict[PlaneRef, str] | None = None,
        upstreams: dict[PlaneRef, Path] | None = None,
    ) -> ReplicaLab:
        """`upstreams`: plane -> kubeconfig of what its agent proxies to, when it is not one
        of the two data planes' API servers (callers are then not impersonated)."""
        kube = {plane: server.kubeconfig_path for plane, server in data_planes.items()}
        lab = ReplicaLab(
            workdir=tmp_path / f"lab{len(labs)}",
            control_plane=control_plane,
            namespace=namespace,
            planes=upstreams or kube,
            pinned=pinned or {},
            impersonate=upstreams is None,
        )
        labs.append(lab)
        await lab.start(replicas)
        return lab

    yield make
    for lab in labs:
        await lab.close()
