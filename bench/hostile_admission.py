"""Anonymous floods of both listening ports against a real gateway process, and what they cost.

``python -m bench.hostile_admission [--sockets 1000] [--seconds 20] [--json FILE]``

Starts the bench stack (upstream, gateway, one agent: `bench.processes.Stack`), measures the
unloaded figures, then holds `--sockets` silent TCP connections on each of the agent and caller
ports from many loopback source addresses (each reopened a second after the gateway drops it)
and measures again:

* the gateway's RSS growth (VmRSS; the bar is 16 MiB);
* the time for a killed agent, restarted, to get back in (spawn to its first request served:
  mostly the agent process's own start-up), and the p99 of an agent's TLS handshake alone;
* /healthz latency on the operator port;
* p50/p99 of small GETs through the gateway to the plane.

It also reports the gateway's refusal counters by port and reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bench.agents import raise_nofile
from bench.processes import FAST, Stack, rss_bytes

SMALL_PATH = "/api/v1/namespaces/bench/configmaps/small"
MIB = 1024 * 1024
GIVE_UP = 10.0
"""Seconds after which one request or handshake counts as failed (infinite in the figures)."""
GIVE_UP_AFTER = 3
BACK_IN_LIMIT = 60.0
"""Seconds a restarted agent gets to serve a request before it counts as locked out."""


def _addresses() -> itertools.cycle[str]:
    return itertools.cycle(f"127.0.{a}.{b}" for a in range(1, 20) for b in range(2, 251))


async def _silent_slot(port: int, addresses: itertools.cycle[str], stop: asyncio.Event) -> None:
    """One silent connection to `port`, reopened a second after each drop, until `stop`."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((next(addresses), 0))
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_recv(sock, 1)  # returns (or raises) when the gateway drops it
        except OSError:
            pass
        finally:
            sock.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _timed(count: int, attempt: Callable[[], Awaitable[None]]) -> list[float]:
    """Seconds each of `count` attempts took; a failed one is infinite, and after
    `GIVE_UP_AFTER` failures the rest are counted as failed without trying."""
    took: list[float] = []
    while len(took) < count:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(GIVE_UP):
                await attempt()
        except (aiohttp.ClientError, OSError, RuntimeError, TimeoutError):
            took.append(math.inf)
            if took.count(math.inf) >= GIVE_UP_AFTER:
                took += [math.inf] * (count - len(took))
            continue
        took.append(time.perf_counter() - started)
    return took


async def _small_gets(http: aiohttp.ClientSession, stack: Stack, count: int) -> list[float]:
    target = stack.through[FAST]

    async def get() -> None:
        async with http.get(target.base + SMALL_PATH, ssl=target.ssl) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"small GET answered {response.status}")

    return await _timed(count, get)


async def _healthz(http: aiohttp.ClientSession, stack: Stack, count: int) -> list[float]:
    async def get() -> None:
        async with http.get(f"http://127.0.0.1:{stack.ports['operator']}/healthz") as response:
            await response.read()

    return await _timed(count, get)


async def _agent_handshakes(stack: Stack, count: int) -> list[float]:
    """Seconds for an agent's TLS handshake with the agent port (its certificate verified)."""
    tls_dir = stack.workdir / "pki" / "agents" / FAST.namespace / FAST.name
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    context.load_cert_chain(tls_dir / "tls.crt", tls_dir / "tls.key")

    async def handshake() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", stack.ports["agent"], ssl=context)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    return await _timed(count, handshake)


async def _agent_back_in(stack: Stack) -> float:
    """SIGKILL the agent, start a new one: seconds from its spawn to a request served."""
    name = f"agent-{FAST.name}"
    killed = stack.procs.pop(name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(killed.pid, signal.SIGKILL)
    killed.popen.wait()
    started = time.perf_counter()
    with contextlib.suppress(RuntimeError):  # not ready in 30 s: keep trying to the limit
        await stack.start_agent(FAST, stack.workdir / "upstream" / "kubeconfig")
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() - started < BACK_IN_LIMIT:
            if math.isfinite((await _small_gets(http, stack, 1))[0]):
                return time.perf_counter() - started
            await asyncio.sleep(0.05)
    return math.inf


def _quantile(samples: list[float], q: float) -> float:
    """The `q` quantile; infinite when failures (infinite samples) reach it."""
    ordered = sorted(samples)
    if math.isinf(ordered[min(len(ordered) - 1, int(q * len(ordered)))]):
        return math.inf
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q * 100) - 1]


async def _measure(stack: Stack, label: str, gets: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        small = await _small_gets(http, stack, gets)
        health = await _healthz(http, stack, 50)
    handshakes = await _agent_handshakes(stack, 50)
    back_in = await _agent_back_in(stack)
    figures = {
        "small_get_p50_ms": 1000 * _quantile(small, 0.5),
        "small_get_p99_ms": 1000 * _quantile(small, 0.99),
        "healthz_p99_ms": 1000 * _quantile(health, 0.99),
        "agent_tls_handshake_p99_ms": 1000 * _quantile(handshakes, 0.99),
        "agent_back_in_s": back_in,
        "gateway_rss_mib": rss_bytes(stack.pid("gateway")) / MIB,
    }
    figures["failed_requests_and_handshakes"] = sum(
        math.isinf(sample) for sample in (*small, *health, *handshakes)
    )
    print(label, json.dumps({key: round(value, 2) for key, value in figures.items()}))
    return figures


async def run(sockets: int, seconds: float) -> dict[str, object]:
    raise_nofile()
    async with Stack() as stack:
        async with aiohttp.ClientSession() as http:
            await _small_gets(http, stack, 50)  # warm up connections and code paths
        unloaded = await _measure(stack, "unloaded", 300)
        stop = asyncio.Event()
        addresses = _addresses()
        slots = [
            asyncio.create_task(_silent_slot(stack.ports[port], addresses, stop))
            for port in ("agent", "caller")
            for _ in range(sockets)
        ]
        peak_rss = unloaded["gateway_rss_mib"]
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                peak_rss = max(peak_rss, rss_bytes(stack.pid("gateway")) / MIB)
            flooded = await _measure(stack, "flooded", 300)
            peak_rss = max(peak_rss, flooded["gateway_rss_mib"])
            metrics = await stack.gateway_metrics()
        finally:
            stop.set()
            await asyncio.gather(*slots, return_exceptions=True)
    refusals = {
        key: value for key, value in metrics.items() if key.startswith("planelink_gateway_conn")
    }
    return {
        "sockets_per_port": sockets,
        "flood_seconds": seconds,
        "unloaded": unloaded,
        "flooded": flooded,
        "rss_growth_mib": peak_rss - unloaded["gateway_rss_mib"],
        "small_get_p99_ratio": flooded["small_get_p99_ms"] / unloaded["small_get_p99_ms"],
        "gateway_connection_metrics": refusals,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_admission", description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000, help="silent sockets per port")
    parser.add_argument("--seconds", type=float, default=20, help="flood before measuring")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.sockets, args.seconds))
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
