"""The end-to-end harness runs: quick latency workload, through and direct, as JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.runner import run_quick
from tests.kit.waits import scaled


@pytest.mark.timeout(scaled(60))
def test_quick_latency_has_through_and_direct(tmp_path: Path) -> None:
    stdout, document = run_quick("latency", tmp_path, timeout=55)
    assert "added p50" in stdout
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
