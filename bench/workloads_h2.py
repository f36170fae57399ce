"""HTTP/2 on both outer hops (issue #14): the h2 client's closed loop (`bench.drivers.H2Driver`
runs `latency` and `throughput` with it) and the `watches` variant.

Through = HTTP/2 on both outer hops: `bench.h2client` to the gateway's caller port (ALPN h2) for
plane `FAST_H2`, whose agent speaks HTTP/2 to the fast upstream (`--upstream-http2`). Direct =
the same client to the upstream's own HTTP/2 side. Each result is named `<workload> (h2)`;
`compare` adds, when the run measured the HTTP/1.1 workload too, the rows that put HTTP/2
beside it (in those rows the "direct" column holds the HTTP/1.1 figure).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from bench.agents import profiled
from bench.client import Latencies
from bench.h2client import H2Client, H2ClientError, Header
from bench.processes import (
    FAST,
    FAST_H2,
    Stack,
    Target,
    budget,
    established_connections,
    rss_bytes,
)
from bench.report import Row, WorkloadResult

SMALL = "/api/v1/namespaces/bench/configmaps/small"
WATCH = "/api/v1/namespaces/bench/configmaps?watch=true&events=0&interval=1"
UPSTREAM_CONNECTIONS_TARGET = 50
"""Connections the agent may hold to its API server for 10,000 watches (issue #14)."""


class H2Target:
    """A `Target` as `bench.h2client` needs it: host, port, path prefix, headers."""

    def __init__(self, target: Target) -> None:
        if target.h2_ssl is None:
            raise RuntimeError(f"{target.name}: no HTTP/2 TLS context for {target.base}")
        url = urlsplit(target.base)
        self.name = target.name
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        self.prefix = url.path.rstrip("/")
        self.ssl = target.h2_ssl
        self.headers: list[Header] = [
            (name.lower().encode(), value.encode()) for name, value in target.headers.items()
        ]

    async def connect(self) -> H2Client:
        try:
            return await H2Client.connect(self.host, self.port, self.ssl)
        except H2ClientError as error:
            raise RuntimeError(f"{self.name}: {error}") from None


def targets(stack: Stack) -> tuple[H2Target, H2Target]:
    """Through (both hops HTTP/2) and direct (HTTP/2 to the upstream)."""
    return H2Target(stack.through[FAST_H2]), H2Target(stack.direct[FAST])


async def closed_loop(
    client: H2Client,
    target: H2Target,
    path: str,
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
) -> tuple[Latencies, float]:
    """`concurrency` workers GET `path` back to back on the one connection `client`, for
    `requests` GETs in all or for `duration` seconds: the latencies and the wall time."""
    latencies = Latencies()
    full_path, headers = target.prefix + path, target.headers
    budget_left = [requests if requests is not None else 1 << 62]
    deadline = time.perf_counter() + (duration if duration is not None else 1e9)
    clock = time.perf_counter
    samples = latencies.samples

    async def worker() -> None:
        while budget_left[0] > 0 and clock() < deadline:
            budget_left[0] -= 1
            started = clock()
            try:
                status, _, _ = await client.get(full_path, headers)
            except H2ClientError:
                status = 0
            if status == 200:
                samples.append(clock() - started)
            else:
                latencies.errors += 1

    started = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, clock() - started


# -- watches ------------------------------------------------------------------------------------


class WatchSet:
    """`n` watches over as many HTTP/2 connections as the server's stream limit needs (as
    client-go does: a connection carries what the server allows, then another opens)."""

    def __init__(self, target: H2Target, n: int) -> None:
        self.target = target
        self.n = n
        self.lines = 0
        """Event lines received by all the watches."""
        self.clients: list[H2Client] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._opened = asyncio.Semaphore(0)
        self._failures: list[str] = []
        self.opened = 0
        """Watches that had their first event."""

    async def open(self) -> float:
        """Open every watch; returns the seconds until each had its first event."""
        started = time.perf_counter()
        self.clients.append(await self.target.connect())
        per_client = self.clients[0].max_concurrent_streams
        more = math.ceil(self.n / per_client) - 1
        connected = await asyncio.gather(
            *(self.target.connect() for _ in range(more)), return_exceptions=True
        )
        self.clients += [each for each in connected if isinstance(each, H2Client)]
        for each in connected:
            if isinstance(each, BaseException):
                raise each  # `close` closes those that connected
        path = self.target.prefix + WATCH
        self._tasks = [
            asyncio.create_task(self._watch(self.clients[i // per_client], path))
            for i in range(self.n)
        ]
        for _ in range(self.n):
            await self._opened.acquire()
            if self._failures:
                raise RuntimeError(
                    f"{self.target.name}: {len(self._failures)} watches failed, the "
                    f"first: {self._failures[0]}"
                )
            self.opened += 1
        return time.perf_counter() - started

    async def _watch(self, client: H2Client, path: str) -> None:
        first = True
        try:
            async with client.stream(path, self.target.headers) as response:
                if response.status != 200:
                    body = b"".join([chunk async for chunk in response])
                    raise H2ClientError(f"answered {response.status}: {body[:300]!r}")
                async for chunk in response:
                    self.lines += chunk.count(b"\n")
                    if first:
                        self._opened.release()
                        first = False
        except H2ClientError as error:
            self._failures.append(str(error))
            if first:
                self._opened.release()  # `open` finds out why

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()


async def watches(stack: Stack, n: int, *, quick: bool) -> WorkloadResult:
    result = WorkloadResult(
        "watches (h2)", f"{n} concurrent watches over HTTP/2 on both hops, one agent"
    )
    agent_pid = stack.pid("agent-fast-h2")
    per_stream: dict[str, dict[str, float]] = {}
    open_seconds: dict[str, float] = {}
    events: dict[str, float] = {}
    connections: dict[str, int] = {}
    agent_upstream: dict[str, int] = {}
    for target in targets(stack):
        pids = {"upstream": stack.pid("upstream")}
        if target.name == "through":
            pids |= {"gateway": stack.pid("gateway"), "agent": agent_pid}
        baseline = {name: rss_bytes(pid) for name, pid in pids.items()}
        watch_set = WatchSet(target, n)
        try:
            try:
                async with (
                    asyncio.timeout(budget(20.0 if quick else max(60.0, n / 50))),
                    _profiled(stack, "watches-h2", target.name),
                ):
                    open_seconds[target.name] = await watch_set.open()
            except TimeoutError:
                raise RuntimeError(
                    f"{target.name}: {n - watch_set.opened} of {n} watches had no event in time"
                ) from None
            connections[target.name] = len(watch_set.clients)
            await asyncio.sleep(1.0)
            per_stream[target.name] = {
                name: (rss_bytes(pid) - baseline[name]) / n for name, pid in pids.items()
            }
            agent_upstream[target.name] = established_connections(
                agent_pid, stack.ports["upstream"]
            )
            before = watch_set.lines
            await asyncio.sleep(2.0)
            events[target.name] = (watch_set.lines - before) / 2.0
        finally:
            await watch_set.close()
    result.rows.append(
        Row("time to open all", "s", open_seconds["through"], open_seconds["direct"])
    )
    result.rows.append(Row("events flowing", "events/s", events["through"], events["direct"]))
    for name in ("gateway", "agent"):
        result.rows.append(
            Row(
                f"{name} RSS per stream",
                "KiB",
                per_stream["through"][name] / 1024,
                # Judged in full mode only: a few hundred watches take free heap.
                target=None if quick else 10,
                op="<=",
            )
        )
    result.rows.append(
        Row(
            "upstream RSS per stream",
            "KiB",
            per_stream["through"]["upstream"] / 1024,
            per_stream["direct"]["upstream"] / 1024,
        )
    )
    result.rows.append(
        Row(
            "agent connections to the API server",
            "",
            agent_upstream["through"],
            target=UPSTREAM_CONNECTIONS_TARGET,
            op="<=",
        )
    )
    result.rows.append(Row("client connections", "", connections["through"], connections["direct"]))
    result.info = {
        "streams": n,
        "agentUpstreamConnectionsWhileDirect": agent_upstream["direct"],
    }
    return result


@contextlib.asynccontextmanager
async def _profiled(stack: Stack, phase: str, target: str) -> AsyncIterator[None]:
    """py-spy on gateway and HTTP/2 agent while the through load runs (`bench.agents.profiled`:
    only when $PLANELINK_BENCH_PYSPY names a folder)."""
    if target != "through":
        yield
        return
    async with (
        profiled(phase, stack.pid("gateway"), name="gateway"),
        profiled(phase, stack.pid("agent-fast-h2"), name="agent"),
    ):
        yield


# -- HTTP/2 beside HTTP/1.1 ---------------------------------------------------------------------

_COMPARED = {
    # workload: (metric of both results, unit, op): HTTP/2's through figure against HTTP/1.1's
    "latency": ("added p50", "ms", "<="),
    "throughput": ("req/s", "req/s", ">="),
    "watches": ("time to open all", "s", "<="),
}


def compare(http1: WorkloadResult, http2: WorkloadResult) -> None:
    """Add to `http2` the row saying whether it is no worse than `http1` (through the gateway):
    its ratio is HTTP/2 / HTTP/1.1, judged against 1."""
    if http1.error or http2.error or http1.name not in _COMPARED:
        return
    metric, unit, op = _COMPARED[http1.name]
    mine = {row.metric: row for row in http2.rows}.get(metric)
    theirs = {row.metric: row for row in http1.rows}.get(metric)
    if mine is None or theirs is None:
        return
    http2.rows.append(
        Row(
            f"{metric}: h2 vs HTTP/1.1",
            unit,
            mine.through,
            theirs.through,
            target=1.0,
            op=op,
            target_on="ratio",
            note="direct column: the HTTP/1.1 figure through the gateway, same run",
        )
    )
