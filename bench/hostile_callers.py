"""Hostile HTTP/1.1 after the request head, against a real gateway process: what it costs.

Run: ``python -m bench.hostile_callers [--mib N] [--gets N]``

A `Stack` (fast upstream, gateway, one agent, all subprocesses) is started. Small GETs through
the gateway are timed alone (the unloaded p99); then each attack runs over a raw TLS connection
while the same GETs run beside it:

* ``endless-trailer``: a chunked POST whose trailer section never ends;
* ``refused-trailer``: the same, for a plane that does not exist (refused before any agent);
* ``endless-extension``: a chunked POST whose chunk extension never ends;
* ``refused-body``: a POST for a plane that does not exist, with a chunked body without end;
* ``header-flood``: a GET with 10,000 tiny header fields.

Per attack: the answer's status and seconds until it came, seconds until the gateway closed
the connection (after a refusal it reads and drops for at most 1 s, so that its answer is not
destroyed by a reset), MiB the attacker got to send, the gateway's peak RSS growth over its
RSS before the attack (sampled from /proc every 20 ms), and the p99 of the GETs during the
attack against the unloaded one.
The bars (issue #10): growth <= 16 MiB, the attacker dropped within its deadline, the p99
within 2x. Output: a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import aiohttp

from bench.processes import FAST, Stack, rss_bytes

MIB = 1024 * 1024
GET_PATH = "/api/v1/namespaces/bench/configmaps/small"


@dataclass
class Outcome:
    attack: str
    status: int | None
    answered_after_s: float | None
    closed_after_s: float | None
    sent_mib: float
    rss_growth_mib: float
    p99_ms: float
    p99_unloaded_ms: float


def _attacks() -> dict[str, tuple[str, bytes, bytes]]:
    """Name: (target under the plane's URL or absolute, head and first bytes, endless piece)."""
    chunked = "POST {target} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    flood = b"".join(b"a%d:b\r\n" % i for i in range(10_000))
    return {
        "endless-trailer": (
            "plane:/api/v1/namespaces/bench/configmaps",
            chunked.encode() + b"3\r\nabc\r\n0\r\n",
            b"a:b\r\n" * 800,  # tiny fields: each costs far more to keep than its 5 bytes
        ),
        "refused-trailer": (
            "/planes/bench/nowhere/k8s/api/v1/namespaces/default/configmaps",
            chunked.encode() + b"3\r\nabc\r\n0\r\n",
            b"a:b\r\n" * 800,  # tiny fields: each costs far more to keep than its 5 bytes
        ),
        "endless-extension": (
            "plane:/api/v1/namespaces/bench/configmaps",
            chunked.encode() + b"3;",
            b"e" * 4096,
        ),
        "refused-body": (
            "/planes/bench/nowhere/k8s/api/v1/namespaces/default/configmaps",
            chunked.encode(),
            b"10000\r\n" + b"x" * 0x10000 + b"\r\n",
        ),
        "header-flood": (
            "plane:/api/v1/namespaces",
            b"GET {target} HTTP/1.1\r\nHost: gw\r\n" + flood + b"\r\n",
            b"",
        ),
    }


async def _gets(base: str, context: ssl.SSLContext, count: int) -> list[float]:
    latencies = []
    connector = aiohttp.TCPConnector(ssl=context, limit=4)
    async with aiohttp.ClientSession(connector=connector) as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.get(base + GET_PATH) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
    return latencies


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class _PeakRss:
    """The peak of a process's RSS above what it was when this was made."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = rss_bytes(pid)

    @property
    def growth(self) -> int:
        return self.peak - self.before

    async def sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(0.02)


async def _attack(
    name: str,
    stack: Stack,
    context: ssl.SSLContext,
    *,
    budget_mib: int,
    gets: int,
    unloaded: float,
    wait: float,
) -> Outcome:
    target, first, piece = _attacks()[name]
    base = stack.through[FAST].base
    path = urlsplit(base).path + target[len("plane:") :] if target.startswith("plane:") else target
    url = urlsplit(base)
    reader, writer = await asyncio.open_connection(
        url.hostname, url.port, ssl=context, server_hostname="localhost"
    )
    rss = _PeakRss(stack.pid("gateway"))
    sent = 0
    started = time.monotonic()
    closed_at: float | None = None
    answered_at: float | None = None
    status: int | None = None

    async def send() -> None:
        nonlocal sent
        writer.write(first.replace(b"{target}", path.encode()))
        with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
            await writer.drain()
            while piece and sent < budget_mib * MIB and not writer.transport.is_closing():
                writer.write(piece)
                sent += len(piece)
                await writer.drain()
                await asyncio.sleep(0)  # drain() does not yield below the high-water mark

    async def receive() -> None:
        nonlocal status, closed_at, answered_at
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            line = await reader.readuntil(b"\r\n")
            answered_at = time.monotonic()
            status = int(line.split(b" ")[1])
            while await reader.read(65536):
                pass
        closed_at = time.monotonic()

    sampling = asyncio.create_task(rss.sample())
    sending = asyncio.create_task(send())
    loaded = asyncio.create_task(_gets(base, stack.through[FAST].ssl, gets))
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await receive()
        latencies = await loaded
    finally:
        for task in (sampling, sending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer.transport.abort()
    return Outcome(
        attack=name,
        status=status,
        answered_after_s=None if answered_at is None else round(answered_at - started, 3),
        closed_after_s=None if closed_at is None else round(closed_at - started, 3),
        sent_mib=round(sent / MIB, 2),
        rss_growth_mib=round(rss.growth / MIB, 2),
        p99_ms=round(_p99(latencies), 2),
        p99_unloaded_ms=round(unloaded, 2),
    )


async def run(*, budget_mib: int, gets: int, wait: float) -> list[Outcome]:
    async with Stack() as stack:
        context = stack.through[FAST].ssl
        base = stack.through[FAST].base
        await _gets(base, context, 50)  # warm up connections and caches
        unloaded = _p99(await _gets(base, context, gets))
        return [
            await _attack(
                name, stack, context, budget_mib=budget_mib, gets=gets, unloaded=unloaded, wait=wait
            )
            for name in _attacks()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB an attacker sends at most (64)")
    parser.add_argument("--gets", type=int, default=300, help="small GETs per measurement (300)")
    parser.add_argument(
        "--wait", type=float, default=70, help="seconds to wait for the gateway's answer (70)"
    )
    args = parser.parse_args(argv)
    outcomes = asyncio.run(run(budget_mib=args.mib, gets=args.gets, wait=args.wait))
    print(
        f"{'attack':<18} {'status':>6} {'answered s':>10} {'closed s':>9} {'sent MiB':>9} "
        f"{'RSS +MiB':>9} p99 ms"
    )
    for o in outcomes:
        print(
            f"{o.attack:<18} {o.status!s:>6} {o.answered_after_s!s:>10} {o.closed_after_s!s:>9} "
            f"{o.sent_mib:>9} "
            f"{o.rss_growth_mib:>9} {o.p99_ms} (unloaded {o.p99_unloaded_ms})"
        )
    print(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
