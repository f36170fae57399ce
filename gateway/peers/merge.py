"""The whole gateway's operator documents, merged from each worker's own.

A gateway with `--workers N` is N replicas on one host; an operator reading /planes or /metrics
from whichever worker the kernel hands the connection to must see all of them. These functions
are pure: documents in (by replica id), one document out. Fetching them is
`gateway.peers.siblings`'s.

- /planes: a plane appears once, with every worker's tunnels to it in `agents` (each entry
  tagged with the `replica` that holds it) and `connectedAgents` counting distinct agents, not
  tunnels (one agent holds a tunnel to every worker); `workers` says whose documents went in
  and whose did not arrive.
- /metrics: every family once (one HELP and TYPE), each sample labelled `worker="<replica
  id>"`; `planelink_gateway_worker_up{worker}` is 1 for a worker that answered, 0 for one that
  did not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

WORKER_LABEL = "worker"
UP_FAMILY = "planelink_gateway_worker_up"


class MergeError(ValueError):
    """A worker's document is not what an operator endpoint serves."""


def merge_planes(
    reports: Mapping[str, Mapping[str, Any]], *, answering: str, missing: Sequence[str] = ()
) -> dict[str, Any]:
    """One /planes document from each worker's own (`{"planes": [...], ...}`), by replica id;
    what is not per plane (e.g. `replica`, `replicas`) is the `answering` worker's."""
    order = [answering, *sorted(replica for replica in reports if replica != answering)]
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for replica_id in order:
        planes = reports[replica_id].get("planes")
        if not isinstance(planes, list):
            raise MergeError(f"the /planes of {replica_id} has no list of planes")
        for plane in planes:
            if not isinstance(plane, dict):
                raise MergeError(f"the /planes of {replica_id} has a plane that is no object")
            key = (str(plane.get("namespace")), str(plane.get("name")))
            agents = plane.get("agents")
            tagged = [
                {**agent, "replica": replica_id}
                for agent in (agents if isinstance(agents, list) else [])
                if isinstance(agent, dict)
            ]
            count = plane.get("connectedAgents")
            counts.setdefault(key, []).append(count if isinstance(count, int) else 0)
            into = merged.get(key)
            if into is None:
                merged[key] = {**plane, "agents": tagged}
                continue
            into["agents"].extend(tagged)
            issues = into.get("issues")
            if isinstance(issues, list):
                for issue in plane.get("issues") or ():
                    if issue not in issues:
                        issues.append(issue)
    for key, plane in merged.items():
        # A worker that knows its peers' agents (presence) already counts them all; one that
        # does not counts its own: the distinct agents of every worker's tunnels, at least.
        distinct = {agent.get("agentId", id(agent)) for agent in plane["agents"]}
        plane["connectedAgents"] = max(len(distinct), *counts[key])
    document = {
        key: value for key, value in reports[answering].items() if key not in ("planes", "workers")
    }
    document["planes"] = [merged[key] for key in sorted(merged)]
    document["workers"] = {"answered": sorted(reports), "missing": sorted(missing)}
    return document


def merge_metrics(texts: Mapping[str, str], *, missing: Sequence[str] = ()) -> bytes:
    """One Prometheus text exposition from each worker's own, by replica id."""
    families: dict[str, Metric] = {}
    for replica_id in sorted(texts):
        try:
            parsed = list(text_string_to_metric_families(texts[replica_id]))
        except ValueError as error:
            raise MergeError(f"the /metrics of {replica_id} does not parse: {error}") from None
        for family in parsed:
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            elif into.type != family.type:
                continue  # a worker of another version: its samples cannot share the TYPE line
            for sample in family.samples:
                labels = {**sample.labels, WORKER_LABEL: replica_id}
                into.samples.append(sample._replace(labels=labels))
    up = GaugeMetricFamily(
        UP_FAMILY,
        "Whether a worker of this gateway answered when its metrics were gathered",
        labels=[WORKER_LABEL],
    )
    for replica_id in sorted({*texts, *missing}):
        up.add_metric([replica_id], 0.0 if replica_id in missing else 1.0)
    families[UP_FAMILY] = up
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
