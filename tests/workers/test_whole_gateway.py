"""The whole gateway's /planes and /metrics from its workers' own (`gateway.peers.merge`,
`gateway.peers.siblings`), with a fake peer link: merging is pure, gathering has a deadline."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from certs import plane_ref
from gateway.interfaces import Replica
from gateway.peers import PeerDirectory
from gateway.peers.listener import METRICS_PATH, PLANES_PATH
from gateway.peers.merge import MergeError, merge_metrics, merge_planes
from gateway.peers.siblings import Siblings
from tests.kit.waits import wait_for

PLANE = plane_ref("team-a", "prod")


def plane(name: str, *agent_ids: str, issues: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "namespace": "team-a",
        "name": name,
        "mode": "agent",
        "issues": list(issues),
        "connectedAgents": len(agent_ids),
        "agents": [{"agentId": agent, "openStreams": 1} for agent in agent_ids],
    }


def worker_metrics(requests: float) -> str:
    registry = CollectorRegistry()
    Counter("planelink_gateway_requests", "Caller requests", ["plane"], registry=registry).labels(
        plane="team-a/prod"
    ).inc(requests)
    Gauge("planelink_gateway_streams_active", "In flight", registry=registry).set(requests)
    Histogram("planelink_gateway_seconds", "Time", buckets=(1.0,), registry=registry).observe(0.5)
    return generate_latest(registry).decode()


def test_a_plane_held_by_two_workers_is_one_plane_with_every_tunnel() -> None:
    merged = merge_planes(
        {
            "gw-w1": {"planes": [plane("prod", "agent-1", issues=("b",)), plane("dev")]},
            "gw-w0": {
                "replica": "gw-w0",
                "planes": [plane("prod", "agent-1", "agent-2", issues=("a", "b"))],
            },
        },
        answering="gw-w0",
        missing=["gw-w2"],
    )
    assert merged["workers"] == {"answered": ["gw-w0", "gw-w1"], "missing": ["gw-w2"]}
    assert merged["replica"] == "gw-w0", "what is not per plane is the answering worker's"
    assert [entry["name"] for entry in merged["planes"]] == ["dev", "prod"]
    prod = merged["planes"][1]
    assert [(agent["agentId"], agent["replica"]) for agent in prod["agents"]] == [
        ("agent-1", "gw-w0"),
        ("agent-2", "gw-w0"),
        ("agent-1", "gw-w1"),
    ]
    assert prod["connectedAgents"] == 2, "agents, not tunnels"
    assert prod["issues"] == ["a", "b"]
    assert merged["planes"][0]["connectedAgents"] == 0


def test_a_worker_that_counts_its_peers_agents_is_believed() -> None:
    """With presence, a worker counts the agents of every live replica, other pods' included:
    more than the tunnels of this gateway's workers show."""
    counted = plane("prod", "agent-1")
    counted["connectedAgents"] = 3
    merged = merge_planes(
        {"gw-w0": {"planes": [counted]}, "gw-w1": {"planes": [plane("prod", "agent-2")]}},
        answering="gw-w1",
    )
    assert merged["planes"][0]["connectedAgents"] == 3
    assert [agent["replica"] for agent in merged["planes"][0]["agents"]] == ["gw-w1", "gw-w0"]


@pytest.mark.parametrize("report", [{}, {"planes": {}}, {"planes": [1]}])
def test_a_planes_document_of_another_shape_is_refused(report: dict[str, Any]) -> None:
    with pytest.raises(MergeError):
        merge_planes({"gw-w1": report}, answering="gw-w1")


