"""`planelink gateway --workers 2` as a process: both workers serve the shared ports (the kernel
spreads connections), each announces its agents in its presence file, SIGTERM drains them and
the supervisor exits 0, a killed worker is restarted, and what cannot be shared is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from certs import PlaneRef
from envtest import KubeAPIServer, free_port
from tests.kit.gateway_lab import PLANE_A, Pki, agent_session, default_handler
from tests.kit.waits import eventually, wait_for
from tunnel import TunnelSession

AGENTS = 16
"""Stand-in agents dialled: with two workers, all on one worker by chance is 1 in 2**15."""
DRAIN_GRACE = 2.0


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    log: Path
    presence: Path
    agent_port: int
    caller_port: int
    operator_port: int
    sessions: list[tuple[TunnelSession, asyncio.Task[str]]] = field(default_factory=list)

    def log_lines(self) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def presence_files(self) -> dict[str, dict[str, object]]:
        files: dict[str, dict[str, object]] = {}
        for path in self.presence.glob("*.json"):
            with contextlib.suppress(FileNotFoundError):
                files[path.stem] = json.loads(path.read_bytes())
        return files

    def worker_pids(self) -> dict[int, int]:
        """The newest pid of each worker, from the supervisor's log."""
        pids: dict[int, int] = {}
        for line in self.log_lines():
            if line.get("event") == "worker started":
                pids[int(str(line["worker"]))] = int(str(line["pid"]))
        return pids


StartGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def start_gateway(pki: Pki, tmp_path: Path) -> AsyncIterator[StartGateway]:
    started: list[GatewayProcess] = []

    async def start(*extra: str, workers: int = 2) -> GatewayProcess:
        ports = free_port(), free_port(), free_port()
        log = tmp_path / f"gateway-{len(started)}.log"
        presence = tmp_path / "presence"
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "planelink",
                "--log-format=json",
                "gateway",
                f"--workers={workers}",
                f"--tls-cert={pki.directory / 'server.crt'}",
                f"--tls-key={pki.directory / 'server.key'}",
                f"--caller-ca={pki.directory / 'caller-ca.crt'}",
                f"--planes={pki.directory / 'planes.yaml'}",
                "--bind=127.0.0.1",
                f"--agent-port={ports[0]}",
                f"--caller-port={ports[1]}",
                f"--operator-port={ports[2]}",
                f"--presence-dir={presence}",
                f"--drain-grace={DRAIN_GRACE}",
                "--identity=gw",
                "--peer-port=0",  # each worker's own, advertised in its presence file
                *extra,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        gateway = GatewayProcess(process, log, presence, *ports)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        for session, task in gateway.sessions:
            session.close("test over")
            with contextlib.suppress(Exception):
                await task
        if gateway.process.returncode is None:
            gateway.process.kill()
            await gateway.process.wait()
        for pid in gateway.worker_pids().values():  # never leave a worker behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


async def both_workers_up(gateway: GatewayProcess) -> None:
    try:
        await eventually(
            lambda: sorted(gateway.presence_files()) == ["gw-w0", "gw-w1"],
            # Two cold interpreters importing kubernetes_asyncio at once: about 5 s on an idle
            # 2-core machine, over 20 s when other test suites share it.
            within=120,
            message="both workers never announced themselves",
        )
    except AssertionError as error:
        tail = gateway.log.read_text().splitlines()[-30:]
        raise AssertionError("\n".join([str(error), "the gateway's log ends:", *tail])) from None


async def dial_agent(gateway: GatewayProcess, pki: Pki, plane: PlaneRef, agent_id: str) -> None:
    """A stand-in agent of `plane` on the shared agent port (a new TLS connection each)."""
    agent_ssl = pki.agent_ssl(pki.agent_cert(plane))
    gateway.sessions.append(
        await agent_session(
            gateway.agent_port, plane, agent_ssl, default_handler, agent_id=agent_id
        )
    )


def announced_agents(gateway: GatewayProcess) -> dict[str, set[str]]:
    """Per worker, the agents of PLANE_A its presence file names."""
    agents: dict[str, set[str]] = {}
    for worker, document in gateway.presence_files().items():
        planes = document.get("planes")
        assert isinstance(planes, dict)
        agents[worker] = set(planes.get(str(PLANE_A), []))
    return agents


