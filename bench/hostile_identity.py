"""Hostile agents against identity and start-up: the gateway's memory, how soon the offender is
refused, and what legitimate callers of another plane see meanwhile.

Runs `planelink gateway` as a process (RSS read from /proc) with planes A and B sharing one
agent CA, a stand-in agent serving plane A from this process, and:

* `identity`: a storm of agents of plane A claiming plane B (its CA trusts them; their
  certificates name A), while a caller measures small GETs on plane A; and
* `starting`: a gateway whose control plane is unreachable (so it never finishes starting),
  hit by a storm of agents and callers: every one must get 503 + Retry-After at once.

    python -m bench.hostile_identity [--dials 1000] [--concurrency 32] [--gets 300]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

import certs
from bench.processes import Proc, rss_bytes, spawn, wait_http_ok
from certs import PlaneRef, plane_ref
from envtest import free_port
from protocol import Connection, RequestReceived, Role
from tunnel import Heartbeat, TunnelSession, TunnelStream, WebSocketChannel
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_PLANE, SUBPROTOCOL

PLANE_A = plane_ref("org", "plane-a")
PLANE_B = plane_ref("org", "plane-b")
MIB = 1024 * 1024


class Lab:
    """Certificates and files of one run: a gateway CA, a caller CA, one agent CA for A and B."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.gateway_ca = certs.create_ca("bench gateway CA")
        server = certs.issue_server(
            self.gateway_ca,
            common_name="gateway",
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1"],
        )
        caller_ca = certs.create_ca("bench caller CA")
        self.caller = certs.issue_client(caller_ca, common_name="bench")
        self.agent_ca = certs.create_ca("one CA for the organization")
        files = {
            "server.crt": server.chain_pem(),
            "server.key": server.private_key_pem(),
            "caller-ca.crt": caller_ca.certificate_pem(),
            "agent-ca.crt": self.agent_ca.certificate_pem(),
            "caller.crt": self.caller.certificate_pem(),
            "caller.key": self.caller.private_key_pem(),
        }
        for name, data in files.items():
            (directory / name).write_bytes(data)
        planes = [{"plane": str(p), "clientCA": "agent-ca.crt"} for p in (PLANE_A, PLANE_B)]
        (directory / "planes.yaml").write_text(yaml.safe_dump({"planes": planes}))

    def agent_ssl(
        self, plane: PlaneRef, *, ca: certs.CertificateBundle | None = None
    ) -> ssl.SSLContext:
        bundle = certs.issue_agent(ca or self.agent_ca, plane=plane)
        cert, key = self.directory / f"{plane.name}.crt", self.directory / f"{plane.name}.key"
        cert.write_bytes(bundle.chain_pem())
        key.write_bytes(bundle.private_key_pem())
        (self.directory / "gateway-ca.crt").write_bytes(self.gateway_ca.certificate_pem())
        return _client_context(self.directory, plane.name)

    def caller_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.gateway_ca.certificate_pem().decode())
        context.load_cert_chain(self.directory / "caller.crt", self.directory / "caller.key")
        return context


class Gateway:
    def __init__(self, lab: Lab, name: str, *extra: str) -> None:
        self.ports = {name: free_port() for name in ("agent", "caller", "operator")}
        d = lab.directory
        argv = [sys.executable, "-m", "planelink", "gateway", "--tls-cert", str(d / "server.crt")]
        argv += ["--tls-key", str(d / "server.key"), "--caller-ca", str(d / "caller-ca.crt")]
        argv += ["--planes", str(d / "planes.yaml"), "--bind", "127.0.0.1"]
        argv += [f"--{name}-port={port}" for name, port in self.ports.items()]
        self.proc: Proc = spawn(name, [*argv, *extra], d)

    async def started(self) -> None:
        await wait_http_ok(f"http://127.0.0.1:{self.ports['operator']}/healthz", self.proc)

    @property
    def rss(self) -> int:
        return rss_bytes(self.proc.pid)


async def _small_ok(stream: TunnelStream, request: RequestReceived) -> None:
    stream.respond(200, [(b"content-length", b"2")])
    await stream.write(b"ok")
    stream.end()


