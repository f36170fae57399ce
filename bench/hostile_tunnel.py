"""Hostile tunnel peer against a real gateway process (issue #10, finding 2).

A stand-in agent with a valid certificate of a plane of its own connects, sends its HELLO,
stops reading its socket and sends PINGs as fast as it can, reconnecting whenever the gateway
drops it, for `--seconds`. Meanwhile a caller sends small GETs to another plane (a real agent
and upstream). Reported: the gateway's RSS before, at its peak during and after the flood; the
time from the first flood message to the gateway's first drop of the agent (its
`planelink_gateway_agent_drops_total`); how many times it was dropped; p99 of the small GETs
unloaded and during the flood.

    python -m bench.hostile_tunnel [--seconds 15]

The flooder runs in a process of its own (`python -m bench.hostile_tunnel flood ...`) so that
its CPU is not the load generator's. Never point it at a gateway you care about.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import time
from pathlib import Path

import aiohttp
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bench.client import closed_loop
from bench.processes import FAST, Stack, rss_bytes, spawn
from certs import plane_ref
from protocol import Role, Settings
from protocol.frames import Ping
from protocol.hello import build_hello
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

HOSTILE = plane_ref("bench", "hostile")
SMALL = "/api/v1/namespaces/bench/configmaps/small"
PINGS_PER_MESSAGE = 50_000
"""20 bytes a PING: messages of about 1 MB, under the default MAX_MESSAGE_SIZE of 1 MiB."""
MIB = 1 << 20
DROPS = "planelink_gateway_agent_drops_total"


# -- the flooder (a process of its own) --------------------------------------------------------


async def flood(url: str, tls_dir: Path, seconds: float, *, reconnect: bool) -> None:
    """Connect, HELLO, stop reading, send PINGs for `seconds`; when dropped, reconnect (with
    `reconnect`) or wait for the time to pass."""
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    context.load_cert_chain(tls_dir / "tls.crt", tls_dir / "tls.key")
    hello = build_hello(
        role=Role.AGENT,
        versions=(1,),
        settings=Settings(),
        identity={IDENTITY_PLANE: str(HOSTILE), IDENTITY_AGENT_ID: "flooder"},
        capabilities=(),
    )
    pings = b"".join(Ping(i.to_bytes(8, "big")).encode(1) for i in range(PINGS_PER_MESSAGE))
    deadline = time.monotonic() + seconds
    sent = connections = 0
    first_message: float | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
            async with connect(
                url,
                ssl=context,
                subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                ping_interval=None,
                compression=None,
                close_timeout=0.1,
                open_timeout=5,
            ) as websocket:
                connections += 1
                await websocket.send(hello)
                websocket.transport.pause_reading()
                while time.monotonic() < deadline:
                    if first_message is None:
                        first_message = time.monotonic()  # CLOCK_MONOTONIC: system-wide
                    await websocket.send(pings)
                    sent += 1
        if not reconnect:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        await asyncio.sleep(0.05)  # reconnect, as an attacker would, without a busy loop
    report = {
        "messages": sent,
        "pings": sent * PINGS_PER_MESSAGE,
        "connections": connections,
        "first_message_at": first_message,
    }
    print(json.dumps(report))


# -- the measurement ---------------------------------------------------------------------------


async def measure(seconds: float, *, reconnect: bool) -> dict[str, object]:
    async with Stack(extra_planes=(HOSTILE,)) as stack:
        gateway = stack.pid("gateway")
        target = stack.through[FAST]
        await closed_loop(target, SMALL, concurrency=4, requests=200)  # warm up
        unloaded, _ = await closed_loop(target, SMALL, concurrency=4, duration=seconds / 2)
        before = rss_bytes(gateway)
        url = f"wss://127.0.0.1:{stack.ports['agent']}{AGENT_CONNECT_PATH}?plane={HOSTILE}"
        tls_dir = stack.workdir / "pki/agents" / HOSTILE.namespace / HOSTILE.name
        argv = [sys.executable, "-m", "bench.hostile_tunnel", "flood", "--url", url]
        argv += ["--tls-dir", str(tls_dir), "--seconds", str(seconds)]
        argv += ["--reconnect"] if reconnect else []
        flooder = spawn("flooder", argv, stack.workdir)
        peak = before
        dropped: dict[str, float] = {}
        """First time each drop was seen, by its metric sample."""

        async def watch() -> None:
            nonlocal peak
            async with aiohttp.ClientSession() as http:
                while flooder.popen.poll() is None:
                    peak = max(peak, rss_bytes(gateway))
                    for sample, value in (await stack.gateway_metrics(http)).items():
                        if sample.startswith(DROPS) and value and sample not in dropped:
                            dropped[sample] = time.monotonic()
                    await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        loaded, _ = await closed_loop(target, SMALL, concurrency=4, duration=seconds * 0.9)
        await asyncio.to_thread(flooder.popen.wait, seconds + 30)
        await watcher
        drops = {
            sample: value
            for sample, value in (await stack.gateway_metrics()).items()
            if sample.startswith(DROPS)
        }
        flooded = json.loads(flooder.tail(1) or "{}")
        first = flooded.get("first_message_at")
        first_drop = min(dropped.values(), default=None)
        await asyncio.sleep(2)
        after = rss_bytes(gateway)
        return {
            "flood_seconds": seconds,
            "reconnect": reconnect,
            "flooder": flooded,
            "gateway_rss_mib": {
                "before": round(before / MIB, 1),
                "peak_during": round(peak / MIB, 1),
                "after": round(after / MIB, 1),
                "growth_peak": round((peak - before) / MIB, 1),
            },
            "first_drop_after_s": (
                None if first_drop is None or first is None else round(first_drop - first, 2)
            ),
            "drops": drops,
            "other_plane_small_get_ms": {
                "unloaded_p50": round(unloaded.ms(50), 1),
                "unloaded_p99": round(unloaded.ms(99), 1),
                "during_p50": round(loaded.ms(50), 1),
                "during_p99": round(loaded.ms(99), 1),
                "during_errors": loaded.errors,
                "during_requests": len(loaded.samples),
            },
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_tunnel", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="flood duration (15)")
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="the flooder redials each time it is dropped (default: one connection, as in the "
        "reported finding)",
    )
    commands = parser.add_subparsers(dest="command")
    flooder = commands.add_parser("flood", help="run only the flooder (used by the bench)")
    flooder.add_argument("--url", required=True)
    flooder.add_argument("--tls-dir", type=Path, required=True)
    flooder.add_argument("--seconds", type=float, default=15.0)
    flooder.add_argument("--reconnect", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "flood":
        asyncio.run(flood(args.url, args.tls_dir, args.seconds, reconnect=args.reconnect))
        return 0
    print(json.dumps(asyncio.run(measure(args.seconds, reconnect=args.reconnect)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
