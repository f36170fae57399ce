"""`python -m bench …`: the planelink benchmarks.

* ``python -m bench e2e [--quick] [--workload NAME ...] [--json FILE] [--uvloop]``: gateway,
  agents and upstreams in subprocesses on loopback; every workload through the tunnel and
  directly, with ratios and targets (see bench/README.md); ``latency-h2``, ``throughput-h2``
  and ``watches-h2`` are HTTP/2 on both outer hops, put beside their HTTP/1.1 workload when
  it ran before them; ``latency-go`` and ``throughput-go`` drive the tunnel with Go's net/http
  (``bench/goclient``); ``resting`` measures resting memory and start-up in a stack of its own;
* ``python -m bench protocol [--quick]``: the protocol core alone (``bench.protocol_bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import goclient
from bench.agents import agents_stack
from bench.processes import MAX_STREAMS, WATCHES_GATEWAY_ARGS, Stack, raise_nofile_for
from bench.replicas import replicas
from bench.report import WorkloadResult, machine, table
from bench.upstream_h2 import DEFAULT_MAX_STREAMS
from bench.workloads import HTTP2_VARIANTS, WORKLOADS, Scale, run_workload
from bench.workloads_h2 import compare

DEFAULT = [
    *("latency", "latency-h2", "latency-go", "throughput", "throughput-h2", "throughput-go"),
    *("bulk", "fairness"),
    *("watches", "watches-h2", "churn", "resting", "kube", "agents", "replicas"),
]
GO_WORKLOADS = {"latency-go", "throughput-go"}
OWN_STACK = {"resting", "kube", "agents", "replicas"}
"""Workloads that start processes of their own (`replicas` several stacks, one per part)."""
KNOWN = [*WORKLOADS, "replicas"]
OWN_STACK_FACTORIES: dict[str, tuple[str, Callable[[bool], Stack]]] = {
    "resting": ("a stack of its own", lambda _quick: Stack()),
    "kube": ("real kube-apiserver, a stack of its own", lambda _quick: Stack(kube=True)),
    "agents": ("many agents, a stack of its own", agents_stack),
}
"""The workloads run after the shared stack's, each in the stack made here (`quick` given)."""


async def run_e2e(
    names: list[str],
    *,
    quick: bool,
    upstream_h2_max_streams: int = DEFAULT_MAX_STREAMS,
    watches: int | None = None,
) -> list[WorkloadResult]:
    scale = Scale.of(quick)
    if watches is not None:
        scale = dataclasses.replace(scale, watches=watches)
    results: list[WorkloadResult] = []
    fast = [name for name in names if name not in OWN_STACK]
    if GO_WORKLOADS & set(fast):
        try:  # before any stack and outside every workload's bound: a first build takes minutes
            await asyncio.to_thread(goclient.binary)
        except goclient.GoClientError as error:
            print(f"the Go client: {error}", file=sys.stderr)  # its workloads fail and say so
    if fast:
        http2 = any(name in HTTP2_VARIANTS for name in fast)
        admission: tuple[str, ...] = ()
        if {"watches", "watches-h2"} & set(fast):
            admission = WATCHES_GATEWAY_ARGS
            raise_nofile_for(MAX_STREAMS)
        async with Stack(
            http2=http2, upstream_h2_max_streams=upstream_h2_max_streams, gateway_args=admission
        ) as stack:
            by_name: dict[str, WorkloadResult] = {}
            for name in fast:
                print(f"==> {name}", file=sys.stderr, flush=True)
                result = by_name[name] = await run_workload(name, stack, scale)
                results.append(result)
                http1 = by_name.get(HTTP2_VARIANTS.get(name, ""))
                if http1 is not None:
                    compare(http1, result)
    for name, (describe, make_stack) in OWN_STACK_FACTORIES.items():
        if name in names:
            print(f"==> {name} ({describe})", file=sys.stderr, flush=True)
            try:
                async with make_stack(quick) as stack:
                    results.append(await run_workload(name, stack, scale))
            except Exception as error:
                results.append(
                    WorkloadResult(name, describe, error=f"{type(error).__name__}: {error}")
                )
    if "replicas" in names:
        print("==> replicas (stacks of their own)", file=sys.stderr, flush=True)
        results.append(await replicas(scale))  # reports a failing part, never raises
    return results


def e2e(args: argparse.Namespace) -> int:
    names = args.workload or DEFAULT
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        print(f"unknown workload(s): {', '.join(unknown)}; known: {', '.join(KNOWN)}")
        return 2
    info: dict[str, Any] = machine() | {"mode": "quick" if args.quick else "full"}
    loops = ["asyncio"]
    if args.uvloop:
        if importlib.util.find_spec("uvloop") is None:
            print("uvloop is not installed: running with asyncio only", file=sys.stderr)
        else:
            loops.append("uvloop")
    info["upstreamH2MaxStreams"] = args.upstream_h2_max_streams
    options: dict[str, Any] = {
        "quick": args.quick,
        "upstream_h2_max_streams": args.upstream_h2_max_streams,
        "watches": args.watches,
    }
    document: dict[str, Any] = {"machine": info, "runs": []}
    started = time.perf_counter()
    for loop in loops:
        if loop == "uvloop":
            import uvloop  # type: ignore[import-not-found]  # noqa: PLC0415 - optional

            results = uvloop.run(run_e2e(names, **options))
        else:
            results = asyncio.run(run_e2e(names, **options))
        print(f"\n[client event loop: {loop}]")
        print(table(results, info))
        document["runs"].append(
            {"clientLoop": loop, "workloads": [result.as_dict() for result in results]}
        )
    info["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(document, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    failed = any(w["error"] for run in document["runs"] for w in run["workloads"])
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    e2e_parser = commands.add_parser("e2e", help="gateway + agent end to end, through vs direct")
    e2e_parser.add_argument("--quick", action="store_true", help="small counts (CI: < 90 s)")
    e2e_parser.add_argument(
        "--workload", action="append", metavar="NAME", help=f"one of {', '.join(KNOWN)}"
    )
    e2e_parser.add_argument("--json", metavar="FILE", help="write the JSON document here")
    e2e_parser.add_argument("--uvloop", action="store_true", help="also run with uvloop")
    e2e_parser.add_argument(
        "--watches",
        type=int,
        metavar="N",
        help="watches of `watches` and `watches-h2` (instead of 200 quick, 10,000 full)",
    )
    e2e_parser.add_argument(
        "--upstream-h2-max-streams",
        type=int,
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help="streams the fast upstream allows per HTTP/2 connection (as kube-apiserver's "
        f"--http2-max-streams-per-connection; default {DEFAULT_MAX_STREAMS}, what v1.32 "
        "advertises when it is unset)",
    )
    e2e_parser.set_defaults(run=e2e)
    protocol = commands.add_parser("protocol", help="the protocol core alone")
    protocol.add_argument("rest", nargs=argparse.REMAINDER)
    protocol.set_defaults(run=lambda args: _protocol(args.rest))
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def _protocol(rest: list[str]) -> int:
    from bench import protocol_bench  # noqa: PLC0415 - only when asked for

    return protocol_bench.main(rest)


if __name__ == "__main__":
    sys.exit(main())
