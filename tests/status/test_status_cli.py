"""`planelink status` as an operator runs it: a real process against a real gateway."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

import certs
from gateway.app import Gateway
from gateway.interfaces import Replica
from kubeobject.duration import format_duration
from planelink.status_cli import (
    COLUMNS,
    NO_AGENT,
    plane_row,
    render_table,
    replicas_line,
)
from tests.kit.gateway_lab import AgentFactory, Pki
from tests.status.conftest import StatusRunner

PLANE_A = certs.plane_ref("ns-a", "plane-a")
PLANE_B = certs.plane_ref("ns-b", "plane-b")
PLANE_C = certs.plane_ref("ns-c", "plane-c")


def _rows(table: str) -> dict[str, list[str]]:
    """The table's rows by plane, split on the column gaps (two spaces or more)."""
    lines = table.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == list(COLUMNS)
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[1:])}


async def test_table_lists_every_plane_with_its_agents(
    operator_url: str, connect_agent: AgentFactory, pki: Pki, planelink_status: StatusRunner
) -> None:
    soon = certs.issue_agent(
        pki.agent_cas[PLANE_A],
        plane=PLANE_A,
        not_before=datetime.now(UTC) - timedelta(hours=1),
        validity=timedelta(days=10, hours=12),
    )
    async with connect_agent(PLANE_A), connect_agent(PLANE_A, bundle=soon), connect_agent(PLANE_B):
        ran = await planelink_status("--gateway", operator_url)
    assert ran.returncode == 0, ran.stderr
    rows = _rows(ran.stdout)
    assert list(rows) == ["ns-a/plane-a", "ns-b/plane-b", "ns-c/plane-c"]
    _, mode, agents, replicas, since, rtt, streams, expiry, error = rows["ns-a/plane-a"]
    assert (mode, agents, replicas, streams, error) == ("agent", "2", "all 1", "0", "-")
    assert re.fullmatch(r"\d+s", since)
    assert re.fullmatch(r"\d+\.\dms|-", rtt)
    assert expiry == "10d"  # the soonest of the two certificates
    assert rows["ns-b/plane-b"][1:3] == ["agent", "1"]
    assert rows["ns-c/plane-c"] == ["ns-c/plane-c", "agent", "0", *"-----", NO_AGENT]
    # aligned: every column starts at the same offset on every line
    lines = ran.stdout.splitlines()
    for column in COLUMNS[1:]:
        start = lines[0].index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines)


async def test_json_output_is_the_gateways_answer(
    operator_url: str, connect_agent: AgentFactory, planelink_status: StatusRunner
) -> None:
    async with connect_agent(PLANE_B):
        ran = await planelink_status("-o", "json", "--gateway", operator_url)
    assert ran.returncode == 0, ran.stderr
    planes = {f"{p['namespace']}/{p['name']}": p for p in json.loads(ran.stdout)["planes"]}
    assert {name: p["connectedAgents"] for name, p in planes.items()} == {
        "ns-a/plane-a": 0,
        "ns-b/plane-b": 1,
        "ns-c/plane-c": 0,
    }
    assert planes["ns-b/plane-b"]["agents"][0]["agentId"].startswith("fake-")


async def test_fail_on_disconnected_exit_codes(
    operator_url: str, connect_agent: AgentFactory, planelink_status: StatusRunner
) -> None:
    async with connect_agent(PLANE_A), connect_agent(PLANE_B):
        missing_one = await planelink_status("--gateway", operator_url, "--fail-on-disconnected")
        without_flag = await planelink_status("--gateway", operator_url)
        as_json = await planelink_status(
            "--gateway", operator_url, "-o", "json", "--fail-on-disconnected"
        )
        async with connect_agent(PLANE_C):
            all_connected = await planelink_status(
                "--gateway", operator_url, "--fail-on-disconnected"
            )
    assert missing_one.returncode == 1
    assert NO_AGENT in _rows(missing_one.stdout)["ns-c/plane-c"]  # still prints the table
    assert without_flag.returncode == 0
    assert as_json.returncode == 1
    assert all_connected.returncode == 0, all_connected.stdout