def test_metrics_families_appear_once_with_a_worker_label() -> None:
    text = merge_metrics(
        {"gw-w0": worker_metrics(3), "gw-w1": worker_metrics(4)}, missing=["gw-w2"]
    ).decode()
    assert text.count("# TYPE planelink_gateway_requests_total counter") == 1
    assert text.count("# HELP planelink_gateway_seconds Time") == 1
    samples = {
        (sample.name, sample.labels.get("worker")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("plane") == "team-a/prod"
        or family.name != "planelink_gateway_requests"
    }
    assert samples[("planelink_gateway_requests_total", "gw-w0")] == 3
    assert samples[("planelink_gateway_requests_total", "gw-w1")] == 4
    assert samples[("planelink_gateway_seconds_count", "gw-w1")] == 1
    assert samples[("planelink_gateway_worker_up", "gw-w0")] == 1
    assert samples[("planelink_gateway_worker_up", "gw-w2")] == 0


def test_metrics_that_do_not_parse_are_refused() -> None:
    with pytest.raises(MergeError, match="gw-w1"):
        merge_metrics({"gw-w1": "planelink_gateway_requests_total{ 1\n"})


class Link:
    """A fake peer link: each sibling's answer, or how it fails."""

    def __init__(self, answers: dict[tuple[str, str], bytes | Exception | None]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def fetch(self, replica: Replica, path: str) -> bytes:
        self.asked.append((replica.id, path))
        answer = self.answers[(replica.id, path)]
        if answer is None:  # never answers
            await asyncio.Event().wait()
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, bytes)
        return answer


def directory(*siblings: str, elsewhere: tuple[str, ...] = ()) -> PeerDirectory:
    peers = PeerDirectory("gw-w0", local_planes=dict, peer_url="https://127.0.0.1:1", host="gw")
    peers.replace_peers(
        [
            Replica(id=name, peer_url=f"https://127.0.0.1:{i}", host="gw")
            for i, name in enumerate(siblings)
        ]
        + [Replica(id=name, peer_url="https://10.0.0.9:8444", host="other") for name in elsewhere]
    )
    return peers


async def test_alone_the_documents_are_this_replicas_own() -> None:
    link = Link({})
    siblings = Siblings(directory(elsewhere=("gw2-w0",)), link.fetch)
    own = {"planes": [plane("prod", "agent-1")]}
    assert await siblings.planes(own) is own
    assert await siblings.metrics(b"x 1\n") == b"x 1\n"
    assert link.asked == [], "replicas of other hosts are not this gateway's workers"


async def test_a_sibling_that_does_not_answer_in_time_is_missing_not_waited_on() -> None:
    link = Link(
        {
            ("gw-w1", PLANES_PATH): json.dumps({"planes": [plane("prod", "agent-2")]}).encode(),
            ("gw-w2", PLANES_PATH): None,
            ("gw-w3", PLANES_PATH): OSError("connection refused"),
            ("gw-w4", PLANES_PATH): b"<html>",
        }
    )
    siblings = Siblings(directory("gw-w1", "gw-w2", "gw-w3", "gw-w4"), link.fetch, deadline=0.2)
    with structlog.testing.capture_logs() as logs:
        merged = await wait_for(siblings.planes({"planes": [plane("prod", "agent-1")]}))
    assert merged["workers"] == {
        "answered": ["gw-w0", "gw-w1"],
        "missing": ["gw-w2", "gw-w3", "gw-w4"],
    }
    assert merged["planes"][0]["connectedAgents"] == 2
    assert sorted(entry["worker"] for entry in logs) == ["gw-w2", "gw-w3", "gw-w4"]


async def test_metrics_of_every_sibling_are_merged() -> None:
    link = Link(
        {
            ("gw-w1", METRICS_PATH): worker_metrics(5).encode(),
            ("gw-w2", METRICS_PATH): b"\xff\xfe",
        }
    )
    siblings = Siblings(directory("gw-w1", "gw-w2"), link.fetch)
    text = (await siblings.metrics(worker_metrics(1).encode())).decode()
    assert 'planelink_gateway_requests_total{plane="team-a/prod",worker="gw-w1"} 5.0' in text
    assert 'planelink_gateway_requests_total{plane="team-a/prod",worker="gw-w0"} 1.0' in text
    assert 'planelink_gateway_worker_up{worker="gw-w2"} 0.0' in text


async def test_gatherings_at_once_are_bounded_and_one_without_room_reports_all_missing() -> None:
    """A flood of operator requests does not become a flood of peer requests."""
    link = Link({("gw-w1", PLANES_PATH): None})
    siblings = Siblings(directory("gw-w1"), link.fetch, deadline=0.2, max_concurrent=1)
    own = {"planes": [plane("prod", "agent-1")]}
    first, second = await wait_for(asyncio.gather(siblings.planes(own), siblings.planes(own)))
    assert len(link.asked) == 1, "the second found no room within the deadline"
    assert first["workers"]["missing"] == second["workers"]["missing"] == ["gw-w1"]
