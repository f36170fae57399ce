"""The status suite: the gateway lab (tests/kit/gateway_lab.py) with a third plane, the
`planelink status` command as a real process, and headless Chromium - for the health view of
issue #6.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

import certs
from gateway.app import Gateway
from tests.kit.gateway_lab import PLANE_A, PLANE_B, PLANE_C
from tests.kit.waits import scaled

TIMEOUT = scaled(60.0)  # one process (Python CLI or Chromium) from start to exit


@pytest.fixture
def lab_planes() -> tuple[certs.PlaneRef, ...]:
    return PLANE_A, PLANE_B, PLANE_C


@pytest.fixture
def operator_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.operator_port}"


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


async def _run(argv: list[str], *, env: dict[str, str] | None = None) -> Ran:
    """Run a process without blocking the event loop that serves the gateway."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, stdout.decode(), stderr.decode())


class StatusRunner(Protocol):
    """What the `planelink_status` fixture is."""

    def __call__(self, *args: str, env: dict[str, str | None] | None = None) -> Awaitable[Ran]: ...


@pytest.fixture
def planelink_status() -> StatusRunner:
    """`planelink status ARGS` as a real process; `env` adds to (or, with None, removes from)
    the environment."""

    async def run(*args: str, env: dict[str, str | None] | None = None) -> Ran:
        environ = dict(os.environ)
        environ.pop("PLANELINK_GATEWAY_OPERATOR_URL", None)
        for name, value in (env or {}).items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        return await _run([sys.executable, "-m", "planelink.status_cli", *args], env=environ)

    return run


class BrowserRunner(Protocol):
    """What the `chromium` fixture is."""

    def __call__(self, *args: str) -> Awaitable[Ran]: ...


@pytest.fixture
def chromium(tmp_path: Path) -> BrowserRunner:
    """Headless Chromium with a fresh profile; it must be installed (scripts/setup does)."""
    profiles = itertools.count(1)

    async def run(*args: str) -> Ran:
        binary = shutil.which("chromium")
        if binary is None:  # a failure, never a skip: the page is tested in a real browser
            pytest.fail(
                "chromium is not installed (not on PATH); the health page is tested in a real "
                "headless browser - install it with: apt-get install -y chromium",
                pytrace=False,
            )
        profile = tmp_path / f"chromium-profile-{next(profiles)}"
        profile.mkdir()
        return await _run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ]
        )

    return run
