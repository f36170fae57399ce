"""`resting`: the memory of gateway and agent at rest, and how long each takes to start
(issue #15). A stack of its own, so that no earlier workload's heap is counted.

* resting RSS: VmRSS of the gateway (planes file, certificate callers: the bench stack's
  configuration) and of its one agent, once both are ready and have been idle for a second;
* agent start-up: the agent is stopped, then spawned again as it was started; from the spawn to
  the first small GET answered 200 through the gateway (a GET is in flight at the gateway from
  the start: it waits there for an agent that just left to come back, or is answered 503 and
  sent again 5 ms later); repeated, median and max; and the CPU seconds the agent spent until
  then (what a loaded machine's wall time hides);
* gateway start-up: a second gateway (same PKI and planes file, ports of its own) from its spawn
  to its /readyz answering 200 (polled every 5 ms); repeated, median and max, and its CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import aiohttp

from bench.agents import cpu_seconds
from bench.client import session
from bench.processes import FAST, Proc, Stack, budget, rss_bytes, spawn
from bench.report import Row, WorkloadResult
from envtest import free_port

SMALL = "/api/v1/namespaces/bench/configmaps/small"
MIB = 1 << 20
POLL = 0.005
GATEWAY_RSS_TARGET_MIB = 50
AGENT_RSS_TARGET_MIB = 40
AGENT_START_TARGET_S = 0.5


async def resting(stack: Stack, restarts: int) -> WorkloadResult:
    result = WorkloadResult(
        "resting", f"resting RSS; start-up of agent and gateway ({restarts} starts each)"
    )
    agent = f"agent-{FAST.name}"
    await asyncio.sleep(1.0)
    gateway_rss = rss_bytes(stack.pid("gateway")) / MIB
    agent_rss = rss_bytes(stack.pid(agent)) / MIB
    result.rows.append(
        Row("gateway resting RSS", "MiB", gateway_rss, target=GATEWAY_RSS_TARGET_MIB, op="<=")
    )
    result.rows.append(
        Row("agent resting RSS", "MiB", agent_rss, target=AGENT_RSS_TARGET_MIB, op="<=")
    )
    agent_runs = [await _agent_start(stack, agent) for _ in range(restarts)]
    gateway_runs = [await _gateway_start(stack, i) for i in range(restarts)]
    agent_starts, agent_cpu = [run[0] for run in agent_runs], [run[1] for run in agent_runs]
    gateway_starts, gateway_cpu = [run[0] for run in gateway_runs], [run[1] for run in gateway_runs]
    result.rows += [
        Row(
            "agent start to first served request, median",
            "s",
            statistics.median(agent_starts),
            target=AGENT_START_TARGET_S,
            op="<=",
        ),
        Row("agent start to first served request, max", "s", max(agent_starts)),
        Row("agent start: its CPU until then, median", "s", statistics.median(agent_cpu)),
        Row("gateway start to /readyz, median", "s", statistics.median(gateway_starts)),
        Row("gateway start to /readyz, max", "s", max(gateway_starts)),
        Row("gateway start: its CPU until then, median", "s", statistics.median(gateway_cpu)),
    ]
    result.info = {
        "agentStartSeconds": [round(s, 4) for s in agent_starts],
        "agentStartCpuSeconds": [round(s, 4) for s in agent_cpu],
        "gatewayStartSeconds": [round(s, 4) for s in gateway_starts],
        "gatewayStartCpuSeconds": [round(s, 4) for s in gateway_cpu],
    }
    return result


async def _agent_start(stack: Stack, name: str) -> tuple[float, float]:
    """Stop the agent, spawn it again: seconds from the spawn to a GET answered through it, and
    the CPU seconds the agent spent until then."""
    target = stack.through[FAST]
    async with session(target, 1) as http:
        await stack.stop_agent(name)
        started = time.perf_counter()
        proc = stack.spawn_agent(name)
        deadline = started + budget(30)
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(target.base + SMALL) as response:
                    await response.read()
                    if response.status == 200:
                        return time.perf_counter() - started, cpu_seconds(proc.pid)
            _still_starting(proc, deadline, "no GET served through it")
            await asyncio.sleep(POLL)


async def _gateway_start(stack: Stack, index: int) -> tuple[float, float]:
    """A second gateway of this stack's configuration: seconds from its spawn to /readyz, and
    the CPU seconds it spent until then."""
    ports = {name: free_port() for name in ("agent", "caller", "operator")}
    url = f"http://127.0.0.1:{ports['operator']}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        started = time.perf_counter()
        proc = spawn(f"gateway-start-{index}", stack.gateway_argv(ports), stack.workdir)
        try:
            deadline = started + budget(30)
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return time.perf_counter() - started, cpu_seconds(proc.pid)
                _still_starting(proc, deadline, f"not ready at {url}")
                await asyncio.sleep(POLL)
        finally:
            await asyncio.to_thread(proc.stop)


def _still_starting(proc: Proc, deadline: float, what: str) -> None:
    if proc.popen.poll() is not None:
        raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
    if time.perf_counter() > deadline:
        raise RuntimeError(f"{proc.name}: {what} within the budget\n{proc.tail()}")
