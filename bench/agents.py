"""Workload 6, many agents: N agent connections (mTLS) to one gateway process.

Two halves live here:

* the **swarm** (``python -m bench.agents``), a child process that runs N lightweight agents
  on one event loop. Each is the real agent minus its upstream proxy: `AgentSettings` for its
  files and URL, `agent.dialer` (client certificate and gateway CA read afresh at every
  attempt, the real websockets client), `protocol.Connection` + `tunnel.TunnelSession` with
  the agent's identity, capabilities and heartbeat, and `agent.reconnect.Reconnect` (the agent's
  reconnect policy: exponential, full jitter, Retry-After honoured) between attempts — the loop of
  `agent.app.Agent.run`. With ``--replicas`` each also offers the capability `replicas` and keeps
  a tunnel per live gateway replica with the agent's own `agent.tunnels.TunnelSet` and
  `agent.seeker.Seeker` (the `replicas` workload, `bench.replicas`). The harness drives it over
  stdin (``go``, ``stats``, ``stop``) and reads JSON lines from its stdout (``ready``,
  ``dialing``, ``all-up``, ``stats``).
* the **workload** (`many_agents`), in the harness: its own `Stack` whose gateway knows N extra
  planes ``agents/a00000`` …, each with its own agent CA (`LocalPlanelink.write_pki`); it
  measures the connect storm, the gateway's RSS per idle agent, the gateway's CPU while the
  agents only heartbeat, and the time until all N are back after a gateway restart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import aiohttp
import structlog
from prometheus_client import Counter as PromCounter

from agent.app import AGENT_VERSION
from agent.dialer import DialFailed, GatewayRejected, dial, load_client_credentials
from agent.metrics import AgentMetrics
from agent.reconnect import Reconnect
from agent.seeker import Seeker, first_of
from agent.settings import AgentSettings
from agent.tunnels import TunnelSet
from bench.processes import Stack, budget, rss_bytes
from bench.report import Row, WorkloadResult
from certs import PlaneRef, plane_ref
from envtest import die_with_parent
from protocol import CAPABILITY_REPLICAS, Connection, ErrorCode, Role, Settings
from protocol.backoff import Backoff, BackoffPolicy
from tunnel import Heartbeat, TunnelSession, WebSocketChannel
from tunnel.contract import (
    CAPABILITY_UPGRADE,
    IDENTITY_AGENT_ID,
    IDENTITY_AGENT_VERSION,
    IDENTITY_KUBERNETES_VERSION,
    IDENTITY_PLANE,
)
from tunnel.tls import DEFAULT_TLS_READ_BUFFER, set_tls_read_buffer, tls_read_buffer

if TYPE_CHECKING:
    from bench.workloads import Scale

NAMESPACE = "agents"
COUNTS = {"quick": 50, "full": 2000}
HEARTBEAT = {"quick": (2.0, 6.0), "full": (10.0, 30.0)}
"""(interval, timeout) of gateway and agents; full mode uses the production defaults."""
SWARM_NICE = 10
"""The swarm stands in for N machines: on a shared 2-core box it yields the CPU to the gateway
when both want it (it still gets what the gateway leaves)."""
RESTART_TARGET = 30.0
MEMORY_TARGET_KIB = 100.0
KIB = 1024
MIB = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")


def agent_planes(count: int) -> tuple[PlaneRef, ...]:
    return tuple(plane_ref(NAMESPACE, f"a{index:05d}") for index in range(count))


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listen_overflows() -> int:
    """TcpExt ListenOverflows of the machine: SYNs dropped because an accept queue was full."""
    with open("/proc/net/netstat") as netstat:
        lines = [line.split() for line in netstat if line.startswith("TcpExt:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("ListenOverflows")])


def source_tree() -> dict[str, object]:
    """The commit measured, and the files outside bench/ that differ from it (the working tree
    is shared: a figure belongs to the code that ran)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        completed = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
        return completed.stdout.rstrip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "changedOutsideBench": [path for path in changed if not path.startswith("bench/")],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces: the fields after it start past the last ')'.
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# =============================================================================================
# The swarm: the child process
# =============================================================================================

