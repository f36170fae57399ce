"""Workload 6 (many agents): the quick run connects its swarm, restarts the gateway and reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.agents import agent_planes, cpu_seconds, listen_overflows, raise_nofile
from tests.bench.runner import run_quick
from tests.kit.waits import scaled


def test_helpers_read_proc() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert listen_overflows() >= 0
    assert raise_nofile() >= 1024
    planes = agent_planes(3)
    assert [str(plane) for plane in planes] == ["agents/a00000", "agents/a00001", "agents/a00002"]


@pytest.mark.timeout(scaled(90))
def test_quick_agents_connect_and_come_back_after_a_restart(tmp_path: Path) -> None:
    _, document = run_quick("agents", tmp_path, timeout=85)
    (workload,) = document["runs"][0]["workloads"]
    assert workload["workload"] == "agents"
    assert workload["error"] is None
    rows = {row["metric"]: row for row in workload["rows"]}
    assert rows["connect storm: all connected"]["through"] > 0
    # Quick mode reports memory without judging it: 50 agents may take only free heap (0 KiB).
    assert rows["gateway RSS per idle agent"]["through"] >= 0
    assert rows["gateway RSS per idle agent"]["target"] is None
    assert rows["gateway CPU idle (heartbeat 2 s)"]["through"] >= 0
    # The target is judged against the scaled budget: on a loaded machine (factor > 1) the new
    # gateway alone may take longer to start; at factor 1 this is exactly the row's "ok".
    restart = rows["restart: all connected again"]
    assert restart["target"] == {"on": "through", "op": "<=", "value": 30.0}
    assert 0 < restart["through"] <= scaled(restart["target"]["value"])
    swarm = workload["info"]["restart"]["swarm"]
    # Every agent connected twice (before and after the restart), each time with its own
    # certificate; the refusals while the gateway was down were retried with backoff.
    assert swarm["connects"] >= 2 * workload["info"]["agents"]
    assert set(swarm["failures"]) <= {"refused", "closed", "timeout"}
