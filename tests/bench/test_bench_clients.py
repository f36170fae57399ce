"""Issue #15's rows: CPU per request of every process, the Go client, resting memory and
start-up. The row logic with made-up loads; the Go client's command line and result; quick runs
of `throughput`, `latency-go`, `throughput-go` and `resting` as a user runs them."""

from __future__ import annotations

import math
import os
import shutil
import ssl
from pathlib import Path

import pytest

from bench import goclient
from bench.drivers import CpuMeter, Load
from bench.processes import Target, TargetFiles
from bench.workloads import cpu_rows
from tests.bench.runner import run_quick
from tests.kit.waits import scaled

CPU_ROWS = (
    "client CPU per request",
    "upstream CPU per request",
    "gateway CPU per request",
    "agent CPU per request",
    "direct CPU per request",
    "(gateway+agent) / direct CPU",
    "total CPU per request",
)


def _load(count: int, **cpu: float) -> Load:
    return Load(count=count, errors=0, seconds=1.0, p50_ms=1.0, p99_ms=2.0, cpu=cpu)


def test_cpu_rows_put_gateway_and_agent_against_client_and_upstream_direct() -> None:
    through = _load(1000, client=0.1, upstream=0.05, gateway=0.12, agent=0.11)
    direct = _load(2000, client=0.2, upstream=0.1)
    rows = {row.metric: row for row in cpu_rows(through, direct, judged=True)}
    assert list(rows) == list(CPU_ROWS)
    assert rows["gateway CPU per request"].through == pytest.approx(120)
    assert rows["direct CPU per request"].direct == pytest.approx(150)  # (0.2 + 0.1) / 2000
    assert rows["direct CPU per request"].through == pytest.approx(150)  # (0.1 + 0.05) / 1000
    relay = rows["(gateway+agent) / direct CPU"]
    assert relay.through == pytest.approx(230)
    assert relay.direct == pytest.approx(150)
    assert relay.status == "MISSED"  # 230 / 150 > 1
    assert rows["total CPU per request"].through == pytest.approx(380)
    cheap = _load(1000, client=0.1, upstream=0.05, gateway=0.07, agent=0.07)
    assert {r.metric: r for r in cpu_rows(cheap, direct, judged=True)}[relay.metric].status == "ok"
    unjudged = {r.metric: r for r in cpu_rows(through, direct, judged=False)}
    assert unjudged[relay.metric].status == ""


def test_cpu_meter_counts_only_its_window() -> None:
    meter = CpuMeter({"me": os.getpid()})
    meter.start()
    deadline = os.times().elapsed + 0.05
    while os.times().elapsed < deadline:
        pass  # spin: this process's CPU grows
    meter.stop()
    assert 0 < meter.seconds["me"] < 5
    assert math.isnan(_load(0).cpu_us_per_request())


def test_go_client_command_line_and_result(tmp_path: Path) -> None:
    files = TargetFiles(ca=tmp_path / "ca", cert=tmp_path / "crt", key=tmp_path / "key")
    context = ssl.create_default_context()
    target = Target("through", "https://127.0.0.1:1/planes/a/b/k8s", context, files=files)
    args = goclient.argv(
        Path("/bin/goclient"),
        target,
        "/x",
        concurrency=64,
        requests=None,
        duration=2.0,
        warmup_requests=0,
        warmup_seconds=0.5,
    )
    assert args == [
        *("/bin/goclient", "-url", "https://127.0.0.1:1/planes/a/b/k8s/x", "-ca", str(files.ca)),
        *("-cert", str(files.cert), "-key", str(files.key), "-concurrency", "64"),
        *("-duration", "2.0s", "-warmup", "0.5s"),
    ]
    token = Target("direct", "https://h", context, files=TargetFiles(ca=files.ca, token="t"))
    args = goclient.argv(
        Path("g"),
        token,
        "/",
        concurrency=1,
        requests=5,
        duration=None,
        warmup_requests=2,
        warmup_seconds=0,
        http2=True,
    )
    assert args[5:] == [
        *("-token", "t", "-concurrency", "1", "-requests", "5"),
        *("-warmup-requests", "2", "-http2"),
    ]
    with pytest.raises(goclient.GoClientError, match="no credential files"):
        goclient.argv(
            Path("g"),
            Target("x", "https://h", context),
            "/",
            concurrency=1,
            requests=1,
            duration=None,
            warmup_requests=0,
            warmup_seconds=0,
        )
    load = goclient.parse_result(
        {
            "count": 10,
            "errors": 1,
            "firstError": "status 503",
            "seconds": 2.0,
            "p50Ms": 0.5,
            "p99Ms": 1.5,
            "maxMs": 3,
            "cpuSeconds": 0.01,
            "protocol": "HTTP/1.1",
        }
    )
    assert (load.count, load.errors, load.rate, load.first_error) == (10, 1, 5.0, "status 503")
    assert load.cpu_us_per_request("client") == pytest.approx(1000)


