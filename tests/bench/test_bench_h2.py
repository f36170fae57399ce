"""The HTTP/2 variants (issue #14): the quick run puts them beside their HTTP/1.1 workloads,
and the helpers they rest on read what they claim to."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bench.processes import established_connections
from bench.report import Row, WorkloadResult
from bench.workloads_h2 import compare
from tests.bench.runner import run_quick
from tests.kit.waits import scaled, within


async def test_established_connections_counts_this_process_to_one_port() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, within(10):
        assert established_connections(os.getpid(), port) == 0
        writers = [(await asyncio.open_connection("127.0.0.1", port))[1] for _ in range(3)]
        # Our three client ends; the server's accepted ends have the port as *local* port.
        assert established_connections(os.getpid(), port) == 3
        for writer in [*writers, *accepted]:
            writer.close()
    assert established_connections(-1, port) == 0  # no such process


def test_compare_puts_http2_beside_http1_through_the_gateway() -> None:
    http1 = WorkloadResult("latency", "", rows=[Row("added p50", "ms", 0.8, target=1.0)])
    http2 = WorkloadResult("latency (h2)", "", rows=[Row("added p50", "ms", 0.6, target=1.0)])
    compare(http1, http2)
    row = http2.rows[-1]
    assert (row.metric, row.through, row.direct) == ("added p50: h2 vs HTTP/1.1", 0.6, 0.8)
    assert row.status == "ok"
    worse = WorkloadResult("throughput (h2)", "", rows=[Row("req/s", "req/s", 3000)])
    compare(WorkloadResult("throughput", "", rows=[Row("req/s", "req/s", 4000)]), worse)
    assert worse.rows[-1].status == "MISSED"
    failed = WorkloadResult("watches", "", error="boom")
    untouched = WorkloadResult("watches (h2)", "", rows=[Row("time to open all", "s", 1.0)])
    compare(failed, untouched)
    assert len(untouched.rows) == 1


@pytest.mark.timeout(scaled(150))
def test_quick_http2_variants_beside_http1(tmp_path: Path) -> None:
    names = ["latency", "latency-h2", "throughput-h2", "watches-h2"]
    stdout, document = run_quick(names, tmp_path, timeout=140)
    assert "latency (h2)" in stdout
    results = {w["workload"]: w for w in document["runs"][0]["workloads"]}
    assert set(results) == {"latency", "latency (h2)", "throughput (h2)", "watches (h2)"}
    assert all(result["error"] is None for result in results.values()), results
    latency = {row["metric"]: row for row in results["latency (h2)"]["rows"]}
    assert latency["p50"]["through"] > latency["p50"]["direct"] > 0
    assert latency["added p50: h2 vs HTTP/1.1"]["direct"] > 0  # the HTTP/1.1 run's figure
    assert results["latency (h2)"]["info"]["errors"] == {"through": 0, "direct": 0}
    throughput = {row["metric"]: row for row in results["throughput (h2)"]["rows"]}
    assert throughput["req/s"]["through"] > 0
    watches = {row["metric"]: row for row in results["watches (h2)"]["rows"]}
    streams = results["watches (h2)"]["info"]["streams"]
    # Every watch's events flow (one a second each), over a few connections on both hops.
    assert watches["events flowing"]["through"] >= 0.5 * streams
    assert 1 <= watches["agent connections to the API server"]["through"] <= 50
    assert watches["client connections"]["through"] >= 1
