"""Bulk and fairness, A/B: this tree's gateway and agent beside another tree's, in one run.

```
.venv/bin/python -m bench.bulk_ab --base /tmp/base-tree            # 5 rounds, 256 MiB, 3 s
.venv/bin/python -m bench.bulk_ab --base /tmp/base-tree --rounds 3 --mib 128 --fairness 2
```

Two stacks run at once (upstream, gateway, agent each; `bench.processes.Stack`): "base" runs the
gateway and agent from the tree `--base` names (put first on PYTHONPATH), "this" from the
working tree. Rounds alternate their order; each round measures, for each stack and once
directly: one bulk response (MB/s and the CPU time of gateway, agent, upstream and this
client per MiB, from /proc/<pid>/stat and getrusage), then small GETs at concurrency 8 beside
an endless bulk stream (p50/p99, and the bulk stream's rate meanwhile). Medians over rounds are
printed, and every sample as JSON with `--json`. Speed is compared only within one run: the
machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from bench.client import cancel, closed_loop, read_stream, session
from bench.processes import FAST, Stack, Target

SMALL = "/api/v1/namespaces/bench/configmaps/small"
MIB = 1 << 20
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Variant:
    """A stack whose gateway and agent run the code of `tree` (None: this tree), with `env`
    added to their environment."""

    def __init__(self, name: str, tree: Path | None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.tree = tree
        self.env = dict(env or {})
        self.stack = Stack()

    @classmethod
    def parse(cls, text: str) -> Variant:
        """NAME[=TREE][:KEY=VALUE,...]"""
        head, _, settings = text.partition(":")
        name, _, tree = head.partition("=")
        env = dict(item.split("=", 1) for item in settings.split(",") if item)
        return cls(name, Path(tree) if tree else None, env)

    async def start(self) -> None:
        added = dict(self.env)
        if self.tree is not None:
            added["PYTHONPATH"] = str(self.tree)
        saved = {key: os.environ.get(key) for key in added}
        os.environ.update(added)
        try:
            await self.stack.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def pids(self) -> dict[str, int]:
        return {
            "gateway": self.stack.pid("gateway"),
            "agent": self.stack.pid("agent-fast"),
            "upstream": self.stack.pid("upstream"),
        }


async def bulk_once(target: Target, pids: dict[str, int], size: int) -> dict[str, float]:
    async with session(target, 1) as http:
        await read_stream(http, f"{target.base}/bytes/{MIB}")
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before = own_cpu()
        received, seconds = await read_stream(http, f"{target.base}/bytes/{size}")
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_cpu = own_cpu() - client_before
    if received != size:
        raise RuntimeError(f"received {received} of {size} bytes")
    mib = size / MIB
    figures = {"MB/s": size / seconds / 1e6}
    for name in pids:
        figures[f"{name} ms/MiB"] = (after[name] - before[name]) * 1000 / mib
    figures["client ms/MiB"] = client_cpu * 1000 / mib
    return figures


async def fairness_once(target: Target, seconds: float) -> dict[str, float]:
    async with session(target, 1) as bulk_http, session(target, 8) as http:
        await closed_loop(target, SMALL, concurrency=8, requests=64, client=http)
        counter = [0]

        async def drain(client: aiohttp.ClientSession = bulk_http) -> None:
            async with client.get(f"{target.base}/bytes/{1 << 40}?watch=true") as response:
                while chunk := await response.content.readany():
                    counter[0] += len(chunk)

        task = asyncio.create_task(drain())
        await asyncio.sleep(0.3)
        before, started = counter[0], time.perf_counter()
        samples, _ = await closed_loop(target, SMALL, concurrency=8, duration=seconds, client=http)
        rate = (counter[0] - before) / (time.perf_counter() - started) / 1e6
        await cancel(task)
    return {
        "fair p50 ms": samples.ms(50),
        "fair p99 ms": samples.ms(99),
        "fair req/s": len(samples.samples) / seconds,
        "fair bulk MB/s": rate,
    }


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    variants = [Variant.parse(text) for text in args.variant] or [
        Variant("base", args.base),
        Variant("this", None),
    ]
    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    samples["direct"] = []
    try:
        for variant in variants:
            await variant.start()
        direct_pids = {"upstream": variants[0].stack.pid("upstream")}
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            order = variants[shift:] + variants[:shift]
            for variant in order:
                figures = await bulk_once(
                    variant.stack.through[FAST], variant.pids(), args.mib * MIB
                )
                if args.fairness > 0:
                    figures |= await fairness_once(variant.stack.through[FAST], args.fairness)
                samples[variant.name].append(figures)
                print(round_, variant.name, _short(figures), file=sys.stderr, flush=True)
            direct = variants[0].stack.direct[FAST]
            figures = await bulk_once(direct, direct_pids, args.mib * MIB)
            if args.fairness > 0:
                figures |= await fairness_once(direct, args.fairness)
            samples["direct"].append(figures)
            print(round_, "direct", _short(figures), file=sys.stderr, flush=True)
    finally:
        for variant in variants:
            with contextlib.suppress(Exception):
                variant.stack.close()
    return samples


def _short(figures: dict[str, float]) -> str:
    return " ".join(f"{key}={value:.1f}" for key, value in figures.items())


def report(samples: dict[str, list[dict[str, float]]]) -> None:
    keys = list(next(iter(samples.values()))[0])
    print(f"{'median over rounds':<22}" + "".join(f"{name:>12}" for name in samples))
    for key in keys:
        cells = []
        for rows in samples.values():
            values = [row[key] for row in rows if key in row]
            cells.append(f"{statistics.median(values):>12.1f}" if values else f"{'-':>12}")
        print(f"{key:<22}" + "".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the tree to compare against")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME[=TREE][:KEY=VALUE,...] (repeat; instead of --base): a stack of TREE's code "
        "(default: this tree) with KEY=VALUE in its processes' environment",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=256, help="size of the bulk response")
    parser.add_argument("--fairness", type=float, default=3.0, help="seconds; 0: skip")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    samples = asyncio.run(run(args))
    report(samples)
    if args.json is not None:
        args.json.write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
