"""Load generators (aiohttp, a pool of `limit` connections) with latency samples."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field

import aiohttp

from bench.processes import Target


@dataclass
class Latencies:
    """Latency samples in seconds; percentiles by nearest rank."""

    samples: list[float] = field(default_factory=list)
    errors: int = 0

    def percentile(self, q: float) -> float:
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[rank]

    def ms(self, q: float) -> float:
        return self.percentile(q) * 1000


def session(target: Target, limit: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, ssl=target.ssl, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        headers=target.headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        auto_decompress=False,
    )


async def closed_loop(
    target: Target,
    path: str,
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
    client: aiohttp.ClientSession | None = None,
) -> tuple[Latencies, float]:
    """`concurrency` workers GET `path` back to back, for `requests` GETs in all or for
    `duration` seconds. Returns the latencies and the elapsed wall time."""
    latencies = Latencies()
    url = target.base + path
    own = client is None
    http = client or session(target, concurrency)
    budget = [requests if requests is not None else 1 << 62]
    deadline = time.perf_counter() + (duration if duration is not None else 1e9)

    async def worker() -> None:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            started = time.perf_counter()
            try:
                async with http.get(url) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.samples.append(time.perf_counter() - started)
            else:
                latencies.errors += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started
    finally:
        if own:
            await http.close()


async def read_stream(
    http: aiohttp.ClientSession, url: str, *, limit: int | None = None
) -> tuple[int, float]:
    """GET `url` and read its body (up to `limit` bytes); returns (bytes, seconds)."""
    received = 0
    started = time.perf_counter()
    async with http.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status} {await response.text()}")
        while True:
            chunk = await response.content.readany()
            if not chunk:
                break
            received += len(chunk)
            if limit is not None and received >= limit:
                break
    return received, time.perf_counter() - started


async def cancel(task: asyncio.Task[object] | asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
