"""The end-to-end workloads: each measures the same load through the tunnel and directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from bench import workloads_h2
from bench.agents import many_agents, profiled
from bench.client import Latencies, cancel, closed_loop, read_stream, session
from bench.drivers import AiohttpDriver, CpuMeter, Driver, H2Driver, Load
from bench.goclient import GoDriver
from bench.processes import FAST, KUBE, Stack, Target, budget, established_connections, rss_bytes
from bench.report import Row, WorkloadResult
from bench.resting import resting as resting_workload

SMALL = "/api/v1/namespaces/bench/configmaps/small"
MIB = 1 << 20


@dataclass(frozen=True)
class Scale:
    quick: bool
    latency_requests: int
    throughput_seconds: float
    bulk_bytes: int
    fairness_seconds: float
    watches: int
    churn_streams: int
    kube_requests: int

    @classmethod
    def of(cls, quick: bool) -> Scale:
        if quick:
            return cls(True, 300, 2.0, 128 * MIB, 2.0, 200, 300, 100)
        return cls(False, 3000, 10.0, 1024 * MIB, 10.0, 10_000, 100_000, 1000)


class RssSampler:
    """Samples VmRSS of some pids every `interval` seconds; keeps the peak of each."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        self.pids = pids
        self.interval = interval
        self.baseline = {name: rss_bytes(pid) for name, pid in pids.items()}
        self.peak = dict(self.baseline)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_bytes(pid))
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def growth_mib(self, name: str) -> float:
        return (self.peak[name] - self.baseline[name]) / MIB


# -- 1. latency and 2. throughput, with each client (bench/drivers.py) ----------------------


AIOHTTP: Driver = AiohttpDriver()
H2: Driver = H2Driver()
GO: Driver = GoDriver()


async def latency(stack: Stack, scale: Scale, driver: Driver = AIOHTTP) -> WorkloadResult:
    result = WorkloadResult(
        "latency" + driver.suffix,
        f"small GET, concurrency 1 ({driver.description}): p50/p99 through vs direct",
    )
    loads = await _through_and_direct(
        stack,
        driver,
        "latency",
        concurrency=1,
        requests=scale.latency_requests,
        warmup_requests=50,
    )
    through, direct = loads["through"], loads["direct"]
    result.rows.append(Row("p50", "ms", through.p50_ms, direct.p50_ms))
    result.rows.append(Row("p99", "ms", through.p99_ms, direct.p99_ms))
    added_p50, added_p99 = through.p50_ms - direct.p50_ms, through.p99_ms - direct.p99_ms
    result.rows.append(Row("added p50", "ms", added_p50, target=1.0, op="<="))
    result.rows.append(Row("added p99", "ms", added_p99, target=3.0, op="<="))
    result.rows.append(
        Row("added p50 vs direct p50", "ms", added_p50, direct.p50_ms, 1.0, "<=", "ratio")
    )
    result.rows.append(
        Row("added p99 vs direct p99", "ms", added_p99, direct.p99_ms, 1.5, "<=", "ratio")
    )
    result.rows += cpu_rows(through, direct, judged=False)
    result.info = {
        "requests": scale.latency_requests,
        "errors": {"through": through.errors, "direct": direct.errors},
    }
    return result


async def throughput(stack: Stack, scale: Scale, driver: Driver = AIOHTTP) -> WorkloadResult:
    result = WorkloadResult(
        "throughput" + driver.suffix, f"small GETs, concurrency 64 ({driver.description})"
    )
    loads = await _through_and_direct(
        stack,
        driver,
        "throughput",
        concurrency=64,
        duration=scale.throughput_seconds,
        warmup_seconds=0.5,
    )
    through, direct = loads["through"], loads["direct"]
    result.rows.append(Row("req/s", "req/s", through.rate, direct.rate, target=5000))
    result.rows.append(
        Row("req/s vs direct", "req/s", through.rate, direct.rate, 0.5, ">=", "ratio")
    )
    result.rows.append(Row("p99", "ms", through.p99_ms, direct.p99_ms))
    result.rows += cpu_rows(through, direct, judged=True)
    result.info = {
        "seconds": scale.throughput_seconds,
        "errors": {"through": through.errors, "direct": direct.errors},
        "cpuSeconds": {"through": through.cpu, "direct": direct.cpu},
        "note": "on 2 cores the client shares the CPUs with gateway, agent and upstream",
    }
    return result


