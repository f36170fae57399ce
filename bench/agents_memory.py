"""Where the gateway's memory per idle agent goes: `python -m bench.agents_memory [--count N]`.

Runs the gateway *in this process* (`planelink.local.LocalPlanelink`, the same `Gateway` that
`planelink gateway` runs, heartbeat 10 s / 30 s) under `tracemalloc`, connects the workload-6
swarm (`python -m bench.agents`, a child process) and compares, per idle agent: the growth of
VmRSS, and the growth of Python-allocator memory grouped by the module that allocated it
(`--tls-read-buffer` as the `planelink` command's flag: one read buffer per process, shared by
every connection, since issue #15). What
RSS grew by beyond the traced memory was allocated by C code that bypasses Python's allocators
(OpenSSL's per-connection state, the kernel's socket buffers are not in RSS) or is malloc
overhead and fragmentation. tracemalloc slows the gateway down: the figures are about memory,
not time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

from bench.agents import SwarmProcess, agent_planes, raise_nofile
from bench.processes import rss_bytes
from planelink.local import LocalPlanelink
from planelink.logs import configure_logging
from tunnel import Heartbeat
from tunnel.tls import DEFAULT_TLS_READ_BUFFER, set_tls_read_buffer

KIB = 1024
GROUPS = (
    # (a fragment of the allocating file's path, the group it counts for)
    ("asyncio/sslproto.py", "asyncio TLS (sslproto: its read buffer, max_size, per connection)"),
    ("/ssl.py", "ssl module (SSLObject, MemoryBIO)"),
    ("/asyncio/", "asyncio other (transports, tasks, futures)"),
    ("/websockets/", "websockets (connection, protocol, buffers)"),
    ("/tunnel/", "tunnel (TunnelSession, its tasks and events)"),
    ("/protocol/", "protocol (Connection, scheduler, settings)"),
    ("/gateway/", "gateway (registry, listener, metrics)"),
    ("/prometheus_client/", "prometheus_client (metric children)"),
)


def group_of(filename: str) -> str:
    for fragment, group in GROUPS:
        if fragment in filename:
            return group
    return "other Python"


async def measure(
    count: int, tls_read_buffer: int, top: int = 0
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    raise_nofile()
    # What `planelink --tls-read-buffer` does before its subcommand runs (process-wide).
    set_tls_read_buffer(tls_read_buffer)
    workdir = Path(tempfile.mkdtemp(prefix="planelink-agents-memory-"))
    planes = dict.fromkeys(agent_planes(count), Path(os.devnull))
    local = LocalPlanelink(
        directory=workdir / "pki", planes=planes, heartbeat=Heartbeat(interval=10, timeout=30)
    )
    await local.start_pki_and_gateway()
    assert local.gateway is not None
    registry = local.gateway.agents
    swarm = await SwarmProcess.start(
        workdir, local.gateway.agent_listener.port, count, (10.0, 30.0)
    )
    try:
        await swarm.next("ready")
        tracemalloc.start(1)
        gc.collect()
        rss_before = rss_bytes(os.getpid())
        before = tracemalloc.take_snapshot()
        swarm.send("go")
        await swarm.next("all-up")
        while sum(1 for _ in registry.all_agents()) < count:
            await registry.wait_for_change()
        await asyncio.sleep(12)  # one heartbeat each way
        gc.collect()
        rss_after = rss_bytes(os.getpid())
        after = tracemalloc.take_snapshot()
    finally:
        await swarm.close()
        await local.stop_gateway()
        shutil.rmtree(workdir, ignore_errors=True)
    groups: Counter[str] = Counter()
    lines: list[tuple[str, float]] = []
    for stat in after.compare_to(before, "lineno"):
        frame = stat.traceback[0]
        groups[group_of(frame.filename)] += stat.size_diff
        if len(lines) < top:
            lines.append((f"{frame.filename}:{frame.lineno}", stat.size_diff / count / KIB))
    figures = {group: size / count / KIB for group, size in groups.most_common()}
    traced = sum(groups.values()) / count / KIB
    rss = (rss_after - rss_before) / count / KIB
    figures["= traced by tracemalloc"] = traced
    figures["untraced: C allocations (OpenSSL SSL objects), malloc overhead"] = rss - traced
    figures["= VmRSS growth"] = rss
    return figures, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents_memory", description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="agents (default 500)")
    parser.add_argument(
        "--tls-read-buffer",
        type=int,
        metavar="BYTES",
        default=DEFAULT_TLS_READ_BUFFER,
        help="the gateway's TLS read buffer per connection, as `planelink --tls-read-buffer` "
        f"(default {DEFAULT_TLS_READ_BUFFER}; asyncio's own is 262144)",
    )
    parser.add_argument("--top", type=int, default=0, help="also the N top allocating lines")
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    started = time.perf_counter()
    figures, lines = asyncio.run(measure(args.count, args.tls_read_buffer, args.top))
    print(
        f"gateway memory per idle agent, {args.count} agents, "
        f"TLS read buffer {args.tls_read_buffer} B (KiB):"
    )
    for group, kib in figures.items():
        print(f"  {kib:8.1f}  {group}")
    if lines:
        print("top allocating lines (KiB per agent):")
    for where, kib in lines:
        print(f"  {kib:8.1f}  {where}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
