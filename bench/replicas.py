"""Workload 7, replicas (issue #12): several `planelink gateway` replicas serving any plane.

Three parts, each in a stack of its own (`ReplicaStack`: the fast upstream, one PKI with the
peers' own CA from `certs.issue_peer`, and replicas that share presence through one
`--presence-dir`, so no control plane is needed):

1. **forwarded vs local**: replicas A and B, one real agent dialling A alone
   (`--max-tunnels 1`); once B's /planes says A holds the plane, small GETs through A (local),
   through B (forwarded to A over the peer listener) and directly: the added latency of the
   hop between replicas.
2. **a new replica, many agents**: A alone behind HAProxy, N agents of the swarm
   (`bench.agents`, each with the agent's `TunnelSet` and `Seeker`) all on A; then B starts
   (declared in HAProxy from the start, down until its /readyz check passes): the time until B
   holds a tunnel from every agent, the connections each replica was given meanwhile
   (HAProxy's `stot`), the dials that landed on a replica already held, B's RSS per tunnel.
3. **rolling restart under load**: three replicas behind HAProxy (agent and caller frontends,
   /readyz checks), one real agent holding a tunnel to each, a closed loop of small GETs through
   the balancer; each replica in turn is SIGTERMed, waited for, started again on its ports, and
   the agent waited for until it holds three tunnels again: every failed request is counted.

A part that fails is reported (the workload's error names it) and the next part still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

import certs
from bench.agents import (
    COUNTS,
    HEARTBEAT,
    KIB,
    MEMORY_TARGET_KIB,
    NAMESPACE,
    SwarmProcess,
    agent_planes,
    raise_nofile,
)
from bench.client import Latencies, closed_loop, session
from bench.processes import (
    FAST,
    Proc,
    Stack,
    Target,
    budget,
    caller_target,
    rss_bytes,
    scrape,
    spawn,
    wait_http_ok,
    wait_port,
)
from bench.report import Row, WorkloadResult
from certs import PlaneRef
from envtest import free_port
from envtest.haproxy import Frontend, LoadBalancer, Server

if TYPE_CHECKING:
    from bench.workloads import Scale

SMALL = "/api/v1/namespaces/bench/configmaps/small"
FORWARD_TARGET_MS = 0.5
"""Added p50 of a forwarded request over a local one (issue #12)."""
CONVERGE_TARGET = 30.0
"""Seconds until every agent holds a tunnel to a new replica (issue #12, at 2,000 agents)."""
QUICK_PAUSE = 0.05
"""The load's pause between requests in quick mode (`Load.pause`); none in full mode."""
BOUNDS = {"quick": 60.0, "full": 600.0}
"""Each part's time bound (scaled by `budget`)."""


@dataclass
class Replica:
    """One gateway replica of a `ReplicaStack`: its id, its ports, its process while it runs."""

    identity: str
    """Its name here: HAProxy's server, its log files."""
    ports: dict[str, int]
    proc: Proc | None = None
    starts: int = 0
    replica_id: str = ""
    """The id the running process gives itself (its /planes `replica`): REPLICAS and
    presence name it so."""

    @property
    def server(self) -> Server:
        """As HAProxy sees it: agent and caller ports, /readyz on the operator port."""
        return Server(
            self.identity,
            {"agents": self.ports["agent"], "callers": self.ports["caller"]},
            self.ports["operator"],
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['operator']}{path}"


@dataclass
class ReplicaStack(Stack):
    """The fast upstream and the PKI of several replicas (with the peers' own CA) that share
    presence through one directory; the workload starts replicas and agents."""

    replicas: dict[str, Replica] = field(default_factory=dict)
    kubeconfigs: dict[PlaneRef, Path] = field(default_factory=dict)
    """The upstreams' kubeconfigs, for real agents."""
    caller_ssl: ssl.SSLContext | None = None
    """The callers' TLS (their certificate, the gateway CA), once the PKI is written."""

    @property
    def presence(self) -> Path:
        return self.workdir / "presence"

    async def start(self) -> None:
        self.kubeconfigs = {FAST: self._start_upstream()}
        self.caller_ssl = self._write_pki(self.kubeconfigs).caller_ssl_context()
        self._write_peer_pki()
        self.presence.mkdir(mode=0o700)
        await wait_port(self.ports["upstream"], self.procs["upstream"])

    def _write_peer_pki(self) -> None:
        peers = self.workdir / "pki/peers"
        ca = certs.create_ca("bench peers")
        leaf = certs.issue_peer(ca)
        peers.mkdir(parents=True)
        (peers / "ca.crt").write_bytes(ca.certificate_pem())
        (peers / "tls.crt").write_bytes(leaf.chain_pem())
        (peers / "tls.key").touch(mode=0o600)
        (peers / "tls.key").write_bytes(leaf.private_key_pem())

    def add_replica(self, identity: str) -> Replica:
        ports = {name: free_port() for name in ("agent", "caller", "operator", "peer")}
        replica = self.replicas[identity] = Replica(identity, ports)
        return replica

    def spawn_replica(self, identity: str) -> Replica:
        """Start replica `identity`'s process (not waiting for it)."""
        replica = self.replicas[identity]
        peers = self.workdir / "pki/peers"
        argv = self.gateway_argv(
            replica.ports,
            *("--identity", identity, "--presence-dir", str(self.presence)),
            *("--peer-port", str(replica.ports["peer"]), "--peer-host", "127.0.0.1"),
            *("--peer-advertise", "127.0.0.1", "--peer-certificate", str(peers / "tls.crt")),
            *("--peer-key", str(peers / "tls.key"), "--peer-ca", str(peers / "ca.crt")),
        )
        replica.starts += 1
        name = f"gateway-{identity}-{replica.starts}"
        replica.proc = self.procs[name] = spawn(name, argv, self.workdir)
        return replica

    async def start_replica(self, identity: str) -> Replica:
        """Start replica `identity` and return once it is ready (/readyz)."""
        replica = self.spawn_replica(identity)
        assert replica.proc is not None
        await wait_http_ok(replica.url("/readyz"), replica.proc)
        replica.replica_id = (await self.planes(identity))["replica"]
        return replica

    async def stop_replica(self, identity: str) -> int | None:
        """SIGTERM replica `identity` (SIGKILL after 5 s) and wait for its exit; its code."""
        replica = self.replicas[identity]
        proc, replica.proc = replica.proc, None
        if proc is None:
            return None
        self.procs.pop(proc.name, None)
        await asyncio.to_thread(proc.stop)
        return proc.popen.returncode

    async def planes(self, identity: str) -> dict[str, Any]:
        url = self.replicas[identity].url("/planes")
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            body: dict[str, Any] = await response.json()
            return body

    async def metrics(
        self, identity: str, http: aiohttp.ClientSession | None = None
    ) -> dict[str, float]:
        return await scrape(self.replicas[identity].url("/metrics"), http)

    def target(self, name: str, caller_port: int) -> Target:
        """Requests to the fast plane through `caller_port` (a replica's or the balancer's)."""
        assert self.caller_ssl is not None, "the stack is not started"
        return caller_target(name, caller_port, FAST, self.caller_ssl)


async def poll(
    check: Callable[[], Awaitable[bool]], *, within: float, interval: float, what: str
) -> float:
    """Await `check()` every `interval` s until it holds; the time it did (monotonic). Raises
    TimeoutError naming `what` after `budget(within)` seconds; errors of a check are retried."""
    deadline = time.monotonic() + budget(within)
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError, ValueError, KeyError):
            if await check():
                return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {budget(within):.0f} s")
        await asyncio.sleep(interval)