async def _through_and_direct(
    stack: Stack,
    driver: Driver,
    phase: str,
    *,
    concurrency: int,
    requests: int | None = None,
    duration: float | None = None,
    warmup_requests: int = 0,
    warmup_seconds: float = 0.0,
) -> dict[str, Load]:
    """The same closed loop through the gateway, then directly; the CPU of gateway and agent
    (through) and of the upstream (both) metered over each measured window."""
    agent = stack.pid(f"agent-{driver.plane.name}")
    loads: dict[str, Load] = {}
    for target in driver.targets(stack):
        pids = {"upstream": stack.pid("upstream")}
        if target.name == "through":
            pids |= {"gateway": stack.pid("gateway"), "agent": agent}
        tag = driver.suffix.strip(" ()")
        profiling = (
            _profiled(f"{phase}-{tag}" if tag else phase, stack.pid("gateway"), agent)
            if target.name == "through"
            else contextlib.nullcontext()
        )
        async with profiling:
            load = await driver.load(
                target,
                SMALL,
                CpuMeter(pids),
                concurrency=concurrency,
                requests=requests,
                duration=duration,
                warmup_requests=warmup_requests,
                warmup_seconds=warmup_seconds,
            )
        if not load.count:
            raise RuntimeError(
                f"{target.name}: no request answered ({load.errors} failed: {load.first_error})"
            )
        loads[target.name] = load
    return loads


@contextlib.asynccontextmanager
async def _profiled(phase: str, gateway: int, agent: int) -> AsyncIterator[None]:
    """py-spy on gateway and agent during the block (`bench.agents.profiled`: only when
    $PLANELINK_BENCH_PYSPY names a folder)."""
    async with profiled(phase, gateway, name="gateway"), profiled(phase, agent, name="agent"):
        yield


def cpu_rows(through: Load, direct: Load, *, judged: bool) -> list[Row]:
    """CPU per answered request, in µs, of every process on both paths (issue #15): the client
    (the harness process for aiohttp and h2, the Go process for Go), the upstream, gateway and
    agent; `direct CPU per request` is the client's plus the upstream's (its through column:
    the same two on the through path); the gateway and agent together against it is judged
    against 1 when `judged`."""
    us = "µs"
    direct_cost = direct.cpu_us_per_request("client", "upstream")
    relay = through.cpu_us_per_request("gateway", "agent")
    return [
        Row(
            "client CPU per request",
            us,
            through.cpu_us_per_request("client"),
            direct.cpu_us_per_request("client"),
        ),
        Row(
            "upstream CPU per request",
            us,
            through.cpu_us_per_request("upstream"),
            direct.cpu_us_per_request("upstream"),
        ),
        Row("gateway CPU per request", us, through.cpu_us_per_request("gateway")),
        Row("agent CPU per request", us, through.cpu_us_per_request("agent")),
        Row(
            "direct CPU per request",
            us,
            through.cpu_us_per_request("client", "upstream"),
            direct_cost,
            note="client + upstream; through column: the same two on the through path",
        ),
        Row(
            "(gateway+agent) / direct CPU",
            us,
            relay,
            direct_cost,
            target=1.0 if judged else None,
            op="<=",
            target_on="ratio",
            note="gateway + agent per request against client + upstream on the direct path",
        ),
        Row(
            "total CPU per request",
            us,
            through.cpu_us_per_request("client", "upstream", "gateway", "agent"),
            direct_cost,
        ),
    ]


# -- 3. bulk ------------------------------------------------------------------------------------


