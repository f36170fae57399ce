"""The status suite: the gateway lab (tests/kit/gateway_lab.py) with a third plane, the
`planelink status` command as a real process, and a headless Chromium tab (`tests.status.cdp`)
for the console.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

import certs
from gateway.app import Gateway
from tests.kit.gateway_lab import PLANE_A, PLANE_B, PLANE_C
from tests.kit.waits import scaled
from tests.status.cdp import Page, browser

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


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    """A tab of a headless Chromium of its own (fresh profile), closed after the test."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    async with browser(profile) as opened:
        yield opened
