"""The load generators of `latency` and `throughput`, behind one interface (issue #15).

A `Driver` runs a closed loop of small GETs against a `Target` and returns a `Load`: how many
were answered, their latencies, and the CPU seconds the client itself spent in the measured
window. Three drivers: `AiohttpDriver` (HTTP/1.1, a pool of one connection per worker) and
`H2Driver` (`bench.h2client`, every worker a stream of one HTTP/2 connection) run in the harness
process, so their CPU is that process's over the window (nothing else runs in it meanwhile);
`bench.goclient.GoDriver` is Go's net/http in a process of its own, which reports its own.

The workload hands the driver a `CpuMeter` of the other processes (gateway, agent, upstream):
the driver starts and stops it at the edges of the measured window, after the warm-up.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench import workloads_h2
from bench.agents import cpu_seconds
from bench.client import Latencies, closed_loop, session
from bench.processes import FAST, FAST_H2, Stack, Target
from certs import PlaneRef


class CpuMeter:
    """CPU seconds (user + system, /proc/<pid>/stat) each of `pids` spent between `start` and
    `stop`; a driver adds the client's own (`seconds["client"]`)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.seconds: dict[str, float] = {}
        self._before: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        for name, pid in self.pids.items():
            self.seconds[name] = cpu_seconds(pid) - self._before[name]


@dataclass
class Load:
    """What one measured closed loop gave: answered requests, failures, wall seconds, latency
    percentiles and the CPU seconds of the client and the metered processes."""

    count: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    def cpu_us_per_request(self, *names: str) -> float:
        """The CPU of processes `names` together per answered request, in µs."""
        if not self.count:
            return float("nan")
        return sum(self.cpu[name] for name in names) / self.count * 1e6

    @classmethod
    def of(cls, latencies: Latencies, seconds: float, cpu: dict[str, float]) -> Load:
        return cls(
            len(latencies.samples),
            latencies.errors,
            seconds,
            latencies.ms(50),
            latencies.ms(99),
            cpu,
        )


Measured = Coroutine[Any, Any, tuple[Latencies, float]]
"""A closed loop's latencies and wall seconds, to come."""


async def warm_then_measure(
    run: Callable[[int | None, float | None], Measured],
    meter: CpuMeter,
    measured: tuple[int | None, float | None],
    warmup: tuple[int, float],
) -> Load:
    """`run(requests, duration)` once to warm up (unless `warmup` is none), then once more with
    `meter` running over exactly that window."""
    warmup_requests, warmup_seconds = warmup
    if warmup_requests or warmup_seconds:
        await run(warmup_requests or None, warmup_seconds or None)
    meter.start()
    latencies, seconds = await run(*measured)
    meter.stop()
    return Load.of(latencies, seconds, meter.seconds)


class Driver(Protocol):
    """One kind of client: where it sends its requests and how it runs a closed loop."""

    suffix: str
    """Added to the workload's name: "" (aiohttp), " (h2)", " (go)"."""
    description: str
    plane: PlaneRef
    """The plane it goes through: its agent is `agent-<plane name>`."""

    def targets(self, stack: Stack) -> tuple[Target, Target]:
        """Through the gateway, and directly to the upstream."""
        ...

    async def load(
        self,
        target: Target,
        path: str,
        meter: CpuMeter,
        *,
        concurrency: int,
        requests: int | None = None,
        duration: float | None = None,
        warmup_requests: int = 0,
        warmup_seconds: float = 0.0,
    ) -> Load:
        """Warm up, then GET `path` from `concurrency` workers back to back for `requests` in
        all or `duration` seconds, with `meter` running over exactly that window."""
        ...


class AiohttpDriver:
    """aiohttp in the harness process, one connection per worker (HTTP/1.1)."""

    suffix = ""
    description = "aiohttp, HTTP/1.1, a connection per worker"
    plane = FAST

    def targets(self, stack: Stack) -> tuple[Target, Target]:
        return stack.through[FAST], stack.direct[FAST]

    async def load(
        self,
        target: Target,
        path: str,
        meter: CpuMeter,
        *,
        concurrency: int,
        requests: int | None = None,
        duration: float | None = None,
        warmup_requests: int = 0,
        warmup_seconds: float = 0.0,
    ) -> Load:
        meter.pids["client"] = os.getpid()
        async with session(target, concurrency) as http:

            def run(requests: int | None, duration: float | None) -> Measured:
                return closed_loop(
                    target,
                    path,
                    concurrency=concurrency,
                    requests=requests,
                    duration=duration,
                    client=http,
                )

            return await warm_then_measure(
                run, meter, (requests, duration), (warmup_requests, warmup_seconds)
            )


class H2Driver:
    """`bench.h2client` in the harness process: every worker a stream of ONE HTTP/2 connection,
    through plane `FAST_H2` (HTTP/2 on both outer hops)."""

    suffix = " (h2)"
    description = "HTTP/2 on both outer hops, the workers' streams on ONE connection"
    plane = FAST_H2

    def targets(self, stack: Stack) -> tuple[Target, Target]:
        return stack.through[FAST_H2], stack.direct[FAST]

    async def load(
        self,
        target: Target,
        path: str,
        meter: CpuMeter,
        *,
        concurrency: int,
        requests: int | None = None,
        duration: float | None = None,
        warmup_requests: int = 0,
        warmup_seconds: float = 0.0,
    ) -> Load:
        meter.pids["client"] = os.getpid()
        h2_target = workloads_h2.H2Target(target)
        client = await h2_target.connect()

        def run(requests: int | None, duration: float | None) -> Measured:
            return workloads_h2.closed_loop(
                client,
                h2_target,
                path,
                concurrency=concurrency,
                requests=requests,
                duration=duration,
            )

        try:
            return await warm_then_measure(
                run, meter, (requests, duration), (warmup_requests, warmup_seconds)
            )
        finally:
            await client.close()