async def bulk(stack: Stack, scale: Scale) -> WorkloadResult:
    size = scale.bulk_bytes
    result = WorkloadResult("bulk", f"one {size // MIB} MiB response streamed")
    speeds: dict[str, float] = {}
    pids = {"gateway": stack.pid("gateway"), "agent": stack.pid("agent-fast")}
    sampler = RssSampler(pids)
    for target in (stack.through[FAST], stack.direct[FAST]):
        async with session(target, 1) as http:
            await read_stream(http, f"{target.base}/bytes/{MIB}")
            if target.name == "through":
                sampler = RssSampler(pids)
                with sampler:
                    received, seconds = await read_stream(http, f"{target.base}/bytes/{size}")
            else:
                received, seconds = await read_stream(http, f"{target.base}/bytes/{size}")
        if received != size:
            raise RuntimeError(f"{target.name}: received {received} of {size} bytes")
        speeds[target.name] = size / seconds / 1e6
    result.rows.append(Row("throughput", "MB/s", speeds["through"], speeds["direct"], 300))
    for name in pids:
        result.rows.append(
            Row(f"{name} RSS growth", "MiB", sampler.growth_mib(name), target=64, op="<=")
        )
    result.info = {
        "bytes": size,
        "rssBaselineMiB": {k: v / MIB for k, v in sampler.baseline.items()},
    }
    return result


# -- 4. fairness --------------------------------------------------------------------------------


async def fairness(stack: Stack, scale: Scale) -> WorkloadResult:
    result = WorkloadResult(
        "fairness", "small GETs at concurrency 8 beside a saturating bulk stream"
    )
    p99: dict[str, float] = {}
    p50: dict[str, float] = {}
    bulk_rate: dict[str, float] = {}
    for target in (stack.through[FAST], stack.direct[FAST]):
        async with session(target, 1) as bulk_http, session(target, 8) as http:
            await closed_loop(target, SMALL, concurrency=8, requests=64, client=http)
            counter = [0]

            async def drain(
                http: aiohttp.ClientSession = bulk_http,
                base: str = target.base,
                counter: list[int] = counter,
            ) -> None:
                async with http.get(f"{base}/bytes/{1 << 40}?watch=true") as response:
                    while chunk := await response.content.readany():
                        counter[0] += len(chunk)

            task = asyncio.create_task(drain())
            await asyncio.sleep(0.3)  # let the stream fill the windows
            before, started = counter[0], time.perf_counter()
            samples, _ = await closed_loop(
                target, SMALL, concurrency=8, duration=scale.fairness_seconds, client=http
            )
            bulk_rate[target.name] = (counter[0] - before) / (time.perf_counter() - started) / 1e6
            await cancel(task)
        p99[target.name], p50[target.name] = samples.ms(99), samples.ms(50)
    result.rows.append(Row("small GET p50", "ms", p50["through"], p50["direct"]))
    result.rows.append(Row("small GET p99", "ms", p99["through"], p99["direct"], 10, "<="))
    result.rows.append(Row("bulk meanwhile", "MB/s", bulk_rate["through"], bulk_rate["direct"]))
    return result


# -- 5. many watches ----------------------------------------------------------------------------


