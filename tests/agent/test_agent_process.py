"""The agent as a process: its command line, and a graceful stop on SIGTERM with requests in
flight (new streams refused, in-flight ones served, exit 0 within the grace period)."""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from envtest import KubeAPIServer
from planelink.agent_cli import add_agent_parser
from protocol import ErrorCode
from tests.kit.waits import eventually, scaled, wait_for
from tunnel import StreamResetError, TunnelStream

if TYPE_CHECKING:
    from tests.agent.conftest import AgentTls, GatewayConnection, TestGateway

PLANE = "agent-tests/edge"
DRAIN_GRACE = 10.0
"""Of the agent that must serve its in-flight watch while draining: enough for what the test
does meanwhile (a GOAWAY, a kubectl run, an event through the agent) on a slow, loaded machine.
Not scaled, and no longer: the test waits for the whole grace."""


@dataclass
class AgentProcess:
    process: asyncio.subprocess.Process
    log: Path

    def log_lines(self) -> list[dict[str, object]]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]


StartProcess = Callable[..., Awaitable[AgentProcess]]

MODULES_AT_EXIT = """
import atexit, sys
def note():
    with open({path!r}, "w") as sink:
        sink.write(repr(sorted(name for name, module in sys.modules.items() if module)))
atexit.register(note)
from planelink.cli import main
flags = sys.argv[1:]
logs = [flag for flag in flags if flag.startswith("--log-format")]  # the command's, not agent's
sys.exit(main([*logs, "agent", *(flag for flag in flags if flag not in logs)]))
"""
"""`planelink agent`, as the image runs it, writing as it exits the modules it had imported."""


@pytest.fixture
async def start_agent_process(
    fake_gateway: TestGateway, agent_tls: AgentTls, plane_server: KubeAPIServer, tmp_path: Path
) -> AsyncIterator[StartProcess]:
    """`python -m planelink.agent_cli` dialing the test gateway, serving the real API server,
    with the given drain grace."""
    started: list[AgentProcess] = []

    async def start(grace: float, *, modules_at_exit: Path | None = None) -> AgentProcess:
        log = tmp_path / f"agent-{len(started)}.log"
        entry = (
            ["-m", "planelink.agent_cli"]
            if modules_at_exit is None
            else ["-c", MODULES_AT_EXIT.format(path=str(modules_at_exit))]
        )
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *entry,
                "--log-format=json",
                f"--gateway-url={fake_gateway.url}",
                f"--plane={PLANE}",
                f"--tls-dir={agent_tls.directory}",
                f"--kubeconfig={plane_server.kubeconfig_path}",
                "--health-address=127.0.0.1:0",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                # Flags and environment variables are equivalent: the grace comes by the latter.
                env={**os.environ, "PLANELINK_DRAIN_GRACE": str(grace)},
            )
        started.append(AgentProcess(process, log))
        return started[-1]

    yield start
    for handle in started:
        if handle.process.returncode is None:
            handle.process.kill()
            await handle.process.wait()


async def _watch(
    connection: GatewayConnection, plane_namespace: str, query: str = ""
) -> TunnelStream:
    stream = connection.open(
        "GET", f"/api/v1/namespaces/{plane_namespace}/configmaps?watch=1{query}"
    )
    assert (await stream.response()).status == 200
    return stream


async def _read_to_end(stream: TunnelStream) -> None:
    while await wait_for(stream.read()):
        pass


async def _next_event(stream: TunnelStream) -> dict[str, object]:
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = await wait_for(stream.read())
        assert chunk, "the watch ended"
        line += chunk
    event: dict[str, object] = json.loads(line)
    return event


async def test_sigterm_refuses_new_streams_serves_in_flight_ones_and_exits_zero(
    start_agent_process: StartProcess,
    fake_gateway: TestGateway,
    plane_server: KubeAPIServer,
    plane_namespace: str,
) -> None:
    grace = DRAIN_GRACE
    agent_process = await start_agent_process(grace)
    connection = await fake_gateway.next_connection(seconds=60)  # a cold interpreter starts slowly
    watch = await _watch(connection, plane_namespace)

    agent_process.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    await eventually(
        lambda: connection.session.draining, within=10, message="never: connection.session.draining"
    )  # the agent's GOAWAY arrived
    with pytest.raises(StreamResetError) as refused:
        connection.open("GET", "/api")
    assert refused.value.code is ErrorCode.REFUSED_STREAM

    # The watch in flight still delivers what happens during the drain.
    await plane_server.akubectl("create", "configmap", "during-drain", "-n", plane_namespace)
    event = await _next_event(watch)
    assert event["type"] == "ADDED"

    # A watch never ends by itself: at the end of the grace the agent closes and exits 0.
    code = await wait_for(agent_process.process.wait(), grace + 10)
    elapsed = time.monotonic() - signalled
    assert code == 0
    assert elapsed < grace + scaled(5.0)
    with pytest.raises(StreamResetError):
        await _read_to_end(watch)
    events = [line["event"] for line in agent_process.log_lines()]
    assert "signal received, stopping" in events
    assert "draining" in events
    assert "drain grace over, closing" in events
    assert events[-1] == "agent stopped"