def summed(samples: dict[str, float], prefix: str) -> float:
    """The sum of the samples whose name (with labels) starts with `prefix`."""
    return sum(value for name, value in samples.items() if name.startswith(prefix))


# -- 1. forwarded vs local ----------------------------------------------------------------------


async def forwarded_latency(scale: Scale, result: WorkloadResult) -> None:
    async with ReplicaStack() as stack:
        a, b = stack.add_replica("gw-a"), stack.add_replica("gw-b")
        await asyncio.gather(stack.start_replica(a.identity), stack.start_replica(b.identity))
        await stack.start_agent(
            FAST, stack.kubeconfigs[FAST], "--max-tunnels", "1", gateway_port=a.ports["agent"]
        )

        async def b_sees_a_holding() -> bool:
            for plane in (await stack.planes(b.identity))["planes"]:
                if (plane["namespace"], plane["name"]) == (FAST.namespace, FAST.name):
                    held = plane.get("agentReplicas", [])
                    return any(entry["replicas"] == [a.replica_id] for entry in held)
            return False

        await poll(b_sees_a_holding, within=20, interval=0.05, what="B never saw A hold the plane")
        forwarded_before = await stack.metrics(b.identity)
        figures: dict[str, Latencies] = {}
        targets = {
            "local": stack.target("local", a.ports["caller"]),
            "forwarded": stack.target("forwarded", b.ports["caller"]),
            "direct": stack.direct[FAST],
        }
        for name, target in targets.items():
            async with session(target, 1) as http:
                await closed_loop(target, SMALL, concurrency=1, requests=50, client=http)
                figures[name], _ = await closed_loop(
                    target, SMALL, concurrency=1, requests=scale.latency_requests, client=http
                )
        forwarded_after = await stack.metrics(b.identity)
    local, forwarded, direct = figures["local"], figures["forwarded"], figures["direct"]
    prefix = "planelink_gateway_forwarded_requests_total"
    hops = summed(forwarded_after, prefix) - summed(forwarded_before, prefix)
    if hops < scale.latency_requests:
        raise RuntimeError(f"B forwarded {hops:.0f} of {scale.latency_requests} requests")
    for q in (50, 99):
        result.rows.append(Row(f"forwarded vs local p{q}", "ms", forwarded.ms(q), local.ms(q)))
    result.rows.append(
        Row(
            "forwarded: added p50 over local",
            "ms",
            forwarded.ms(50) - local.ms(50),
            target=FORWARD_TARGET_MS,
            op="<=",
        )
    )
    result.rows.append(
        Row("forwarded: added p99 over local", "ms", forwarded.ms(99) - local.ms(99))
    )
    result.rows.append(Row("local vs direct p50", "ms", local.ms(50), direct.ms(50)))
    result.info["forwarded"] = {
        "requests": scale.latency_requests,
        "forwardedByB": hops,
        "errors": {name: figure.errors for name, figure in figures.items()},
    }