async def test_gateway_url_from_the_environment(
    operator_url: str, planelink_status: StatusRunner
) -> None:
    ran = await planelink_status(env={"PLANELINK_GATEWAY_OPERATOR_URL": operator_url + "/"})
    assert ran.returncode == 0, ran.stderr
    assert "ns-a/plane-a" in ran.stdout


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening) while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_unreachable_gateway_is_one_line_and_exit_2(
    closed_port: int, planelink_status: StatusRunner
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    ran = await planelink_status("--gateway", url)
    assert ran.returncode == 2
    assert ran.stdout == ""
    assert ran.stderr.count("\n") == 1
    assert ran.stderr.startswith(f"planelink status: cannot reach the gateway at {url}/planes: ")
    assert "refused" in ran.stderr.lower()


async def test_not_the_operator_endpoint_is_exit_2(
    operator_url: str, planelink_status: StatusRunner
) -> None:
    ran = await planelink_status("--gateway", operator_url + "/nowhere")
    assert ran.returncode == 2
    assert ran.stderr == (
        f"planelink status: the gateway at {operator_url}/nowhere/planes answered HTTP 404\n"
    )


async def test_help_explains_columns_and_exit_codes(planelink_status: StatusRunner) -> None:
    ran = await planelink_status("--help")
    assert ran.returncode == 0
    assert ran.stdout.startswith("usage: planelink status")
    for text in (*COLUMNS, "PLANELINK_GATEWAY_OPERATOR_URL", "--fail-on-disconnected", "exit"):
        assert text in ran.stdout


def test_row_with_issues_expired_certificate_and_slowest_rtt() -> None:
    now = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    plane = {
        "namespace": "org",
        "name": "prod",
        "mode": "direct",
        "issues": ["the client CA Secret is missing"],
        "connectedAgents": 2,
        "agents": [
            {
                "connectedAt": "2025-01-08T09:30:00Z",
                "rttSeconds": 0.0021,
                "openStreams": 3,
                "certificate": {"notAfter": "2025-01-10T11:00:00+00:00"},
            },
            {
                "connectedAt": "2025-01-10T11:55:30Z",
                "rttSeconds": None,
                "openStreams": 4,
                "certificate": {"notAfter": "2026-01-10T11:00:00+00:00"},
            },
        ],
    }
    assert plane_row(plane, now=now) == (
        "org/prod",
        "direct",
        "2",
        "-",
        "2d2h",
        "2.1ms",
        "7",
        "expired",
        "the client CA Secret is missing",
    )
    assert render_table([], now=now).split() == [w for c in COLUMNS for w in c.split()]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (61, "1m1s"), (3600 * 5 + 120, "5h2m"), (86400 * 3 + 7200, "3d2h")],
)
def test_durations_read_like_kubectl_age(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_replicas_column_says_converged_or_which_replicas_each_agent_holds() -> None:
    now = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    live = ["gw-0", "gw-1", "gw-2"]
    converged = {
        "namespace": "org",
        "name": "a",
        "connectedAgents": 2,
        "agentReplicas": [
            {"agentId": "agent-1", "replicas": live},
            {"agentId": "agent-2", "replicas": live},
        ],
    }
    converging = {
        "namespace": "org",
        "name": "b",
        "connectedAgents": 2,
        "agentReplicas": [
            {"agentId": "agent-1", "replicas": live},
            {"agentId": "agent-2", "replicas": ["gw-0"]},
        ],
    }
    assert plane_row(converged, now=now, replicas=live)[3] == "all 3"
    assert plane_row(converging, now=now, replicas=live)[3] == (
        "agent-1: gw-0,gw-1,gw-2; agent-2: gw-0"
    )
    assert plane_row({"namespace": "org", "name": "c"}, now=now, replicas=live)[3] == "-"
    report = {"replica": "gw-1", "replicas": live, "planes": [converged, converging]}
    assert replicas_line(report) == "live replicas (3): gw-0, gw-1, gw-2; answered by gw-1"


async def test_operator_answers_name_the_replica_and_each_agents_replicas(
    operator_url: str, connect_agent: AgentFactory, planelink_status: StatusRunner
) -> None:
    async with connect_agent(PLANE_B):
        ran = await planelink_status("--gateway", operator_url, "-o", "json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    (replica,) = report["replicas"]
    assert report["replica"] == replica
    planes = {f"{p['namespace']}/{p['name']}": p for p in report["planes"]}
    (held,) = planes["ns-b/plane-b"]["agentReplicas"]
    assert held["replicas"] == [replica]
    assert held["agentId"] == planes["ns-b/plane-b"]["agents"][0]["agentId"]
    assert planes["ns-c/plane-c"]["agentReplicas"] == []


async def test_with_a_peer_agents_count_once_and_the_replicas_are_named(
    gateway: Gateway,
    operator_url: str,
    connect_agent: AgentFactory,
    planelink_status: StatusRunner,
) -> None:
    async with connect_agent(PLANE_A):
        (local,) = gateway.agents.agents(PLANE_A)
        # A peer holds the same agent's other tunnel, and a tunnel of an agent of plane B.
        gateway.peers.replace_peers(
            [
                Replica(
                    id="zz-peer",
                    peer_url="https://127.0.0.1:1",
                    planes={PLANE_A: frozenset({local.agent_id}), PLANE_B: frozenset({"far"})},
                )
            ]
        )
        ran = await planelink_status("--gateway", operator_url)
    assert ran.returncode == 0, ran.stderr
    table, last = ran.stdout.rstrip("\n").split("\n\n")
    rows = _rows(table)
    assert rows["ns-a/plane-a"][2:4] == ["1", "all 2"]  # two tunnels, one agent
    assert rows["ns-b/plane-b"][2:4] == ["1", "far: zz-peer"]
    assert rows["ns-b/plane-b"][-1] == "-"  # reachable through the peer: not "no agent"
    assert rows["ns-c/plane-c"][2:4] == ["0", "-"]
    live = ", ".join(sorted([gateway.replica_id, "zz-peer"]))
    assert last == f"live replicas (2): {live}; answered by {gateway.replica_id}"
