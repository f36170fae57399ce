"""The tests' HAProxy: `envtest.haproxy` (where the benchmarks find it too), its checks,
timeouts and waits stretched by this run's PLANELINK_TEST_TIMEOUT_FACTOR."""

from __future__ import annotations

from dataclasses import dataclass

from envtest import haproxy
from envtest.haproxy import Frontend, Server
from tests.kit.waits import FACTOR

__all__ = ["Frontend", "LoadBalancer", "Server"]


@dataclass
class LoadBalancer(haproxy.LoadBalancer):
    factor: float = FACTOR
