"""A real TCP load balancer for tests and benchmarks: Debian's HAProxy in front of gateway
replicas.

`LoadBalancer` writes a config (TCP mode, TLS passed through untouched, one frontend per gateway
port, e.g. agents and callers), runs `haproxy -db -f <cfg>` as a subprocess and changes its
server list at run time through the runtime API on a stats socket: every replica slot is
declared up front, and `enable`/`disable` move a slot between `ready` and `maint`, as an
operator scaling a Deployment would see endpoints come and go. Each server is health-checked
with `GET /readyz` on the replica's operator port, quickly (`inter`, `fall`, `rise` below),
so a replica that died or began draining leaves the rotation within about
`CHECK_INTERVAL * CHECK_FALL` seconds. Every interval, timeout and wait is multiplied by the
balancer's `factor` (the tests pass PLANELINK_TEST_TIMEOUT_FACTOR, the benchmarks
PLANELINK_BENCH_WAIT_FACTOR).

Never a hand-written balancer: what the replicas must survive is what a real one does (least
connections for agents, redispatch of a refused connection, health checks).
"""

from __future__ import annotations

import asyncio
import csv
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envtest.ports import free_port
from envtest.server import start_in_group, stop_group, wait_answering, wait_listening

HAPROXY = "/usr/sbin/haproxy"
CHECK_INTERVAL = 0.2
"""Seconds between two health checks of one server (times the factor)."""
CHECK_FALL = 2
"""Failed checks in a row that take a server out of rotation."""
CHECK_RISE = 1
"""Passed checks that bring it back: a replica that answers /readyz 200 is ready."""
TUNNEL_TIMEOUT = "1h"
"""Idle time before HAProxy cuts a connection: longer than any test, so only the replicas and
agents end tunnels (their heartbeats keep them busy anyway)."""


def haproxy_binary() -> str:
    """HAProxy's path (Debian's package; scripts/test installs it when missing)."""
    found = shutil.which("haproxy") or (HAPROXY if Path(HAPROXY).exists() else None)
    if found is None:
        raise RuntimeError("haproxy is not installed: sudo apt-get install -y haproxy")
    return found


@dataclass(frozen=True)
class Server:
    """One replica as the balancer sees it: its port behind each frontend, and the port of
    its health check (the replica's operator port, plain HTTP)."""

    name: str
    ports: Mapping[str, int]
    check_port: int


@dataclass(frozen=True)
class Frontend:
    """A port the balancer listens on, and how it picks a server for each connection."""

    name: str
    balance: str = "roundrobin"


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(
    *,
    frontends: Sequence[Frontend],
    ports: Mapping[str, int],
    servers: Sequence[Server],
    enabled: frozenset[str],
    socket: Path,
    factor: float = 1.0,
    maxconn: int = 4096,
) -> str:
    """The HAProxy configuration: a frontend and a backend per entry of `frontends` (listening
    on `ports[name]`), every server declared in each backend, those not `enabled` in `maint`;
    its timeouts and check interval multiplied by `factor`."""
    lines = [
        "global",
        f"    stats socket {socket} mode 600 level admin",
        f"    maxconn {maxconn}",
        "",
        "defaults",
        "    mode tcp",
        # A connection refused by a replica that just died goes to another one.
        "    option redispatch",
        "    retries 3",
        f"    timeout connect {_milliseconds(2 * factor)}",
        f"    timeout check {_milliseconds(1 * factor)}",
        f"    timeout client {TUNNEL_TIMEOUT}",
        f"    timeout server {TUNNEL_TIMEOUT}",
        f"    default-server inter {_milliseconds(CHECK_INTERVAL * factor)} "
        f"fall {CHECK_FALL} rise {CHECK_RISE}",
    ]
    for frontend in frontends:
        lines += [
            "",
            f"frontend {frontend.name}",
            f"    bind 127.0.0.1:{ports[frontend.name]}",
            f"    default_backend {frontend.name}",
            "",
            f"backend {frontend.name}",
            f"    balance {frontend.balance}",
            "    option httpchk GET /readyz",
        ]
        for server in servers:
            state = "" if server.name in enabled else " disabled"
            lines.append(
                f"    server {server.name} 127.0.0.1:{server.ports[frontend.name]} "
                f"check port {server.check_port}{state}"
            )
    return "\n".join(lines) + "\n"


