"""Start and stop the benchmarked processes: upstream, gateway, agents (and envtest).

Every process runs in a session (process group) of its own and is killed, group and all, when
the `Stack` closes — pass or fail. Readiness is read from their health endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from types import TracebackType
from typing import Self

import aiohttp
import yaml

import certs
from bench.h2client import h2_context
from bench.upstream_h2 import DEFAULT_MAX_STREAMS
from certs import PlaneRef, plane_ref
from envtest import (
    Credentials,
    KubeAPIServer,
    ServerOptions,
    build_kubeconfig,
    free_port,
)
from envtest.factor import read_factor
from envtest.server import start_in_group, wait_listening
from planelink.local import LocalPlanelink

WAIT_FACTOR_VARIABLE = "PLANELINK_BENCH_WAIT_FACTOR"


WAIT_FACTOR = read_factor(os.environ, WAIT_FACTOR_VARIABLE)
"""How much longer the harness waits on a loaded machine (the test suite passes its own
PLANELINK_TEST_TIMEOUT_FACTOR); read once, inherited by the processes the harness starts."""


def budget(seconds: float) -> float:
    """A wait budget of the harness (for a process to start, agents to come back, a workload to
    finish), stretched by $PLANELINK_BENCH_WAIT_FACTOR. Never a target a row is judged by, nor
    a duration that is measured."""
    return seconds * WAIT_FACTOR


FAST = plane_ref("bench", "fast")
FAST_H2 = plane_ref("bench", "fast-h2")
"""The fast upstream again, through an agent that speaks HTTP/2 to it (`Stack(http2=True)`)."""
KUBE = plane_ref("bench", "kube")
UPSTREAM_TOKEN = "bench-token"  # noqa: S105 - the fast upstream accepts any token
MAX_STREAMS = 12_000
WATCHES_GATEWAY_ARGS = (
    *("--max-connections", str(MAX_STREAMS)),
    *("--max-unauthenticated", str(MAX_STREAMS)),
    *("--max-unauthenticated-per-ip", str(MAX_STREAMS)),
    *("--client-hello-timeout", "120", "--tls-handshake-timeout", "120"),
)
"""Admission limits for the `watches` workload: over HTTP/1.1 each of its 10,000 watches is a
caller connection, all from 127.0.0.1, handshaking at once; the defaults (4,096 connections per
port, 256 unauthenticated per address, 3 s to the ClientHello and 5 s to the end of a handshake
that waits its turn among 64) refuse most of them. The file-descriptor limit must hold two
ports' worth (`raise_nofile_for`)."""


def raise_nofile_for(connections: int) -> int:
    """Raise RLIMIT_NOFILE (soft and, where allowed, hard) so that a gateway started from here
    may hold `connections` on each of its two ports; returns the soft limit now."""
    wanted = 2 * connections + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
        return max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def established_connections(pid: int, remote_port: int) -> int:
    """TCP connections of process `pid` in state ESTABLISHED to 127.0.0.1:`remote_port` (read
    from /proc: its socket descriptors, matched by inode against its namespace's tcp table)."""
    inodes: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return 0
    for name in names:
        try:
            link = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    port_hex = f"{remote_port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    # sl local remote st ... inode (field 9)
                    if (
                        fields[3] == "01"
                        and fields[2].endswith(":" + port_hex)
                        and fields[9] in inodes
                    ):
                        count += 1
        except OSError:
            continue
    return count


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, *, grace: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


BYTECODE_CACHE = Path.home() / ".cache" / "planelink" / "bytecode"
"""Where the processes started here keep the modules they compiled (`PYTHONPYCACHEPREFIX`),
even where the shell says not to write bytecode: the image compiles its modules when it is
built, and a start-up measured here must not include compiling planelink's few hundred."""


def spawn(name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None) -> Proc:
    log = logdir / f"{name}.log"
    compiled = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(BYTECODE_CACHE)}
    return Proc(name, start_in_group(argv, log, {**os.environ, **compiled, **(env or {})}), log)