async def watches(stack: Stack, scale: Scale) -> WorkloadResult:
    n = scale.watches
    result = WorkloadResult("watches", f"{n} concurrent watch streams over one agent")
    path = "/api/v1/namespaces/bench/configmaps?watch=true&events=0&interval=1"
    per_stream: dict[str, dict[str, float]] = {}
    open_seconds: dict[str, float] = {}
    events: dict[str, float] = {}
    agent_upstream: dict[str, int] = {}
    for target in (stack.through[FAST], stack.direct[FAST]):
        pids = {"upstream": stack.pid("upstream")}
        if target.name == "through":
            pids |= {"gateway": stack.pid("gateway"), "agent": stack.pid("agent-fast")}
        async with session(target, n) as http:
            await asyncio.sleep(0.2)
            baseline = {name: rss_bytes(pid) for name, pid in pids.items()}
            counter = [0]
            opened = asyncio.Semaphore(0)

            failures: list[str] = []

            async def watch(
                http: aiohttp.ClientSession = http,
                url: str = target.base + path,
                counter: list[int] = counter,
                opened: asyncio.Semaphore = opened,
                failures: list[str] = failures,
            ) -> None:
                first = True
                try:
                    async with http.get(url) as response:
                        async for _line in response.content:
                            counter[0] += 1
                            if first:
                                opened.release()
                                first = False
                except aiohttp.ClientError as error:
                    failures.append(f"{type(error).__name__}: {error}")
                    if first:
                        opened.release()  # the wait below says why

            started = time.perf_counter()
            tasks = [asyncio.create_task(watch()) for _ in range(n)]
            try:
                await _all_opened(stack, target.name, opened, failures, n, quick=scale.quick)
                open_seconds[target.name] = time.perf_counter() - started
                await asyncio.sleep(1.0)
                per_stream[target.name] = {
                    name: (rss_bytes(pid) - baseline[name]) / n for name, pid in pids.items()
                }
                agent_upstream[target.name] = established_connections(
                    stack.pid("agent-fast"), stack.ports["upstream"]
                )
                before = counter[0]
                await asyncio.sleep(2.0)
                events[target.name] = (counter[0] - before) / 2.0
            finally:
                await asyncio.gather(*(cancel(task) for task in tasks))
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
                target=None if scale.quick else 10,
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
    result.rows.append(Row("agent connections to the API server", "", agent_upstream["through"]))
    result.info = {"streams": n}
    return result


async def _all_opened(
    stack: Stack,
    name: str,
    opened: asyncio.Semaphore,
    failures: list[str],
    n: int,
    *,
    quick: bool,
) -> None:
    """Wait until `n` watches released `opened` (each at its first event); fail with why at the
    first failure, or when the budget is spent."""
    got = 0
    try:
        async with asyncio.timeout(budget(20.0 if quick else max(60.0, n / 50))):
            for _ in range(n):
                await opened.acquire()
                if failures:
                    raise RuntimeError(
                        f"{name}: {len(failures)} watches failed, the first: {failures[0]}; "
                        f"{await _diagnose(stack)}"
                    )
                got += 1
    except TimeoutError:
        raise RuntimeError(
            f"{name}: {n - got} of {n} watches had no event in time; {await _diagnose(stack)}"
        ) from None


# -- 7. churn -----------------------------------------------------------------------------------


async def _diagnose(stack: Stack) -> str:
    """What the gateway and the agent say about the tunnel, for a workload that got stuck."""
    planes = await stack.gateway_planes()
    agents = [agent for plane in planes["planes"] for agent in plane["agents"]]  # type: ignore[attr-defined]
    metrics = await stack.agent_metrics(FAST)
    picked = {
        k: v
        for k, v in metrics.items()
        if k.startswith(("planelink_agent_streams_", "planelink_agent_tunnel_up"))
        and "bucket" not in k
    }
    logs = {name: stack.procs[name].tail(15) for name in ("gateway", "agent-fast", "upstream")}
    return (
        f"gateway agents: {json.dumps(agents)}; agent metrics: {json.dumps(picked)}; "
        f"logs: {json.dumps(logs)}"
    )


async def _stream_tables(stack: Stack) -> dict[str, float]:
    planes = await stack.gateway_planes()
    open_streams = 0
    for plane in planes["planes"]:  # type: ignore[attr-defined]
        for agent in plane["agents"]:
            open_streams += agent["openStreams"]
    agent = await stack.agent_metrics(FAST)
    gateway = await stack.gateway_metrics()
    return {
        "gatewayOpenStreams": open_streams,
        "agentActiveStreams": agent.get("planelink_agent_streams_active", -1),
        "gatewayTasks": gateway.get("planelink_gateway_asyncio_tasks", -1),
        "agentTasks": agent.get("planelink_agent_asyncio_tasks", -1),
        "gatewayRssMiB": rss_bytes(stack.pid("gateway")) / MIB,
        "agentRssMiB": rss_bytes(stack.pid("agent-fast")) / MIB,
    }