@dataclass
class LoadBalancer:
    """HAProxy in front of `servers` (those in `enabled` in rotation), run under `workdir`."""

    workdir: Path
    servers: Sequence[Server]
    frontends: Sequence[Frontend] = (Frontend("agents", "leastconn"), Frontend("callers"))
    enabled: set[str] = field(default_factory=set)
    ports: dict[str, int] = field(default_factory=dict)
    maxconn: int = 4096
    """Connections HAProxy holds at once (each frontend too): one per agent tunnel, so a
    benchmark of N agents and R replicas needs over N * R."""
    factor: float = 1.0
    """How much longer than the defaults checks, timeouts and waits take (a loaded machine)."""
    _process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "haproxy.sock"

    @property
    def config(self) -> Path:
        return self.workdir / "haproxy.cfg"

    def port(self, frontend: str) -> int:
        """The port `frontend` listens on."""
        return self.ports[frontend]

    async def start(self) -> None:
        """Write the config and start HAProxy; returns once every frontend accepts."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for frontend in self.frontends:
            self.ports.setdefault(frontend.name, free_port())
        self.config.write_text(
            render_config(
                frontends=self.frontends,
                ports=self.ports,
                servers=self.servers,
                enabled=frozenset(self.enabled),
                socket=self.socket,
                factor=self.factor,
                maxconn=self.maxconn,
            )
        )
        process = self._process = start_in_group(
            [haproxy_binary(), "-db", "-f", str(self.config)], self.log_file
        )
        for frontend in self.frontends:
            await wait_listening(
                self.ports[frontend.name],
                process,
                within=10 * self.factor,
                name="haproxy",
                log=self.log,
            )
        # The frontends may accept before the stats socket is there (HAProxy binds a UNIX
        # socket under a temporary name and renames it into place): a runtime command could
        # then find no socket (seen once, under load).
        await wait_answering(
            lambda: self.command("show info"),
            process,
            within=10 * self.factor,
            name="haproxy",
            log=self.log,
            what=f"runtime API never answered on {self.socket}",
        )

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await asyncio.to_thread(stop_group, process, grace=5 * self.factor)

    @property
    def log_file(self) -> Path:
        return self.workdir / "haproxy.log"

    def log(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-50:])

    # -- the runtime API -----------------------------------------------------------------------

    async def command(self, line: str) -> str:
        """One runtime API command on the stats socket; its answer."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode()
        finally:
            writer.close()
            await writer.wait_closed()

    async def enable(self, name: str) -> None:
        """Put server `name` in rotation on every frontend (checks decide when it serves)."""
        await self._set_state(name, "ready")
        self.enabled.add(name)

    async def disable(self, name: str) -> None:
        """Take server `name` out of rotation (maintenance): no new connections; those open
        stay until their ends close them."""
        await self._set_state(name, "maint")
        self.enabled.discard(name)

    async def _set_state(self, name: str, state: str) -> None:
        for frontend in self.frontends:
            answer = await self.command(f"set server {frontend.name}/{name} state {state}")
            if answer.strip():
                raise RuntimeError(f"haproxy refused {state} for {name}: {answer.strip()}")

    async def statuses(self) -> dict[tuple[str, str], str]:
        """{(frontend, server): HAProxy's status of it: "UP", "DOWN", "MAINT", "no check"...}"""
        text = (await self.command("show stat")).lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            (row["pxname"], row["svname"]): row["status"]
            for row in rows
            if row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_status(self, name: str, wanted: str, *, within: float = 15) -> None:
        """Return once server `name` has status `wanted` on every frontend (e.g. "UP" once its
        checks passed, "DOWN" once they failed `CHECK_FALL` times); TimeoutError after `within`
        seconds (times `factor`)."""
        deadline = time.monotonic() + within * self.factor
        while True:
            statuses = await self.statuses()
            if all(statuses[frontend.name, name] == wanted for frontend in self.frontends):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"haproxy: {name} never {wanted} (now {statuses})")
            await asyncio.sleep(0.05)

    async def sessions(self, frontend: str) -> dict[str, int]:
        """{server: connections it was given so far} on `frontend`'s backend (`stot`)."""
        text = (await self.command("show stat")).lstrip("# ")
        return {
            row["svname"]: int(row["stot"] or 0)
            for row in csv.DictReader(text.splitlines())
            if row["pxname"] == frontend and row["svname"] not in ("FRONTEND", "BACKEND")
        }