# -- 2. a new replica, many agents --------------------------------------------------------------


async def new_replica(scale: Scale, result: WorkloadResult) -> None:
    mode = "quick" if scale.quick else "full"
    n = COUNTS[mode]
    interval, timeout = HEARTBEAT[mode]
    heartbeat = ("--heartbeat-interval", str(interval), "--heartbeat-timeout", str(timeout))
    raise_nofile()
    async with ReplicaStack(extra_planes=agent_planes(n), gateway_args=heartbeat) as stack:
        a, b = stack.add_replica("gw-a"), stack.add_replica("gw-b")
        balancer = LoadBalancer(
            stack.workdir / "haproxy",
            [a.server, b.server],
            frontends=(Frontend("agents", "leastconn"),),
            enabled={a.identity, b.identity},
            maxconn=4 * n + 1000,  # two tunnels per agent, dials in flight, checks
            factor=budget(1.0),
        )
        await stack.start_replica(a.identity)
        await balancer.start()
        swarm = await SwarmProcess.start(
            stack.workdir, balancer.port("agents"), n, (interval, timeout), replicas=True
        )
        try:
            async with aiohttp.ClientSession() as http:
                await _converge(
                    stack,
                    balancer=balancer,
                    swarm=swarm,
                    http=http,
                    n=n,
                    interval=interval,
                    result=result,
                )
        finally:
            await swarm.close()
            await balancer.stop()


async def held_agents(stack: ReplicaStack, identity: str, http: aiohttp.ClientSession) -> int:
    """Agents of the swarm's planes replica `identity` counts as connected (its /metrics)."""
    samples = await stack.metrics(identity, http)
    return int(summed(samples, f'planelink_gateway_agents_connected{{plane="{NAMESPACE}/'))


