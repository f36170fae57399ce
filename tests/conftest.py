"""Fixtures for every test: the real API servers (envtest), the in-process gateway lab
(tests/kit/gateway_lab.py) and the pinned Helm binary; the suite's per-test limit, scaled
like every other budget; and the event loop of async tests.

PLANELINK_TEST_EVENT_LOOP=uvloop runs every async test (and so the in-process gateways and
agents) on uvloop instead of asyncio's loop, e.g.
`PLANELINK_TEST_EVENT_LOOP=uvloop pytest tests/security/test_admission.py`. Processes a test
starts choose their own loop (`--event-loop`, default auto)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.kit.waits import scaled

pytest_plugins = ["envtest.pytest_plugin", "tests.kit.gateway_lab"]

ROOT = Path(__file__).resolve().parents[1]

TEST_EVENT_LOOP = os.environ.get("PLANELINK_TEST_EVENT_LOOP", "asyncio")
if TEST_EVENT_LOOP not in ("asyncio", "uvloop"):
    raise pytest.UsageError(f"PLANELINK_TEST_EVENT_LOOP={TEST_EVENT_LOOP!r}: asyncio or uvloop")

if TEST_EVENT_LOOP == "uvloop":

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """pytest-asyncio's hook: every async test runs on a uvloop loop."""
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """pytest-timeout's `timeout` from pyproject.toml is a budget too: scaled, unless the run
    sets its own (`--timeout`, PYTEST_TIMEOUT). Runs before pytest-timeout reads it."""
    configured = config.getini("timeout")
    chosen = config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT")
    if configured and not chosen:
        config.option.timeout = scaled(float(configured))


def built_go_tool(script: str) -> Path:
    """The binary a deploy/build-*.sh script builds from the Go module proxy at its pinned
    version (cached after the first build)."""
    built = subprocess.run(
        ["bash", str(ROOT / "deploy" / script)], capture_output=True, text=True, check=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def helm() -> Path:
    """Helm at the pinned version (deploy/build-helm.sh)."""
    return built_go_tool("build-helm.sh")
