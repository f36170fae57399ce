"""Fixtures for every test: the real API servers (envtest), the in-process gateway lab
(tests/kit/gateway_lab.py) and the pinned Helm binary; and the suite's per-test limit, scaled
like every other budget."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.kit.waits import scaled

pytest_plugins = ["envtest.pytest_plugin", "tests.kit.gateway_lab"]

ROOT = Path(__file__).resolve().parents[1]


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