PROTOCOL_SETTINGS = Settings()


@dataclass
class Swarm:
    """N lightweight agents in this process, and what they have done."""

    settings: list[AgentSettings]
    out: IO[str]
    replicas: bool = False
    """Each agent keeps a tunnel per live replica (TunnelSet + Seeker), not just one."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: AgentMetrics = field(default_factory=AgentMetrics)
    """The seekers' counters (duplicate dials, failures), shared by every agent."""
    tunnels: int = 0
    """Tunnels held by all agents (with `replicas`, several per agent)."""
    up: int = 0
    attempts: int = 0
    connects: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failed_dials: Counter[str] = field(default_factory=Counter)
    """Why dials failed (the agent loop's and the seekers'), by message (at most 20 kinds)."""
    losses: Counter[str] = field(default_factory=Counter)
    max_attempt: int = 0
    """The highest Backoff.attempt any agent reached (how far its ceiling grew)."""

    def emit(self, event: str, **values: object) -> None:
        self.out.write(json.dumps({"event": event, "t": time.monotonic(), **values}) + "\n")
        self.out.flush()

    def stats(self) -> dict[str, object]:
        times = os.times()
        return {
            "agents": len(self.settings),
            "up": self.up,
            "attempts": self.attempts,
            "connects": self.connects,
            "failures": dict(self.failures),
            "losses": dict(self.losses),
            "failedDials": dict(self.failed_dials),
            "maxBackoffAttempt": self.max_attempt,
            "cpuSeconds": round(times.user + times.system, 3),
            "rssMiB": round(rss_bytes(os.getpid()) / MIB, 1),
            "tasks": len(asyncio.all_tasks()),
            "tunnels": self.tunnels,
            "duplicateDials": sum(_counted(self.metrics.duplicate_dials).values()),
            "seekerFailures": _counted(self.metrics.connect_failures, "reason"),
            "tlsReadBuffer": tls_read_buffer(),
        }

    def on_up(self) -> None:
        self.up += 1
        self.connects += 1
        if self.up == len(self.settings):
            self.emit("all-up", **self.stats())

    def on_down(self, reason: str) -> None:
        self.up -= 1
        self.losses[reason.partition(":")[0][:60]] += 1