async def wait_http_ok(url: str, proc: Proc, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Poll `url` (plain HTTP) until it answers 200 (for `budget(timeout)` seconds); fail
    early if `proc` died."""
    timeout = budget(timeout)
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} not ready at {url} after {timeout} s")
            await asyncio.sleep(0.05)


async def wait_port(port: int, proc: Proc, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Return once `proc` listens on `port` (for `budget(timeout)` seconds)."""
    await wait_listening(port, proc.popen, within=budget(timeout), name=proc.name, log=proc.tail)


@dataclass
class Target:
    """Where a client sends requests: a base URL, TLS context and headers; `h2_ssl` is a TLS
    context of its own offering h2 in ALPN (for `bench.h2client`), where HTTP/2 is measured."""

    name: str
    base: str
    ssl: ssl.SSLContext
    headers: dict[str, str] = field(default_factory=dict)
    h2_ssl: SSLContext | None = None
    files: TargetFiles | None = None
    """The same credentials as files, for a client in another process (`bench.goclient`)."""


@dataclass(frozen=True)
class TargetFiles:
    """PEM files of a target's server CA and client certificate, and its bearer token."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None


def caller_target(
    name: str,
    caller_port: int,
    plane: PlaneRef,
    context: ssl.SSLContext,
    files: TargetFiles | None = None,
) -> Target:
    """Requests to `plane` through the gateway (or balancer) caller port `caller_port`."""
    return Target(
        name,
        f"https://127.0.0.1:{caller_port}/planes/{plane.namespace}/{plane.name}/k8s",
        context,
        files=files,
    )


def caller_files(pki: Path) -> TargetFiles:
    """The caller certificate of a PKI written by `LocalPlanelink.write_pki` under `pki`."""
    return TargetFiles(
        ca=pki / "gateway/ca.crt", cert=pki / "callers/tls.crt", key=pki / "callers/tls.key"
    )


@dataclass
class Stack:
    """Upstream + gateway + one agent per plane (+ envtest with `kube=True`), in subprocesses."""

    kube: bool = False
    http2: bool = False
    """Also plane `FAST_H2`: a second agent, speaking HTTP/2 to the fast upstream, for the
    HTTP/2 variants; the agent of `FAST` always speaks HTTP/1.1 to it."""
    upstream_h2_max_streams: int = DEFAULT_MAX_STREAMS
    """The fast upstream's SETTINGS_MAX_CONCURRENT_STREAMS (kube-apiserver's
    `--http2-max-streams-per-connection`)."""
    gateway_args: tuple[str, ...] = ()
    extra_planes: tuple[PlaneRef, ...] = ()
    """Planes the gateway trusts (PKI and planes file) that get no agent process here."""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="planelink-bench-")))
    procs: dict[str, Proc] = field(default_factory=dict)
    through: dict[PlaneRef, Target] = field(default_factory=dict)
    direct: dict[PlaneRef, Target] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    launches: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict)
    """How each agent was started (argv, environment added), for `respawn_agent`."""
    _kube_server: KubeAPIServer | None = None

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        planes = {FAST: self._start_upstream()}
        if self.http2:
            planes[FAST_H2] = planes[FAST]
        if self.kube:
            planes[KUBE] = self._start_envtest()
        local = self._write_pki(planes)
        through_ssl = local.caller_ssl_context()
        for name in ("agent", "caller", "operator"):
            self.ports[name] = free_port()
        await wait_port(self.ports["upstream"], self.procs["upstream"])
        await self.start_gateway()
        for plane, kubeconfig in planes.items():
            self.through[plane] = caller_target(
                "through", self.ports["caller"], plane, through_ssl, caller_files(local.directory)
            )
            # Each agent's protocol to its API server is set either way, whatever the default.
            if plane == FAST_H2:
                # As many HTTP/2 connections as its --max-streams need, at the server's limit.
                connections = min(10_000, math.ceil(MAX_STREAMS / self.upstream_h2_max_streams))
                env = {
                    "PLANELINK_UPSTREAM_HTTP2": "true",
                    "PLANELINK_UPSTREAM_HTTP2_MAX_CONNECTIONS": str(connections),
                }
            else:
                env = {"PLANELINK_UPSTREAM_HTTP2": "false"}
            # A storm of 10,000 watches may wait longer than a minute for its response heads
            # (then 504); the benchmark measures how long, instead of failing.
            env["PLANELINK_UPSTREAM_RESPONSE_TIMEOUT"] = "600"
            await self.start_agent(plane, kubeconfig, env=env)
        if self.http2:
            self.through[FAST_H2].h2_ssl = h2_context(local.caller_ssl_context())

    def _write_pki(self, planes: dict[PlaneRef, Path]) -> LocalPlanelink:
        """The PKI and planes file under `workdir`/pki for `planes` and `extra_planes`; returns
        what makes the callers' TLS contexts."""
        extra = dict.fromkeys(self.extra_planes, Path(os.devnull))  # kubeconfigs unused
        local = LocalPlanelink(directory=self.workdir / "pki", planes=planes | extra)
        local.directory.mkdir(parents=True)
        local.write_pki()
        return local

    def _start_upstream(self) -> Path:
        ca = certs.create_ca("bench upstream CA")
        server = certs.issue_server(
            ca, common_name="upstream", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
        )
        up = self.workdir / "upstream"
        up.mkdir(parents=True)
        (up / "tls.crt").write_bytes(server.chain_pem())
        (up / "tls.key").write_bytes(server.private_key_pem())
        (up / "ca.crt").write_bytes(ca.certificate_pem())
        port = self.ports["upstream"] = free_port()
        self.procs["upstream"] = spawn(
            "upstream",
            [
                *(sys.executable, "-m", "bench.upstream", "--port", str(port)),
                *("--cert", str(up / "tls.crt"), "--key", str(up / "tls.key")),
                *("--h2-max-streams", str(self.upstream_h2_max_streams)),
            ],
            self.workdir,
        )
        kubeconfig = build_kubeconfig(
            name="fast",
            server=f"https://127.0.0.1:{port}",
            ca_pem=ca.certificate_pem(),
            credentials=Credentials(user="bench", token=UPSTREAM_TOKEN),
        )
        path = up / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        self.direct[FAST] = Target(
            "direct",
            f"https://127.0.0.1:{port}",
            ssl.create_default_context(cadata=ca.certificate_pem().decode()),
            {"Authorization": f"Bearer {UPSTREAM_TOKEN}"},
            h2_context(ssl.create_default_context(cadata=ca.certificate_pem().decode())),
            TargetFiles(ca=up / "ca.crt", token=UPSTREAM_TOKEN),
        )
        return path

    def _start_envtest(self) -> Path:
        server = KubeAPIServer(options=ServerOptions(name="bench"))
        self._kube_server = server
        server.start()
        self.direct[KUBE] = Target(
            "direct",
            server.url,
            server.ssl_context(),
            {"Authorization": f"Bearer {server.admin_token}"},
        )
        return server.kubeconfig_path

    def gateway_argv(self, ports: Mapping[str, int], *extra: str) -> list[str]:
        """`planelink gateway` on `ports` (agent, caller, operator) with this stack's PKI."""
        pki = self.workdir / "pki"
        argv = [sys.executable, "-m", "planelink", "--log-level", "warning", "gateway"]
        argv += [
            "--tls-cert",
            str(pki / "gateway/tls.crt"),
            "--tls-key",
            str(pki / "gateway/tls.key"),
        ]
        argv += ["--caller-ca", str(pki / "callers/ca.crt"), "--planes", str(pki / "planes.yaml")]
        argv += ["--bind", "127.0.0.1", "--agent-port", str(ports["agent"])]
        argv += ["--caller-port", str(ports["caller"])]
        argv += ["--operator-port", str(ports["operator"])]
        argv += ["--request-timeout", "600", "--drain-grace", "1", *self.gateway_args, *extra]
        return argv

    async def start_gateway(self) -> None:
        proc = self.procs["gateway"] = spawn("gateway", self.gateway_argv(self.ports), self.workdir)
        await wait_http_ok(f"http://127.0.0.1:{self.ports['operator']}/readyz", proc)

    async def stop_gateway(self) -> int | None:
        """SIGTERM the gateway (SIGKILL after 5 s); returns its exit code. `start_gateway`
        starts a new one on the same ports."""
        proc = self.procs.pop("gateway")
        await asyncio.to_thread(proc.stop)
        return proc.popen.returncode

    async def start_agent(
        self,
        plane: PlaneRef,
        kubeconfig: Path,
        *extra: str,
        gateway_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """A real `planelink agent` for `plane`, dialling `gateway_port` (the gateway's agent
        port by default), with `env` added to its environment; returns once it is ready (holds
        a tunnel)."""
        name = f"agent-{plane.name}"
        port = self.ports[name] = free_port()
        gateway = self.ports["agent"] if gateway_port is None else gateway_port
        argv = [sys.executable, "-m", "planelink", "--log-level", "warning", "agent"]
        argv += ["--gateway-url", f"wss://127.0.0.1:{gateway}", "--plane", str(plane)]
        argv += ["--agent-id", name, "--kubeconfig", str(kubeconfig)]
        argv += ["--tls-dir", str(self.workdir / "pki/agents" / plane.namespace / plane.name)]
        argv += ["--health-address", f"127.0.0.1:{port}", "--drain-grace", "1"]
        argv += ["--backoff-base", "0.1", "--backoff-cap", "1"]
        argv += ["--max-streams", str(MAX_STREAMS)]  # the full `watches` workload opens 10,000
        argv += extra
        self.launches[name] = (argv, env)
        proc = self.procs[name] = spawn(name, argv, self.workdir, env)
        await wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc)

    async def stop_agent(self, name: str) -> None:
        """SIGTERM agent `name` (SIGKILL after 5 s); `spawn_agent` starts it again."""
        proc = self.procs.pop(name)
        await asyncio.to_thread(proc.stop)

    def spawn_agent(self, name: str) -> Proc:
        """Start agent `name` again as `start_agent` started it; returns at once, before it
        is ready."""
        argv, env = self.launches[name]
        proc = self.procs[name] = spawn(name, argv, self.workdir, env)
        return proc

    # -- observe ------------------------------------------------------------------------------

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    async def gateway_planes(self) -> dict[str, object]:
        url = f"http://127.0.0.1:{self.ports['operator']}/planes"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body: dict[str, object] = await response.json()
            return body

    async def agent_metrics(self, plane: PlaneRef = FAST) -> dict[str, float]:
        return await scrape(f"http://127.0.0.1:{self.ports['agent-' + plane.name]}/metrics")

    async def gateway_metrics(self, http: aiohttp.ClientSession | None = None) -> dict[str, float]:
        """The gateway's /metrics; through `http` when polled often (its connections reused)."""
        return await scrape(f"http://127.0.0.1:{self.ports['operator']}/metrics", http)

    # -- stop ---------------------------------------------------------------------------------

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs.pop(name).stop()
        server = self._kube_server
        if server is not None:
            self._kube_server = None
            server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def scrape(url: str, http: aiohttp.ClientSession | None = None) -> dict[str, float]:
    """A Prometheus text page as {sample with labels: value}."""
    if http is None:
        async with aiohttp.ClientSession() as session:
            return await scrape(url, session)
    async with http.get(url) as response:
        text = await response.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values