@contextlib.asynccontextmanager
async def stand_in_agent(gateway: Gateway, lab: Lab, plane: PlaneRef) -> AsyncIterator[None]:
    url = f"wss://127.0.0.1:{gateway.ports['agent']}{AGENT_CONNECT_PATH}?plane={plane}"
    websocket = await connect(url, ssl=lab.agent_ssl(plane), subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
    session = TunnelSession(
        WebSocketChannel(websocket),
        Connection(Role.AGENT, identity={IDENTITY_PLANE: str(plane)}),
        heartbeat=Heartbeat(10, 30),
        request_handler=_small_ok,
    )
    task = asyncio.create_task(session.run())
    await session.wait_ready()
    try:
        yield
    finally:
        session.close("bench over")
        await task


async def small_gets(caller: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    """Latencies (seconds) of `count` sequential GETs that must answer 200."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        async with caller.get(url) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {url}: {response.status}")
        latencies.append(time.perf_counter() - started)
    return latencies


def _client_context(directory: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=directory / "gateway-ca.crt")
    context.load_cert_chain(directory / f"{name}.crt", directory / f"{name}.key")
    return context


def _storm_process(
    directory: Path, name: str, url: str, count: int, concurrency: int
) -> tuple[Counter[str], list[float]]:
    """The hostile dials, from a process of their own: the measuring caller's event loop must
    not share a CPU with them, or it measures itself."""
    return asyncio.run(storm(count, concurrency, dial(url, _client_context(directory, name))))


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def storm(
    count: int, concurrency: int, attempt: Callable[[], Awaitable[str]]
) -> tuple[Counter[str], list[float]]:
    """`count` attempts, `concurrency` at a time: how each ended, and how long each took."""
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            outcomes[await attempt()] += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one() for _ in range(count)))
    return outcomes, latencies


def dial(url: str, context: ssl.SSLContext) -> Callable[[], Awaitable[str]]:
    async def attempt() -> str:
        try:
            websocket = await connect(url, ssl=context, subprotocols=[SUBPROTOCOL])  # type: ignore[list-item]
        except InvalidStatus as refused:
            answer = refused.response
            return f"{answer.status_code} {answer.headers.get('X-Planelink-Rejection')}"
        except (OSError, EOFError, InvalidHandshake):
            return "refused in TLS"
        await websocket.close()
        return "ACCEPTED"

    return attempt


def _report(name: str, values: dict[str, object]) -> None:
    print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()), flush=True)


async def identity_case(lab: Lab, args: argparse.Namespace) -> None:
    gateway = Gateway(lab, "gateway-identity")
    try:
        await gateway.started()
        connector = aiohttp.TCPConnector(ssl=lab.caller_ssl())
        base = f"https://127.0.0.1:{gateway.ports['caller']}"
        async with (
            stand_in_agent(gateway, lab, PLANE_A),
            aiohttp.ClientSession(base_url=base, connector=connector) as caller,
        ):
            url = f"/planes/{PLANE_A}/k8s/version"
            await small_gets(caller, url, 50)  # warm up
            unloaded = await small_gets(caller, url, args.gets)
            rss_before = gateway.rss
            # A real agent of A claiming B; or, for comparison, a stranger refused in TLS.
            stranger = certs.create_ca("stranger") if args.impostor == "stranger" else None
            lab.agent_ssl(PLANE_A, ca=stranger)
            with concurrent.futures.ProcessPoolExecutor(1) as pool:
                hostile = asyncio.get_running_loop().run_in_executor(
                    pool,
                    _storm_process,
                    lab.directory,
                    PLANE_A.name,
                    f"wss://127.0.0.1:{gateway.ports['agent']}{AGENT_CONNECT_PATH}?plane={PLANE_B}",
                    args.dials,
                    args.concurrency,
                )
                loaded = await small_gets(caller, url, args.gets)
                outcomes, refusal = await hostile
            rss_after = gateway.rss
        _report(
            f"identity (impostor: {args.impostor})",
            {
                "outcomes": dict(outcomes),
                "refused_p99_ms": round(p99(refusal) * 1000, 1),
                "refused_max_ms": round(max(refusal) * 1000, 1),
                "get_p99_unloaded_ms": round(p99(unloaded) * 1000, 2),
                "get_p99_during_ms": round(p99(loaded) * 1000, 2),
                "rss_growth_mib": round((rss_after - rss_before) / MIB, 2),
            },
        )
    finally:
        gateway.proc.stop()


async def starting_case(lab: Lab, args: argparse.Namespace) -> None:
    gone = lab.directory / "gone.kubeconfig"  # a control plane that never answers
    gone.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [
                    {"name": "k", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "u", "user": {"token": "x"}}],
            }
        )
    )
    gateway = Gateway(lab, "gateway-starting", "--reconcile", "--kubeconfig", str(gone))
    try:
        await gateway.started()
        connector = aiohttp.TCPConnector(ssl=lab.caller_ssl(), limit=args.concurrency)
        base = f"https://127.0.0.1:{gateway.ports['caller']}"
        async with aiohttp.ClientSession(base_url=base, connector=connector) as caller:

            async def call() -> str:
                async with caller.get(f"/planes/{PLANE_B.namespace}/elsewhere/k8s/api") as answer:
                    await answer.read()
                    return f"{answer.status} Retry-After={answer.headers.get('Retry-After')}"

            rss_before = gateway.rss
            claim = f"wss://127.0.0.1:{gateway.ports['agent']}{AGENT_CONNECT_PATH}?plane={PLANE_B}"
            agents = dial(claim, lab.agent_ssl(PLANE_B))
            agent_outcomes, agent_latency = await storm(args.dials, args.concurrency, agents)
            caller_outcomes, caller_latency = await storm(args.dials, args.concurrency, call)
            rss_after = gateway.rss
        _report(
            "starting",
            {
                "agents": dict(agent_outcomes),
                "agent_answer_p99_ms": round(p99(agent_latency) * 1000, 1),
                "callers": dict(caller_outcomes),
                "caller_answer_p99_ms": round(p99(caller_latency) * 1000, 1),
                "rss_growth_mib": round((rss_after - rss_before) / MIB, 2),
            },
        )
    finally:
        gateway.proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_identity", description=__doc__)
    parser.add_argument("--dials", type=int, default=1000, help="hostile attempts per case")
    parser.add_argument("--concurrency", type=int, default=32, help="of them at once")
    parser.add_argument("--gets", type=int, default=300, help="small GETs measured per phase")
    parser.add_argument(
        "--impostor",
        choices=["identity", "stranger"],
        default="identity",
        help="identity: plane A's agent claims B (refused after TLS, IdentityMismatch); "
        "stranger: a certificate of an unknown CA (refused in the TLS handshake), to compare",
    )
    args = parser.parse_args(argv)

    async def run() -> None:
        with tempfile.TemporaryDirectory(prefix="hostile-identity-") as folder:
            lab = Lab(Path(folder))
            await identity_case(lab, args)
            await starting_case(lab, args)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
