"""Fixtures for every test: the real API servers (envtest) and the pinned Helm binary."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.agent_listener import AgentListenerSettings
from gateway.app import GatewaySettings
from gateway.callers import CallerSettings
from tunnel import Heartbeat

pytest_plugins = ["envtest.pytest_plugin"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def helm() -> Path:
    """Helm at the pinned version, built from the Go module proxy by deploy/build-helm.sh
    (cached after the first build)."""
    built = subprocess.run(
        ["bash", str(ROOT / "deploy" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(built.stdout.strip().splitlines()[-1])


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