async def _converge(
    stack: ReplicaStack,
    *,
    balancer: LoadBalancer,
    swarm: SwarmProcess,
    http: aiohttp.ClientSession,
    n: int,
    interval: float,
    result: WorkloadResult,
) -> None:
    a, b = stack.replicas["gw-a"], stack.replicas["gw-b"]
    limit = 60.0 if n < COUNTS["full"] else 300.0
    await swarm.next("ready")
    swarm.send("go")
    await swarm.next("all-up")

    async def a_holds_all() -> bool:
        return await held_agents(stack, a.identity, http) >= n

    await poll(a_holds_all, within=limit, interval=0.1, what=f"A never held {n} agents")
    before = await swarm.stats()
    sessions = await balancer.sessions("agents")
    started = time.monotonic()
    replica = stack.spawn_replica(b.identity)
    assert replica.proc is not None
    await wait_http_ok(b.url("/readyz"), replica.proc)
    ready = time.monotonic()
    rss_ready = rss_bytes(replica.proc.pid)

    async def every_agent_holds_two() -> bool:
        # The agents' own count (what the issue asks): each holds at most one tunnel per
        # replica (TunnelSet), so 2 N tunnels are N on A and N on B.
        return int((await swarm.stats())["tunnels"]) >= 2 * n

    held = await poll(
        every_agent_holds_two, within=limit, interval=0.05, what=f"B never held {n} agents"
    )
    after_sessions = await balancer.sessions("agents")
    after = await swarm.stats()
    await asyncio.sleep(interval)  # the first heartbeats go by, as in the agents workload
    per_tunnel = (rss_bytes(replica.proc.pid) - rss_ready) / n / KIB
    moving = held - ready  # HAProxy gives B no connection before its /readyz check passes
    given = {name: after_sessions[name] - sessions.get(name, 0) for name in after_sessions}
    duplicates = after["duplicateDials"] - before["duplicateDials"]
    result.rows += [
        Row(
            f"new replica: all {n} agents hold a tunnel to it",
            "s",
            held - started,
            target=CONVERGE_TARGET,
            op="<=",
        ),
        Row("new replica: of which starting (until /readyz)", "s", ready - started),
        Row("new replica: of which agents moving (after /readyz)", "s", moving),
        Row("new replica: connections given to it meanwhile", "conn/s", given[b.identity] / moving),
        Row("new replica: connections given to A meanwhile", "conn/s", given[a.identity] / moving),
        Row("new replica: dials that landed on A (closed)", "", duplicates),
        Row(
            "new replica: RSS per agent tunnel",
            "KiB",
            per_tunnel,
            target=MEMORY_TARGET_KIB if n >= COUNTS["full"] else None,
            op="<=",
        ),
    ]
    result.info["newReplica"] = {
        "agents": n,
        "haproxySessions": {"before": sessions, "after": after_sessions},
        "movingSeconds": moving,
        "swarm": {"before": before, "after": after},
        "bRssMiB": {
            "ready": rss_ready / (1 << 20),
            "heldAll": rss_bytes(replica.proc.pid) / (1 << 20),
        },
    }


# -- 3. rolling restart under load --------------------------------------------------------------


@dataclass
class Load:
    """A closed loop of small GETs (`concurrency` workers) until `stop`; what happened."""

    target: Target
    concurrency: int = 4
    pause: float = 0.0
    """Seconds each worker waits between two requests (quick mode: the machine's two cores
    also start the replicas, which a saturating loop would starve for seconds)."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    done: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    answers: list[str] = field(default_factory=list)
    """The first failed answers' bodies (a few)."""

    async def run(self) -> None:
        async with session(self.target, self.concurrency) as http:
            await asyncio.gather(*(self._worker(http) for _ in range(self.concurrency)))

    async def _worker(self, http: aiohttp.ClientSession) -> None:
        url = self.target.base + SMALL
        while not self.stop.is_set():
            try:
                async with asyncio.timeout(budget(10)), http.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        self.failures[f"HTTP {response.status}"] += 1
                        if len(self.answers) < 5:
                            self.answers.append((await response.text())[:300])
                        continue
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                self.failures[type(error).__name__] += 1
                continue
            self.done += 1
            if self.pause:
                await asyncio.sleep(self.pause)