async def test_both_workers_serve_and_sigterm_drains_them(
    start_gateway: StartGateway, pki: Pki
) -> None:
    gateway = await start_gateway()
    await both_workers_up(gateway)
    for number in range(AGENTS):
        await dial_agent(gateway, pki, PLANE_A, f"agent-{number}")
    everyone = {f"agent-{number}" for number in range(AGENTS)}
    await eventually(
        lambda: set().union(*announced_agents(gateway).values()) == everyone,
        within=10,
        message="the workers' presence files never named every agent",
    )
    spread = announced_agents(gateway)
    assert all(spread.values()), f"the kernel gave one worker every agent: {spread}"
    assert not spread["gw-w0"] & spread["gw-w1"], "an agent connection lands on one worker"

    # Callers land on either worker; each holds agents of the plane, so each answers.
    context = pki.caller_ssl()
    for _ in range(8):
        async with aiohttp.ClientSession() as session:  # a new connection each time
            url = f"https://127.0.0.1:{gateway.caller_port}/planes/{PLANE_A}/k8s/echo"
            async with session.post(url, data=b"ping", ssl=context) as answer:
                assert answer.status == 200
                assert await answer.read() == b"ping"

    async with aiohttp.ClientSession() as session:  # refused by one of the workers
        url = f"https://127.0.0.1:{gateway.caller_port}/planes/ns-x/nowhere/k8s/api"
        async with session.get(url, ssl=context) as answer:
            assert answer.status == 404

    # The operator port too is shared; whichever worker answers shows the whole gateway.
    for _ in range(8):
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{gateway.operator_port}"
            async with session.get(f"{base}/planes") as answer:
                report = await answer.json()
            async with session.get(f"{base}/metrics") as answer:
                metrics = await answer.text()
            async with session.get(f"{base}/console") as answer:
                console = await answer.json()
            async with session.get(f"{base}/") as answer:
                page = await answer.text()
        assert [r["plane"] for r in console["refusals"]] == ["ns-x/nowhere"]
        assert "2 workers answered" in page
        assert all(page.count(f'data-agent="{agent}"') == 1 for agent in everyone), page
        assert report["workers"] == {"answered": ["gw-w0", "gw-w1"], "missing": []}
        (plane_a,) = [plane for plane in report["planes"] if plane["name"] == PLANE_A.name]
        assert plane_a["connectedAgents"] == AGENTS
        assert {agent["replica"] for agent in plane_a["agents"]} == {"gw-w0", "gw-w1"}
        for worker in ("gw-w0", "gw-w1"):
            assert f'planelink_gateway_worker_up{{worker="{worker}"}} 1.0' in metrics
            # Each worker is a process of its own: its process series keep apart by worker.
            assert f'process_resident_memory_bytes{{worker="{worker}"}}' in metrics
        assert metrics.count("# TYPE planelink_gateway_agents_connected gauge") == 1
        assert metrics.count("# TYPE process_resident_memory_bytes gauge") == 1
        assert "_created" not in metrics

    gateway.process.send_signal(signal.SIGTERM)
    assert await wait_for(gateway.process.wait(), DRAIN_GRACE + 30) == 0
    assert gateway.presence_files() == {}, "each worker withdrew its presence file"
    events = [line.get("event") for line in gateway.log_lines()]
    assert events.count("shutting down") == 2
    assert "all workers stopped" in events


async def test_a_killed_worker_is_restarted(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    await both_workers_up(gateway)
    killed = gateway.worker_pids()[1]
    # A killed worker leaves its presence file behind: the new one is up once it rewrote it
    # (SIGTERM sent before then would find it importing, without its signal handlers).
    left_behind = (gateway.presence / "gw-w1.json").stat().st_mtime_ns
    os.kill(killed, signal.SIGKILL)
    await eventually(
        lambda: gateway.worker_pids()[1] != killed,
        within=30,  # the backoff's first ceiling is 0.5 s
        message="the killed worker was not started again",
    )
    await eventually(
        lambda: _mtime_ns(gateway.presence / "gw-w1.json") > left_behind,
        within=120,  # a cold interpreter's imports on a loaded machine
        message="the restarted worker never announced itself",
    )
    died = [
        line for line in gateway.log_lines() if line.get("event") == "worker died: restarting it"
    ]
    assert [(line["worker"], line["exit_code"]) for line in died] == [(1, -signal.SIGKILL)]
    gateway.process.send_signal(signal.SIGTERM)
    assert await wait_for(gateway.process.wait(), DRAIN_GRACE + 30) == 0


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--agent-port=0"], "--agent-port is 0"),
        (["--workers=100"], "between 1 and 64"),
        (["--reconcile"], "needs --peer-certificate"),
        (
            ["--reconcile", "--peer-certificate=p.crt", "--peer-key=p.key", "--peer-ca=ca.crt"],
            "needs --lease-namespace",
        ),
    ],
)
def test_what_workers_cannot_share_is_refused(pki: Pki, flags: list[str], problem: str) -> None:
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "planelink",
            "gateway",
            "--workers=2",
            f"--tls-cert={pki.directory / 'server.crt'}",
            f"--tls-key={pki.directory / 'server.key'}",
            f"--caller-ca={pki.directory / 'caller-ca.crt'}",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    assert problem in finished.stderr


