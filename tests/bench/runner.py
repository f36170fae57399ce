"""Runs `python -m bench e2e --quick --workload NAME` as a user does, in its own process (the
harness kills its process groups on exit), and reads the JSON document it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.kit.waits import bench_environment, scaled


def run_quick(
    workload: str | Sequence[str], tmp_path: Path, *, timeout: float
) -> tuple[str, dict[str, Any]]:
    """The run's standard output and its JSON document (one workload or several, in one run);
    fails the test unless it exited 0 within `timeout` seconds (scaled)."""
    out = tmp_path / "bench.json"
    names = [workload] if isinstance(workload, str) else list(workload)
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "e2e", "--quick"),
            *(arg for name in names for arg in ("--workload", name)),
            *("--json", str(out)),
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=bench_environment(),
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document: dict[str, Any] = json.loads(out.read_text())
    return completed.stdout, document
