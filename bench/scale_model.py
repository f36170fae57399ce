"""What the scale-out design costs at a size this machine cannot run: a model, not a benchmark.

`python -m bench.scale_model [--planes 10000] [--replicas 5] [--workers 1] [--agents-per-plane 1]`

Every agent holds one tunnel to every live replica (a replica is one worker process), and every
replica advertises in its Lease which planes it holds, with the ids of the agents at the other
end; every replica watches every other replica's Lease. From that follow the connections, the
memory, the heartbeat CPU and the Lease traffic below. The per-unit costs are inputs, measured by
`bench e2e --workload agents` / `--workload replicas` on the 2-core development VM (defaults:
the figures in bench/README.md); the Lease sizes are computed by encoding a realistic annotation
(`<team>/<plane>` names and pod-name agent ids) as the gateway encodes it.

The model's verdict names the first limit the size crosses, against:
- the API server's cap on one object's annotations (256 KiB, `metadata.annotations` validation),
- the memory and CPU budget of one replica (inputs),
- the rate at which one replica takes new TLS tunnels (measured connect-storm rate).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.reconciler.settings import CoordinationSettings

ANNOTATIONS_LIMIT = 256 * 1024
"""kube-apiserver refuses an object whose annotations add up to more (TotalAnnotationSizeLimitB)."""
ADVERTISED_BUDGET = CoordinationSettings.max_agents_annotation_bytes
"""What a replica puts in its agents annotation at most (the rest is left out, logged, counted)."""

Encoder = Callable[[Mapping[str, list[str]]], str]
"""Planes held (`<ns>/<name>` → agent ids) → the Lease annotation's value."""


def json_encoder(planes: Mapping[str, list[str]]) -> str:
    """Compact JSON with sorted keys: what `gateway.reconciler.presence.advertise_agents`
    writes when nothing is capped (a test keeps the two equal)."""
    return json.dumps(dict(planes), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Inputs:
    planes: int = 10_000
    replicas: int = 5
    workers: int = 1
    agents_per_plane: int = 1
    rss_per_tunnel_kib: float = 91.7
    """Gateway RSS per idle agent tunnel (bench `agents`, 2,000 agents)."""
    cpu_per_tunnel: float = 0.028 / 2000
    """Share of one core an idle tunnel costs at a 10 s heartbeat (bench `agents`)."""
    connect_rate: float = 307.0
    """New agent tunnels one replica takes per second (bench `agents`, connect storm)."""
    renew_interval: float = 5.0
    publish_min_interval: float = 0.5
    agent_changes_per_second: float = 0.0
    """Agents (re)connecting per second across the fleet; 0 = 1 % of agents per minute."""
    replica_memory_budget_mib: float = 2048.0
    """Memory one replica process (one worker) may use: each holds a tunnel from every agent."""


@dataclass(frozen=True)
class Figures:
    replica_processes: int
    tunnels_total: int
    tunnels_per_replica: int
    rss_per_replica_mib: float
    heartbeat_cores_per_replica: float
    annotation_bytes: int
    lease_writes_per_second: float
    watch_bytes_per_second_per_replica: float
    new_replica_converges_seconds: float
    max_planes_by_annotation: int
    max_planes_by_memory: int
    verdict: str


def realistic_planes(count: int, agents_per_plane: int) -> dict[str, list[str]]:
    """`count` planes spread over teams, each with its agents' pod names (as a Deployment names
    them: `<name>-agent-<replicaset hash>-<pod hash>`)."""
    planes: dict[str, list[str]] = {}
    for index in range(count):
        team, name = f"team-{index // 20:04d}", f"dp-{index:05d}-prod"
        planes[f"{team}/{name}"] = [
            f"planelink-agent-{(index * 7919 + a) % 10**10:010x}-{(index * 104729 + a) % 10**5:05x}"
            for a in range(agents_per_plane)
        ]
    return planes


def model(inputs: Inputs, encode: Encoder = json_encoder) -> Figures:
    replicas = inputs.replicas * inputs.workers
    agents = inputs.planes * inputs.agents_per_plane
    annotation = len(encode(realistic_planes(inputs.planes, inputs.agents_per_plane)).encode())
    per_plane = annotation / max(1, inputs.planes)
    changes = inputs.agent_changes_per_second or agents * 0.01 / 60
    # Each replica writes its Lease on every renewal, and on agent changes at most every
    # publish_min_interval; an agent change touches every replica (it holds a tunnel to each).
    writes_each = 1 / inputs.renew_interval + min(changes, 1 / inputs.publish_min_interval)
    writes = replicas * writes_each
    # Every Lease write reaches every other replica's watch, whole.
    watch_bytes = (replicas - 1) * writes_each * min(annotation, ADVERTISED_BUDGET)
    rss = agents * inputs.rss_per_tunnel_kib / 1024
    max_by_annotation = int(ADVERTISED_BUDGET / per_plane)
    max_by_memory = int(
        inputs.replica_memory_budget_mib
        * 1024
        / inputs.rss_per_tunnel_kib
        / inputs.agents_per_plane
    )
    limits = sorted(
        [
            (
                max_by_annotation,
                f"a replica's Lease annotation ({ADVERTISED_BUDGET:,} B budget, "
                f"{ANNOTATIONS_LIMIT // 1024} KiB API limit): planes beyond are not advertised",
            ),
            (max_by_memory, f"replica memory ({inputs.replica_memory_budget_mib:.0f} MiB)"),
        ]
    )
    first_at, first = limits[0]
    verdict = (
        f"breaks first at ~{first_at:,} planes: {first}"
        if first_at < inputs.planes
        else f"within every limit; the first is {first} at ~{first_at:,} planes"
    )
    return Figures(
        replica_processes=replicas,
        tunnels_total=agents * replicas,
        tunnels_per_replica=agents,
        rss_per_replica_mib=round(rss, 1),
        heartbeat_cores_per_replica=round(agents * inputs.cpu_per_tunnel, 3),
        annotation_bytes=annotation,
        lease_writes_per_second=round(writes, 2),
        watch_bytes_per_second_per_replica=round(watch_bytes),
        new_replica_converges_seconds=round(agents / inputs.connect_rate, 1),
        max_planes_by_annotation=max_by_annotation,
        max_planes_by_memory=max_by_memory,
        verdict=verdict,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_model", description=__doc__)
    parser.add_argument("--planes", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--agents-per-plane", type=int, default=1)
    parser.add_argument("--rss-per-tunnel-kib", type=float, default=Inputs.rss_per_tunnel_kib)
    parser.add_argument("--connect-rate", type=float, default=Inputs.connect_rate)
    args = parser.parse_args(argv)
    inputs = Inputs(
        planes=args.planes,
        replicas=args.replicas,
        workers=args.workers,
        agents_per_plane=args.agents_per_plane,
        rss_per_tunnel_kib=args.rss_per_tunnel_kib,
        connect_rate=args.connect_rate,
    )
    figures = model(inputs)
    for key, value in vars(figures).items():
        print(f"{key:40} {value:,}" if isinstance(value, int | float) else f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