def _counted(counter: PromCounter, label: str | None = None) -> dict[str, float]:
    """A prometheus counter's totals, by the value of `label` (one "" entry without one)."""
    return {
        sample.labels[label] if label else "": sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


class LightAgent:
    """`agent.app.Agent`'s dial/serve/backoff loop without the upstream proxy."""

    def __init__(self, settings: AgentSettings, swarm: Swarm) -> None:
        self.settings = settings
        self.swarm = swarm
        self.reconnect = Reconnect(
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            reset_after=settings.backoff_reset_after,
        )
        self.log: structlog.stdlib.BoundLogger = structlog.get_logger("bench.agents").bind(
            plane=settings.plane
        )
        self.identity = {
            IDENTITY_PLANE: settings.plane,
            IDENTITY_AGENT_ID: settings.agent_id,
            IDENTITY_AGENT_VERSION: AGENT_VERSION,
            IDENTITY_KUBERNETES_VERSION: "v1.32.4",  # what discovery finds in the real agent
        }
        self.tunnels = TunnelSet(on_change=self._tunnels_changed)
        self.held = 0
        self.seeker = Seeker(
            tunnels=self.tunnels,
            open_tunnel=self._open_tunnel,
            serve=self._serve_found,
            backoff=Backoff(BackoffPolicy(base=settings.backoff_base, cap=settings.backoff_cap)),
            metrics=swarm.metrics,
            max_tunnels=settings.max_tunnels,
            join_spread=settings.replica_join_spread,
            hello_timeout=settings.connect_timeout,
            logger=self.log,
        )
        self.seeking: asyncio.Task[None] | None = None

    async def run(self) -> None:
        stop = self.swarm.stop
        try:
            await self._run(stop)
        finally:
            if self.seeking is not None:
                self.seeking.cancel()
                await asyncio.gather(self.seeking, return_exceptions=True)
            await self.seeker.wait_served()

    async def _run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            up_for, retry_after = await self._connect_once()
            if self.tunnels:  # as `Agent.run`: the loop dials again only when none is held
                await first_of(self.tunnels.wait_empty(), stop.wait())
            if self.seeking is not None:
                self.seeking.cancel()  # a dial in flight would race the loop's own
            if stop.is_set():
                break
            if up_for is not None:
                delay = self.reconnect.after_tunnel(up_for)
            else:
                delay = self.reconnect.after_failed_dial(retry_after)
            attempts = max(self.reconnect.dials.attempt, self.reconnect.tunnels.attempt)
            self.swarm.max_attempt = max(self.swarm.max_attempt, attempts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _connect_once(self) -> tuple[float | None, float | None]:
        """How long the tunnel was up (None: never), and the delay the gateway asked for."""
        try:
            session = await self._dial()
        except DialFailed as failure:
            self.swarm.failures[failure.reason] += 1
            return None, failure.retry_after if isinstance(failure, GatewayRejected) else None
        return await self._serve(session), None

    async def _dial(self) -> TunnelSession:
        """One WebSocket to the gateway and its session (not run yet); raises DialFailed."""
        settings = self.settings
        self.swarm.attempts += 1
        credentials = load_client_credentials(settings.tls_files)
        try:
            websocket = await dial(
                settings.connect_url,
                credentials,
                open_timeout=settings.connect_timeout,
                max_message_size=PROTOCOL_SETTINGS.max_message_size,
                user_agent=f"planelink-agent/{AGENT_VERSION}",
            )
        except DialFailed as failure:
            failed = self.swarm.failed_dials
            if failure.message in failed or len(failed) < 20:
                failed[failure.message[:120]] += 1
            raise
        capabilities = [CAPABILITY_UPGRADE]
        if self.swarm.replicas:
            capabilities.append(CAPABILITY_REPLICAS)
        connection = Connection(
            Role.AGENT,
            settings=PROTOCOL_SETTINGS,
            identity=self.identity,
            capabilities=capabilities,
        )

        def replicas_reported(_: frozenset[str]) -> None:
            self.tunnels.report(session)

        session = TunnelSession(
            WebSocketChannel(websocket),
            connection,
            heartbeat=Heartbeat(settings.heartbeat_interval, settings.heartbeat_timeout),
            request_handler=None,  # no upstream: a request would be refused (none is sent)
            replicas_handler=replicas_reported,
            logger=self.log,
        )
        return session

    async def _open_tunnel(self) -> tuple[TunnelSession, asyncio.Task[str]]:
        """The seeker's dial: a session, running, its HELLO not yet received."""
        session = await self._dial()
        return session, asyncio.create_task(session.run(), name="tunnel-session")

    async def _serve_found(self, session: TunnelSession, run: asyncio.Task[str]) -> None:
        """Serve a tunnel the seeker found (held already) until it ends or the swarm stops."""
        try:
            await first_of(asyncio.shield(run), self.swarm.stop.wait())
            if not run.done():
                session.close("bench over", ErrorCode.CANCEL)
            await asyncio.gather(run, return_exceptions=True)
        finally:
            if not run.done():
                session.close("agent cancelled", ErrorCode.CANCEL)
                await asyncio.gather(run, return_exceptions=True)
            self.tunnels.release(session)

    def _tunnels_changed(self, tunnels: TunnelSet) -> None:
        self.swarm.tunnels += len(tunnels) - self.held
        self.held = len(tunnels)

    def _hold(self, session: TunnelSession) -> bool:
        """Hold the loop's tunnel (its HELLO received) and seek the others, as `Agent._hold`."""
        if self.tunnels.claim(session) is None:
            return False
        seeking = self.seeking
        if self.swarm.replicas and (seeking is None or seeking.done() or seeking.cancelling()):
            self.seeking = asyncio.create_task(self.seeker.run(self.swarm.stop), name="seeker")
        return True

    async def _serve(self, session: TunnelSession) -> float | None:
        stop = self.swarm.stop
        run = asyncio.create_task(session.run(), name="tunnel-session")
        stopping = asyncio.create_task(stop.wait(), name="agent-stop")
        hello = asyncio.create_task(session.wait_ready(), name="tunnel-hello")
        up_since: float | None = None
        reason = "cancelled"
        try:
            await asyncio.wait({hello, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if hello.done() and not hello.cancelled() and hello.exception() is None:
                if not self._hold(session):
                    self.swarm.failures["duplicate"] += 1
                    session.close("the agent holds a tunnel to this replica already")
                    await asyncio.gather(run, return_exceptions=True)
                    return None
                up_since = time.monotonic()
                self.reconnect.tunnel_up()
                self.swarm.on_up()
                await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and not run.done():
                session.close("bench over", ErrorCode.CANCEL)
            reason = await run
        finally:
            hello.cancel()
            stopping.cancel()
            if not run.done():
                session.close("agent cancelled", ErrorCode.CANCEL)
                await asyncio.gather(run, return_exceptions=True)
            self.tunnels.release(session)
            if up_since is not None:
                self.swarm.on_down(reason)
        if up_since is None:
            self.swarm.failures["no_hello"] += 1
            return None
        return time.monotonic() - up_since


async def swarm_main(args: argparse.Namespace) -> int:
    interval, timeout = args.heartbeat_interval, args.heartbeat_timeout
    settings = [
        AgentSettings(
            gateway_url=args.gateway_url,
            plane=str(plane),
            agent_id=f"bench-{plane.name}",
            tls_dir=args.pki / "agents" / plane.namespace / plane.name,
            health_address="127.0.0.1:0",
            heartbeat_interval=interval,
            heartbeat_timeout=timeout,
        )
        for plane in agent_planes(args.count)
    ]
    set_tls_read_buffer(args.tls_read_buffer)  # as `planelink agent` does
    swarm = Swarm(settings, sys.stdout, replicas=args.replicas)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, swarm.stop.set)
    swarm.emit("ready", pid=os.getpid(), nofile=raise_nofile(), **swarm.stats())
    tasks: list[asyncio.Task[None]] = []
    while not swarm.stop.is_set():
        command = (await reader.readline()).decode().strip()
        if command == "go" and not tasks:
            swarm.emit("dialing")
            tasks = [
                asyncio.create_task(LightAgent(each, swarm).run(), name=each.plane)
                for each in settings
            ]
        elif command == "stats":
            swarm.emit("stats", **swarm.stats())
        elif command in ("stop", ""):  # "" is the end of stdin: the harness is gone
            swarm.stop.set()
    async with asyncio.timeout(budget(15)):
        await asyncio.gather(*tasks, return_exceptions=True)
    swarm.emit("stopped", **swarm.stats())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__)
    parser.add_argument("--gateway-url", required=True, help="wss://host:port of the gateway")
    parser.add_argument("--pki", required=True, type=Path, help="LocalPlanelink.write_pki's dir")
    parser.add_argument("--count", required=True, type=int, help="agents (planes agents/a00000…)")
    parser.add_argument("--heartbeat-interval", type=float, default=10.0)
    parser.add_argument("--heartbeat-timeout", type=float, default=30.0)
    parser.add_argument(
        "--tls-read-buffer", type=int, default=DEFAULT_TLS_READ_BUFFER, help="as planelink's"
    )
    parser.add_argument("--nice", type=int, default=0, help="lower this process's priority")
    parser.add_argument(
        "--replicas", action="store_true", help="a tunnel per live gateway replica (seeker)"
    )
    args = parser.parse_args(argv)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    os.nice(args.nice)
    return asyncio.run(swarm_main(args))


# =============================================================================================
# The workload: the harness side
# =============================================================================================


def agents_stack(quick: bool) -> Stack:
    """A stack of its own: the gateway knows the N planes of the swarm (and restarts)."""
    interval, timeout = HEARTBEAT["quick" if quick else "full"]
    return Stack(
        extra_planes=agent_planes(COUNTS["quick" if quick else "full"]),
        gateway_args=("--heartbeat-interval", str(interval), "--heartbeat-timeout", str(timeout)),
    )


class SwarmProcess:
    """The swarm child: started in a process group of its own, killed with it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        workdir: Path,
        agent_port: int,
        count: int,
        heartbeat: tuple[float, float],
        *,
        replicas: bool = False,
    ) -> SwarmProcess:
        """Start the swarm for the PKI under `workdir`/pki and the gateway at `agent_port`
        (with `replicas`, each agent seeks a tunnel to every live replica behind it)."""
        log = (workdir / "agents-swarm.log").open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bench.agents", "--count", str(count)),
                *("--gateway-url", f"wss://127.0.0.1:{agent_port}"),
                *("--pki", str(workdir / "pki")),
                *("--heartbeat-interval", str(heartbeat[0])),
                *("--heartbeat-timeout", str(heartbeat[1])),
                *("--nice", str(SWARM_NICE)),
                *(["--replicas"] if replicas else []),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,  # only prctl, before exec
                limit=1 << 20,
            )
        finally:
            log.close()
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                await self.events.put(json.loads(line))
        await self.events.put({"event": "exited", "t": time.monotonic()})

    async def next(self, kind: str, *, after: float = 0.0) -> dict[str, Any]:
        """The next event `kind` stamped after `after`; raises if the swarm exits first."""
        while True:
            event = await self.events.get()
            if event["event"] == "exited":
                raise RuntimeError(f"the agent swarm exited (code {self.process.returncode})")
            if event["event"] == kind and event["t"] > after:
                return event

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")

    async def stats(self) -> dict[str, Any]:
        self.send("stats")
        return await self.next("stats")

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.send("stop")
            try:
                async with asyncio.timeout(budget(20)):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


PROFILE_ENV = "PLANELINK_BENCH_PYSPY"
"""A folder: py-spy records the gateway in each phase there (gateway-{storm,idle,reconnect}.txt,
py-spy's raw format: one stack and its sample count a line), and the HTTP/2 variants record
gateway and agent (`{gateway,agent}-{throughput-h2,watches-h2}.txt`)."""


@contextlib.asynccontextmanager
async def profiled(phase: str, pid: int, *, name: str = "gateway") -> AsyncIterator[None]:
    """Record `pid` with py-spy during the block, to `{name}-{phase}.txt`, if
    $PLANELINK_BENCH_PYSPY names a folder."""
    folder = os.environ.get(PROFILE_ENV)
    if not folder:
        yield
        return
    recorder = await asyncio.create_subprocess_exec(
        *(str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "-r", "100"),
        *("-f", "raw", "-p", str(pid), "-o", str(Path(folder) / f"{name}-{phase}.txt")),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        await recorder.wait()


async def gateway_agents(http: aiohttp.ClientSession, stack: Stack) -> int:
    """Agents of the swarm's planes the gateway counts as connected (from /metrics)."""
    prefix = f'planelink_gateway_agents_connected{{plane="{NAMESPACE}/'
    samples = await stack.gateway_metrics(http)
    return sum(int(value) for name, value in samples.items() if name.startswith(prefix))


async def wait_gateway_agents(
    http: aiohttp.ClientSession, stack: Stack, count: int, *, deadline: float, interval: float
) -> tuple[float, int]:
    """Poll until the gateway counts `count` agents; (the time it did, the count seen last)."""
    seen = -1
    while True:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            seen = await gateway_agents(http, stack)
        now = time.monotonic()
        if seen >= count or now > deadline:
            return now, seen
        await asyncio.sleep(interval)


async def _all_up(
    swarm: SwarmProcess,
    http: aiohttp.ClientSession,
    stack: Stack,
    n: int,
    *,
    after: float,
    limit: float,
) -> tuple[float, dict[str, Any]]:
    """Wait for the swarm's all-up after `after`, then for the gateway to count all N.

    Returns the time the gateway first counted N. Raises TimeoutError (with the counts) after
    `limit` seconds."""
    deadline = time.monotonic() + limit
    try:
        async with asyncio.timeout(limit):
            event = await swarm.next("all-up", after=after)
    except TimeoutError:
        stats = await swarm.stats()
        seen = await gateway_agents(http, stack)
        raise TimeoutError(
            f"after {limit:.0f} s the swarm has {stats['up']} of {n} tunnels up and the gateway "
            f"counts {seen}; swarm stats {stats}"
        ) from None
    # The gateway registers an agent when its HELLO arrives, at the moment the agent sees the
    # gateway's: poll briefly for the gateway's own count.
    when, seen = await wait_gateway_agents(http, stack, n, deadline=deadline, interval=0.02)
    if seen < n:
        raise TimeoutError(f"the swarm has all {n} up but the gateway counts {seen}")
    return when, event


@dataclass
class _Phases:
    """The workload's phases against one stack and swarm; each adds rows and info."""

    stack: Stack
    swarm: SwarmProcess
    http: aiohttp.ClientSession
    n: int
    interval: float
    limit: float
    rows: list[Row] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    rss_before: int = 0
    tasks_before: float = 0.0

    async def gateway_tasks(self) -> float:
        """The gateway's asyncio task count (its planelink_gateway_asyncio_tasks gauge)."""
        metrics = await self.stack.gateway_metrics()
        return metrics.get("planelink_gateway_asyncio_tasks", math.nan)

    async def storm(self) -> None:
        """All N dial at once; until the gateway counts all of them."""
        gateway, swarm = self.stack.pid("gateway"), self.swarm
        self.tasks_before = await self.gateway_tasks()
        self.rss_before = rss_bytes(gateway)
        cpu = (cpu_seconds(gateway), cpu_seconds(swarm.process.pid))
        overflows = listen_overflows()
        async with profiled("storm", gateway):
            swarm.send("go")
            dialing = await swarm.next("dialing")
            connected, up = await _all_up(
                swarm, self.http, self.stack, self.n, after=0.0, limit=self.limit
            )
        storm = connected - dialing["t"]
        self.rows += [
            Row("connect storm: all connected", "s", storm),
            Row("connect rate", "agents/s", self.n / storm),
        ]
        self.info["storm"] = {
            "cpuSeconds": {
                "gateway": cpu_seconds(gateway) - cpu[0],
                "swarm": cpu_seconds(swarm.process.pid) - cpu[1],
            },
            "listenOverflows": listen_overflows() - overflows,
            "swarm": up,
        }

    async def idle(self) -> None:
        """The first heartbeats go by; then RSS, then CPU over two heartbeat intervals."""
        gateway = self.stack.pid("gateway")
        await asyncio.sleep(self.interval)
        rss_after = rss_bytes(gateway)
        window = 2 * self.interval
        cpu_start, started = cpu_seconds(gateway), time.monotonic()
        async with profiled("idle", gateway):
            await asyncio.sleep(window)
        idle_cpu = (cpu_seconds(gateway) - cpu_start) / (time.monotonic() - started)
        per_agent = (rss_after - self.rss_before) / self.n / KIB
        tasks = (await self.gateway_tasks() - self.tasks_before) / self.n
        self.rows += [
            Row(
                "gateway RSS per idle agent",
                "KiB",
                per_agent,
                # Judged at full N only: a few agents take their memory from free heap.
                target=MEMORY_TARGET_KIB if self.n >= COUNTS["full"] else None,
                op="<=",
            ),
            Row("gateway asyncio tasks per idle agent", "", tasks),
            Row(f"gateway CPU idle (heartbeat {self.interval:g} s)", "% of a core", idle_cpu * 100),
            Row("gateway CPU per 1,000 idle agents", "% of a core", idle_cpu * 1e5 / self.n),
        ]
        self.info["idle"] = {
            "gatewayRssMiB": {"before": self.rss_before / MIB, "allConnected": rss_after / MIB},
            "cpuWindowSeconds": window,
            "swarm": await self.swarm.stats(),
        }

    async def restart(self) -> None:
        """SIGTERM the gateway (drain grace 1 s), start a new one on the same ports; until the
        new one counts all N."""
        stack, swarm = self.stack, self.swarm
        overflows, restarted = listen_overflows(), time.monotonic()
        swarm_cpu = cpu_seconds(swarm.process.pid)
        exit_code = await stack.stop_gateway()
        exited = time.monotonic()
        await stack.start_gateway()
        ready = time.monotonic()
        gateway = stack.pid("gateway")
        async with profiled("reconnect", gateway):
            back, event = await _all_up(
                swarm, self.http, stack, self.n, after=restarted, limit=self.limit
            )
        rss = rss_bytes(gateway)
        per_agent = (rss - self.rss_before) / self.n / KIB
        self.rows += [
            Row(
                "restart: all connected again",
                "s",
                back - restarted,
                target=RESTART_TARGET,
                op="<=",
            ),
            Row("restart: old gateway gone", "s", exited - restarted),
            Row("restart: new gateway ready", "s", ready - restarted),
            Row("restart: reconnected after ready", "s", back - ready),
            Row("restart: new gateway RSS per agent", "KiB", per_agent),
        ]
        self.info["restart"] = {
            "oldGatewayExitCode": exit_code,
            "cpuSeconds": {
                "newGatewayWholeLife": cpu_seconds(gateway),
                "swarm": cpu_seconds(swarm.process.pid) - swarm_cpu,
            },
            "listenOverflows": listen_overflows() - overflows,
            "newGatewayRssMiB": rss / MIB,
            "swarm": event,
        }


async def many_agents(stack: Stack, scale: Scale) -> WorkloadResult:
    mode = "quick" if scale.quick else "full"
    n = COUNTS[mode]
    interval, timeout = HEARTBEAT[mode]
    result = WorkloadResult(
        "agents", f"{n} agents (mTLS, one plane and CA each) to one gateway, then its restart"
    )
    result.info = {
        "agents": n,
        "sourceTree": source_tree(),
        "planes": "one DataPlane per agent, each with its own client CA (requireIdentity)",
        "heartbeat": {"interval": interval, "timeout": timeout},
        "tlsReadBuffer": "the planelink command's default (--tls-read-buffer), gateway and swarm",
        "backoff": "agent defaults: base 1 s, cap 60 s, full jitter; dial failures start over "
        "once a tunnel is up, lost tunnels after one stayed up 30 s",
        "swarmNice": SWARM_NICE,
    }
    raise_nofile()
    swarm = await SwarmProcess.start(stack.workdir, stack.ports["agent"], n, (interval, timeout))
    try:
        limit = budget(30.0 if scale.quick else 180.0)
        async with asyncio.timeout(limit):
            result.info["swarmReady"] = await swarm.next("ready")
        await asyncio.sleep(1.0)  # let the gateway settle after its start
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=budget(30))) as http:
            phases = _Phases(stack, swarm, http, n, interval, limit)
            try:
                await phases.storm()
                await phases.idle()
                await phases.restart()
            finally:
                result.rows += phases.rows
                result.info |= phases.info
    finally:
        await swarm.close()
    return result


if __name__ == "__main__":
    sys.exit(main())