@pytest.mark.kube
async def test_a_real_agent_holds_a_tunnel_to_each_worker_and_callers_reach_its_plane(
    start_gateway: StartGateway, pki: Pki, plane_server: KubeAPIServer, tmp_path: Path
) -> None:
    """The whole path: a real agent process told of both workers (REPLICAS) dials the shared
    agent port until it holds a tunnel to each, and a caller reaches the real API server
    behind it through whichever worker the kernel hands its connection to."""
    gateway = await start_gateway()
    await both_workers_up(gateway)
    tls = tmp_path / "agent-tls"
    tls.mkdir()
    bundle = pki.agent_cert(PLANE_A)
    (tls / "tls.crt").write_bytes(bundle.chain_pem())
    (tls / "tls.key").write_bytes(bundle.private_key_pem())
    (tls / "ca.crt").write_bytes(pki.gateway_ca.certificate_pem())
    agent_log = tmp_path / "agent.log"
    with agent_log.open("wb") as sink:
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "planelink",
            "--log-format=json",
            "agent",
            f"--gateway-url=wss://127.0.0.1:{gateway.agent_port}",
            f"--plane={PLANE_A}",
            f"--tls-dir={tls}",
            f"--kubeconfig={plane_server.kubeconfig_path}",
            "--health-address=127.0.0.1:0",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        await eventually(
            lambda: (
                {worker: len(agents) for worker, agents in announced_agents(gateway).items()}
                == {"gw-w0": 1, "gw-w1": 1}
            ),
            within=60,
            message="the agent never held a tunnel to each worker",
        )
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{gateway.operator_port}/planes"
            async with session.get(url) as answer:
                report = await answer.json()
        (plane_a,) = [plane for plane in report["planes"] if plane["name"] == PLANE_A.name]
        assert plane_a["connectedAgents"] == 1, "one agent, two tunnels"
        assert sorted(agent["replica"] for agent in plane_a["agents"]) == ["gw-w0", "gw-w1"]

        context = pki.caller_ssl()
        for _ in range(6):
            async with aiohttp.ClientSession() as session:  # a new connection each time
                url = f"https://127.0.0.1:{gateway.caller_port}/planes/{PLANE_A}/k8s/api"
                async with session.get(url, ssl=context) as answer:
                    assert answer.status == 200, await answer.text()
                    assert (await answer.json())["kind"] == "APIVersions"
    finally:
        if agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            await wait_for(agent.wait(), 30)
    gateway.process.send_signal(signal.SIGTERM)
    assert await wait_for(gateway.process.wait(), DRAIN_GRACE + 30) == 0


def inner_presence(shared: Path) -> list[Path]:
    return list(shared.glob("planelink-presence-*"))


async def test_a_presence_dir_others_may_write_in_gets_a_private_one_inside(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """As an emptyDir volume is (0777): whoever may write where the workers read could
    announce a replica, so the supervisor makes a private directory inside it for them."""
    shared = tmp_path / "presence"
    shared.mkdir()
    shared.chmod(0o777)
    gateway = await start_gateway()
    await eventually(
        lambda: [len(list(inner.glob("*.json"))) for inner in inner_presence(shared)] == [2],
        within=120,
        message="the workers never announced themselves in a private directory",
    )
    (inner,) = inner_presence(shared)
    assert inner.stat().st_mode & 0o777 == 0o700
    assert not list(shared.glob("*.json")), "nothing announced where others may write"
    gateway.process.send_signal(signal.SIGTERM)
    assert await wait_for(gateway.process.wait(), DRAIN_GRACE + 30) == 0
    assert inner_presence(shared) == [], "the supervisor removes what it made"


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not reaped, is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_workers_do_not_outlive_a_killed_supervisor(start_gateway: StartGateway) -> None:
    """The kernel tells a worker its supervisor died (PR_SET_PDEATHSIG): no worker is left
    holding the ports."""
    gateway = await start_gateway()
    await both_workers_up(gateway)
    workers = gateway.worker_pids().values()
    gateway.process.kill()
    await gateway.process.wait()
    await eventually(
        lambda: not any(running(pid) for pid in workers),
        within=30,
        message="a worker outlived its supervisor",
    )


async def test_the_workers_run_the_event_loop_the_gateway_was_given(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway("--event-loop=uvloop")
    await both_workers_up(gateway)
    loops = [line for line in gateway.log_lines() if line.get("event") == "event loop"]
    assert [line["event_loop"] for line in loops] == ["uvloop", "uvloop"]