async def test_sigterm_exits_as_soon_as_in_flight_requests_finish(
    start_agent_process: StartProcess, fake_gateway: TestGateway, plane_namespace: str
) -> None:
    grace = 120.0
    agent_process = await start_agent_process(grace)
    connection = await fake_gateway.next_connection(seconds=60)
    # A watch the API server ends after 2 s: the drain is over when it is.
    watch = await _watch(connection, plane_namespace, "&timeoutSeconds=2")
    agent_process.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    code = await wait_for(agent_process.process.wait(), 30)
    assert code == 0
    assert time.monotonic() - signalled < scaled(15.0)  # far below the grace
    assert await wait_for(watch.read()) == b""  # ended normally, not reset
    await wait_for(connection.ended.wait())
    assert connection.close_reason == "drained"
    events = [line["event"] for line in agent_process.log_lines()]
    assert "drain grace over, closing" not in events


SERVING_WITHOUT = ("cryptography", "aiohttp", "kubernetes_asyncio", "pydantic", "rich")
"""What an agent that starts, dials and serves with good files never imports: cryptography is
for a file that is wrong or a gateway it refuses (`certs.ssl_first`), rich is kept out by the
command (`planelink.logs.keep_rich_out`), the others are never an agent's. (PyYAML is: this one
reads a kubeconfig.)"""


async def test_an_agent_that_serves_never_imports_cryptography(
    start_agent_process: StartProcess, fake_gateway: TestGateway, tmp_path: Path
) -> None:
    modules = tmp_path / "modules.txt"
    agent_process = await start_agent_process(5.0, modules_at_exit=modules)
    connection = await fake_gateway.next_connection(seconds=60)
    stream = connection.open("GET", "/api")
    assert (await stream.response()).status == 200
    await _read_to_end(stream)
    agent_process.process.send_signal(signal.SIGTERM)
    assert await wait_for(agent_process.process.wait(), 30) == 0
    loaded = {name.partition(".")[0] for name in ast.literal_eval(modules.read_text())}
    assert "agent" in loaded  # the probe saw the agent's modules
    assert not loaded & set(SERVING_WITHOUT), sorted(loaded & set(SERVING_WITHOUT))
    logged = [
        line for line in agent_process.log_lines() if line["event"] == "client certificate loaded"
    ]
    assert logged
    assert str(logged[0]["subject"]).startswith("CN=")


# -- the command line -------------------------------------------------------------------------


def _agent_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planelink.agent_cli", *args],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_help_explains_every_option_and_its_variable() -> None:
    shown = _agent_cli("--help")
    assert shown.returncode == 0
    assert shown.stdout.startswith("usage: planelink agent")
    for text in ("--gateway-url", "PLANELINK_GATEWAY_URL", "--plane", "--kubeconfig", "SIGTERM"):
        assert text in shown.stdout


def test_missing_or_bad_settings_exit_2_with_the_reason(tmp_path: Path) -> None:
    missing = _agent_cli()
    assert missing.returncode == 2
    assert "gateway URL is required" in missing.stderr
    bad = _agent_cli("--gateway-url=wss://gw.example.com", env={"PLANELINK_PLANE": "noslash"})
    assert bad.returncode == 2
    assert "plane 'noslash'" in bad.stderr
    unreadable = _agent_cli(
        "--gateway-url=wss://gw.example.com",
        "--plane=org/prod",
        f"--kubeconfig={tmp_path / 'absent'}",
        "--log-format=json",
    )
    assert unreadable.returncode == 2
    assert "cannot configure the API server" in unreadable.stderr


def test_the_subcommand_registers_on_the_planelink_parser() -> None:
    parser = argparse.ArgumentParser(prog="planelink")
    add_agent_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["agent", "--plane", "org/prod", "--heartbeat-timeout", "45"])
    assert args.plane == "org/prod"
    assert args.heartbeat_timeout == "45"  # parsed, with the environment, when it runs
    assert callable(args.run)
