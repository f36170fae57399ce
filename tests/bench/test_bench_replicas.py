"""Workload 7 (replicas): the quick run forwards between two replicas, moves 50 agents onto a new
replica behind HAProxy, and restarts three replicas under load, and reports each part."""

from __future__ import annotations

from pathlib import Path

import pytest

from envtest.haproxy import haproxy_binary
from tests.bench.runner import run_quick
from tests.kit.waits import scaled


@pytest.mark.timeout(scaled(240))
def test_quick_replicas_forward_converge_and_restart(tmp_path: Path) -> None:
    haproxy_binary()  # scripts/test installs it; say so plainly if it is missing
    _, document = run_quick("replicas", tmp_path, timeout=230)
    (workload,) = document["runs"][0]["workloads"]
    assert workload["workload"] == "replicas"
    assert workload["error"] is None
    rows = {row["metric"]: row for row in workload["rows"]}
    info = workload["info"]

    # 1. Every request sent to B was forwarded to A, which holds the plane's only tunnel.
    assert info["forwarded"]["forwardedByB"] >= info["forwarded"]["requests"]
    assert info["forwarded"]["errors"] == {"local": 0, "forwarded": 0, "direct": 0}
    added = rows["forwarded: added p50 over local"]
    assert added["target"] == {"on": "through", "op": "<=", "value": 0.5}
    assert rows["forwarded vs local p50"]["through"] > 0

    # 2. Every agent of the swarm ends with two tunnels, and B was given connections for them.
    swarm = info["newReplica"]["swarm"]["after"]
    assert swarm["tunnels"] == 2 * swarm["agents"] == 2 * info["newReplica"]["agents"]
    sessions = info["newReplica"]["haproxySessions"]
    assert sessions["after"]["gw-b"] - sessions["before"]["gw-b"] >= swarm["agents"]
    assert rows["new replica: all 50 agents hold a tunnel to it"]["through"] > 0

    # 3. The loop ran through all three restarts, and every restarted replica exited cleanly.
    assert rows["rolling restart of 3: requests done"]["through"] > 0
    assert rows["rolling restart of 3: requests failed"]["target"]["value"] == 0
    timings = info["rollingRestart"]["timings"]
    assert set(timings) == {"gw-1", "gw-2", "gw-3"}
    assert all(each["exitCode"] == 0 for each in timings.values())