def _go_toolchain() -> bool:
    return shutil.which("go") is not None or Path("/usr/local/go/bin/go").exists()


@pytest.mark.skipif(not _go_toolchain(), reason="no Go toolchain on this machine")
@pytest.mark.timeout(scaled(240))
def test_quick_cpu_rows_with_aiohttp_and_go(tmp_path: Path) -> None:
    # A first build of the Go client (cold Go build cache) takes minutes: before the run.
    goclient.binary()
    names = ["throughput", "latency-go", "throughput-go"]
    stdout, document = run_quick(names, tmp_path, timeout=120)
    assert "(gateway+agent) / direct CPU" in stdout
    results = {w["workload"]: w for w in document["runs"][0]["workloads"]}
    assert set(results) == {"throughput", "latency (go)", "throughput (go)"}
    assert all(result["error"] is None for result in results.values()), results
    for name in ("throughput", "throughput (go)"):
        rows = {row["metric"]: row for row in results[name]["rows"]}
        for metric in ("client CPU per request", "upstream CPU per request"):
            assert rows[metric]["through"] > 0, (name, metric)
            assert rows[metric]["direct"] > 0, (name, metric)
        for metric in ("gateway CPU per request", "agent CPU per request"):
            assert rows[metric]["through"] > 0, (name, metric)
        relay = rows["(gateway+agent) / direct CPU"]
        assert relay["target"] == {"on": "ratio", "op": "<=", "value": 1.0}
        assert relay["status"] in ("ok", "MISSED")
        assert rows["req/s vs direct"]["target"] == {"on": "ratio", "op": ">=", "value": 0.5}
    latency = {row["metric"]: row for row in results["latency (go)"]["rows"]}
    assert latency["p50"]["through"] > 0
    assert latency["p50"]["direct"] > 0
    assert latency["added p99 vs direct p99"]["target"] == {"on": "ratio", "op": "<=", "value": 1.5}
    assert results["latency (go)"]["info"]["errors"] == {"through": 0, "direct": 0}


@pytest.mark.timeout(scaled(120))
def test_quick_resting_memory_and_start_up(tmp_path: Path) -> None:
    _, document = run_quick("resting", tmp_path, timeout=110)
    (workload,) = document["runs"][0]["workloads"]
    assert workload["error"] is None, workload["error"]
    rows = {row["metric"]: row for row in workload["rows"]}
    for process, limit in (("gateway", 50.0), ("agent", 40.0)):
        row = rows[f"{process} resting RSS"]
        assert row["through"] > 5  # a Python process holding its imports
        assert row["target"] == {"on": "through", "op": "<=", "value": limit}
    starts = workload["info"]["agentStartSeconds"]
    assert len(starts) == 3
    assert all(0 < s < scaled(30) for s in starts)
    median = rows["agent start to first served request, median"]
    assert median["target"] == {"on": "through", "op": "<=", "value": 0.5}
    assert min(starts) <= median["through"] <= max(starts)
    assert len(workload["info"]["gatewayStartSeconds"]) == 3
    assert rows["gateway start to /readyz, max"]["through"] > 0
    # A Python process that imported its modules and served: some CPU, less than its wall time.
    for cpu, wall in zip(
        workload["info"]["agentStartCpuSeconds"], workload["info"]["agentStartSeconds"], strict=True
    ):
        assert 0 < cpu <= wall * 2  # two cores: a process may run two threads at once