_CHURN_CONCURRENCY = 64
_SETTLED_KEYS = ("gatewayOpenStreams", "agentActiveStreams", "gatewayTasks", "agentTasks")


async def churn(stack: Stack, scale: Scale) -> WorkloadResult:
    n = scale.churn_streams
    result = WorkloadResult("churn", f"{n} short streams, about half cancelled at random")
    rng = random.Random(7)  # noqa: S311 - a reproducible load, not a secret
    target = stack.through[FAST]
    paths = [
        SMALL,
        f"/bytes/{256 * 1024}",
        "/api/v1/namespaces/bench/configmaps?watch=true&events=20&interval=0.005",
    ]
    baseline = await _stream_tables(stack)
    outcomes = {"completed": 0, "cancelled": 0, "failed": 0}
    remaining = [n]
    started = time.perf_counter()
    async with session(target, _CHURN_CONCURRENCY) as http:

        async def one(path: str, cancel_after: float | None) -> None:
            task = asyncio.create_task(read_stream(http, target.base + path))
            if cancel_after is not None:
                done, _ = await asyncio.wait({task}, timeout=cancel_after)
                if not done:
                    await cancel(task)
                    outcomes["cancelled"] += 1
                    return
            try:
                await task
                outcomes["completed"] += 1
            except (aiohttp.ClientError, RuntimeError):
                outcomes["failed"] += 1

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                cancel_after = rng.uniform(0, 0.05) if rng.random() < 0.5 else None
                await one(rng.choice(paths), cancel_after)

        await asyncio.gather(*(worker() for _ in range(_CHURN_CONCURRENCY)))
    elapsed = time.perf_counter() - started
    after: dict[str, float] = {}
    settled = time.perf_counter()
    deadline = settled + budget(5 if scale.quick else 30)
    while time.perf_counter() < deadline:
        after = await _stream_tables(stack)
        if all(after[key] <= baseline[key] for key in _SETTLED_KEYS):
            break
        await asyncio.sleep(0.1)
    settle = time.perf_counter() - settled
    result.rows.append(Row("streams/s", "1/s", n / elapsed))
    for key, label in (
        ("gatewayOpenStreams", "gateway open streams after"),
        ("agentActiveStreams", "agent active streams after"),
        ("gatewayTasks", "gateway asyncio tasks after"),
        ("agentTasks", "agent asyncio tasks after"),
    ):
        result.rows.append(Row(label, "", after[key], target=baseline[key], op="<="))
    result.rows.append(Row("time to baseline", "s", settle))
    result.rows.append(
        Row("gateway RSS growth", "MiB", after["gatewayRssMiB"] - baseline["gatewayRssMiB"])
    )
    result.rows.append(
        Row("agent RSS growth", "MiB", after["agentRssMiB"] - baseline["agentRssMiB"])
    )
    result.info = {"outcomes": outcomes, "baseline": baseline, "after": after}
    return result


# -- kube: a real kube-apiserver ----------------------------------------------------------------


async def kube(stack: Stack, scale: Scale) -> WorkloadResult:
    result = WorkloadResult("kube", "real kube-apiserver (envtest): GET, LIST, WATCH event latency")
    direct, through = stack.direct[KUBE], stack.through[KUBE]
    ns = "/api/v1/namespaces/default/configmaps"
    async with session(direct, 8) as http:
        for i in range(100):
            body = {"metadata": {"name": f"cm-{i}"}, "data": {"k": "v" * 100}}
            async with http.post(direct.base + ns, json=body) as response:
                if response.status not in (201, 409):
                    raise RuntimeError(f"create configmap: {response.status}")
    figures: dict[str, dict[str, Latencies]] = {}
    for target in (through, direct):
        async with session(target, 1) as http:
            await closed_loop(target, ns + "/cm-0", concurrency=1, requests=20, client=http)
            get, _ = await closed_loop(
                target, ns + "/cm-0", concurrency=1, requests=scale.kube_requests, client=http
            )
            lst, _ = await closed_loop(
                target, ns, concurrency=1, requests=scale.kube_requests // 5, client=http
            )
        watch = await _watch_latency(target, ns, 10 if scale.quick else 50)
        figures[target.name] = {"get": get, "list": lst, "watch": watch}
    for kind, label in (("get", "GET object"), ("list", "LIST 100"), ("watch", "WATCH event")):
        for q in (50, 99):
            result.rows.append(
                Row(
                    f"{label} p{q}",
                    "ms",
                    figures["through"][kind].ms(q),
                    figures["direct"][kind].ms(q),
                )
            )
    return result


