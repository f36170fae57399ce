"""Running `planelink dev` in tests: ports of its own for each run (the defaults may be taken
on a busy host, and tests run side by side), and a run to its end for the refusals."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from envtest import free_port
from planelink.dev import DevPorts
from tests.kit.waits import scaled


def free_ports() -> DevPorts:
    """Ports nothing listens on now, one per flag (the defaults may be taken on a busy host)."""
    return DevPorts(**{spec.name: free_port() for spec in fields(DevPorts)})


def run_dev(
    state_dir: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    program: Sequence[str] = (sys.executable, "-m", "planelink"),
) -> subprocess.CompletedProcess[str]:
    """`planelink dev` run to its end (for the cases where it refuses to start)."""
    return subprocess.run(
        [*program, "dev", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(60),
        check=False,
    )


def port_flags(ports: DevPorts) -> list[str]:
    return [part for flag, port in ports.by_flag().items() for part in (flag, str(port))]
