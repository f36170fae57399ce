"""The end-to-end harness runs: quick latency workload, through and direct, as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.waits import bench_environment, scaled


@pytest.mark.timeout(scaled(60))
def test_quick_latency_has_through_and_direct(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # Its own process, as a user runs it; the harness kills its process groups on exit.
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "e2e", "--quick", "--workload", "latency"),
            *("--json", str(out)),
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=bench_environment(),
        capture_output=True,
        text=True,
        timeout=scaled(55),
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "added p50" in completed.stdout
    document = json.loads(out.read_text())
    assert document["machine"]["cores"] >= 1
    (workload,) = document["runs"][0]["workloads"]
    assert workload["workload"] == "latency"
    assert workload["error"] is None
    rows = {row["metric"]: row for row in workload["rows"]}
    for metric in ("p50", "p99"):
        assert rows[metric]["through"] > 0
        assert rows[metric]["direct"] > 0
        assert rows[metric]["ratio"] > 0
    assert rows["added p50"]["status"] in ("ok", "MISSED")
    assert rows["added p50"]["target"] == {"on": "through", "op": "<=", "value": 1.0}
