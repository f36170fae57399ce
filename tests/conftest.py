"""Fixtures for every test: the real API servers (envtest), the in-process gateway lab
(tests/kit/gateway_lab.py) and the pinned Helm binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["envtest.pytest_plugin", "tests.kit.gateway_lab"]

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
