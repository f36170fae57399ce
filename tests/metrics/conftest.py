"""Fixtures for the metrics tests: promtool (built like Helm, from the Go module proxy), and the
agent tests' test gateway and agents (tests/agent/conftest.py) for a real agent's /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.conftest import (
    agent_pki,
    agent_tls,
    fake_gateway,
    start_agent,
    unused_kubeconfig,
)
from tests.conftest import built_go_tool

__all__ = ["agent_pki", "agent_tls", "fake_gateway", "promtool", "start_agent", "unused_kubeconfig"]


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool at the pinned version (deploy/build-promtool.sh)."""
    return built_go_tool("build-promtool.sh")