async def _watch_latency(target: Target, ns: str, events: int) -> Latencies:
    """Time from a configmap update (sent through the same target) to its watch event."""
    latencies = Latencies()
    async with session(target, 4) as http:
        async with http.get(target.base + ns) as listed:
            version = (await listed.json())["metadata"]["resourceVersion"]
        url = f"{target.base}{ns}?watch=true&resourceVersion={version}"
        async with http.get(url) as response:
            for i in range(events):
                started = time.perf_counter()
                body = {"metadata": {"name": "cm-0"}, "data": {"k": f"v{i}-{started}"}}
                async with http.put(target.base + ns + "/cm-0", json=body) as put:
                    await put.read()
                marker = f"v{i}-{started}".encode()
                while True:
                    line = await asyncio.wait_for(response.content.readline(), 10)
                    if marker in line:
                        latencies.samples.append(time.perf_counter() - started)
                        break
    return latencies


# -- the other clients, and watches over HTTP/2 (bench/workloads_h2.py, issue #14) -------------


async def latency_h2(stack: Stack, scale: Scale) -> WorkloadResult:
    return await latency(stack, scale, H2)


async def throughput_h2(stack: Stack, scale: Scale) -> WorkloadResult:
    return await throughput(stack, scale, H2)


async def latency_go(stack: Stack, scale: Scale) -> WorkloadResult:
    return await latency(stack, scale, GO)


async def throughput_go(stack: Stack, scale: Scale) -> WorkloadResult:
    return await throughput(stack, scale, GO)


async def watches_h2(stack: Stack, scale: Scale) -> WorkloadResult:
    return await workloads_h2.watches(stack, scale.watches, quick=scale.quick)


async def resting(stack: Stack, scale: Scale) -> WorkloadResult:
    return await resting_workload(stack, 3 if scale.quick else 7)


Workload = Callable[[Stack, Scale], Awaitable[WorkloadResult]]
WORKLOADS: dict[str, Workload] = {
    "latency": latency,
    "latency-h2": latency_h2,
    "throughput": throughput,
    "throughput-h2": throughput_h2,
    "latency-go": latency_go,
    "throughput-go": throughput_go,
    "bulk": bulk,
    "fairness": fairness,
    "watches": watches,
    "watches-h2": watches_h2,
    "churn": churn,
    "kube": kube,
    "resting": resting,  # bench/resting.py; runs in a stack of its own
    "agents": many_agents,  # workload 6, bench/agents.py; runs in a stack of its own
}
HTTP2_VARIANTS = {"latency-h2": "latency", "throughput-h2": "throughput", "watches-h2": "watches"}
"""Each HTTP/2 variant and the HTTP/1.1 workload it is put beside."""
BOUNDS = {"quick": 60.0, "full": 600.0}


async def run_workload(name: str, stack: Stack, scale: Scale) -> WorkloadResult:
    """Run one workload within its time bound; a failure is reported, not raised."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget(BOUNDS["quick" if scale.quick else "full"])):
            result = await WORKLOADS[name](stack, scale)
    except (Exception, TimeoutError) as error:
        result = WorkloadResult(name, "failed", error=f"{type(error).__name__}: {error}")
    with contextlib.suppress(Exception):
        result.seconds = time.perf_counter() - started
    return result