async def rolling_restart(scale: Scale, result: WorkloadResult) -> None:
    async with ReplicaStack() as stack:
        names = ["gw-1", "gw-2", "gw-3"]
        replicas = [stack.add_replica(name) for name in names]
        balancer = LoadBalancer(
            stack.workdir / "haproxy",
            [replica.server for replica in replicas],
            enabled=set(names),
            factor=budget(1.0),
        )
        await asyncio.gather(*(stack.start_replica(name) for name in names))
        await balancer.start()
        for name in names:
            await balancer.wait_status(name, "UP")
        await stack.start_agent(FAST, stack.kubeconfigs[FAST], gateway_port=balancer.port("agents"))

        async def three_tunnels() -> bool:
            return (await stack.agent_metrics()).get("planelink_agent_tunnels") == len(names)

        await poll(three_tunnels, within=30, interval=0.05, what="the agent never held 3 tunnels")
        load = Load(stack.target("balancer", balancer.port("callers")), pause=QUICK_PAUSE)
        if not scale.quick:
            load.pause = 0.0
        running = asyncio.create_task(load.run())
        timings: dict[str, dict[str, float]] = {}
        try:
            await asyncio.sleep(1.0)  # the loop under way before the first restart
            for name in names:
                timings[name] = await _restart(stack, balancer, name, three_tunnels)
            await asyncio.sleep(1.0)
        finally:
            load.stop.set()
            with contextlib.suppress(Exception):
                await running
            await balancer.stop()
    failed = sum(load.failures.values())
    result.rows += [
        Row("rolling restart of 3: requests failed", "", failed, target=0, op="<="),
        Row("rolling restart of 3: requests done", "", load.done),
        Row(
            "rolling restart: each, until 3 tunnels again",
            "s",
            max(each["back"] for each in timings.values()),
        ),
    ]
    result.info["rollingRestart"] = {
        "failures": dict(load.failures),
        "failedAnswers": load.answers,
        "concurrency": load.concurrency,
        "pauseSeconds": load.pause,
        "timings": timings,
        "note": "aiohttp retries a GET once when a kept-alive connection closes before its "
        "answer (RFC 9112 9.3.1, as Go's client does for kubectl)",
    }


async def _restart(
    stack: ReplicaStack,
    balancer: LoadBalancer,
    name: str,
    three_tunnels: Callable[[], Awaitable[bool]],
) -> dict[str, float]:
    started = time.monotonic()
    code = await stack.stop_replica(name)
    exited = time.monotonic()
    await stack.start_replica(name)
    ready = time.monotonic()
    await balancer.wait_status(name, "UP")
    back = await poll(three_tunnels, within=30, interval=0.05, what=f"no 3 tunnels after {name}")
    return {
        "exitCode": float(code if code is not None else -1),
        "exited": exited - started,
        "ready": ready - started,
        "back": back - started,
    }


# -- the workload -------------------------------------------------------------------------------

PARTS: dict[str, Callable[[Scale, WorkloadResult], Awaitable[None]]] = {
    "forwarded vs local": forwarded_latency,
    "new replica": new_replica,
    "rolling restart": rolling_restart,
}


async def replicas(scale: Scale, parts: Iterable[str] = PARTS) -> WorkloadResult:
    """Every part in turn, each within its bound; a part that fails is named in the error."""
    result = WorkloadResult(
        "replicas", "gateway replicas: forwarding, a new replica's agents, a rolling restart"
    )
    errors: list[str] = []
    started = time.perf_counter()
    for name in parts:
        try:
            async with asyncio.timeout(budget(BOUNDS["quick" if scale.quick else "full"])):
                await PARTS[name](scale, result)
        except (Exception, TimeoutError) as error:
            errors.append(f"{name}: {type(error).__name__}: {error}")
    result.seconds = time.perf_counter() - started
    result.error = "; ".join(errors) or None
    return result
