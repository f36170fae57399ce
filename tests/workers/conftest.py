"""Fixtures of the workers' tests: the data plane a real agent serves."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from envtest import KubeAPIServer


@pytest.fixture(scope="session")
def plane_server(kube_servers: Callable[[str], KubeAPIServer]) -> KubeAPIServer:
    """A real kube-apiserver + etcd: the data plane the agent serves."""
    return kube_servers("workers-plane")
