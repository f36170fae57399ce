"""An agent keeps one tunnel to every live gateway replica, all behind one address.

The replicas are test gateways (`replica_gateways`) behind a TCP round-robin forwarder
(`load_balancer`), whose `plan` says where the next dials land; each replica tells listening
agents the live set, as a real one does from its PeerDirectory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import structlog

from tests.kit.round_robin import RoundRobin
from tests.kit.waits import eventually, wait_for

if TYPE_CHECKING:
    from tests.agent.conftest import (
        GatewayConnection,
        ReplicaGateways,
        RunningAgent,
        StartAgent,
        TestGateway,
        UpstreamPeer,
    )

LoadBalancer = Callable[[list["TestGateway"]], Awaitable["RoundRobin"]]


def _held(running: RunningAgent) -> frozenset[str]:
    return running.agent.tunnels.held_ids()


async def _converged(running: RunningAgent, ids: set[str]) -> None:
    await eventually(
        lambda: _held(running) == ids,
        within=20,
        message=f"the agent never held tunnels to exactly {sorted(ids)}",
    )


async def _live(replica: TestGateway) -> list[GatewayConnection]:
    """The replica's connections that have not ended, once each has the agent's HELLO: the agent
    counts a tunnel as held when the gateway's HELLO arrives, which may be before its own does."""
    live = [c for c in replica.all_connections if not c.ended.is_set()]
    for connection in live:
        await wait_for(connection.session.wait_ready())
    return live


async def test_the_agent_converges_to_a_tunnel_per_replica_and_serves_on_each(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    replicas = await replica_gateways(3)
    balancer = await load_balancer(replicas)
    running = await start_agent(
        gateway_url=balancer.url, kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig")
    )
    await _converged(running, {"replica-0", "replica-1", "replica-2"})
    assert balancer.landed == [0, 1, 2]  # round robin: every dial landed on a new replica
    metrics = running.agent.metrics
    assert metrics.sample("planelink_agent_tunnels") == 3
    assert metrics.sample("planelink_agent_tunnel_up") == 1
    assert metrics.sample("planelink_agent_duplicate_dials_total") == 0
    for replica in replicas:
        [connection] = await _live(replica)
        reply = await connection.request("GET", "/api/v1/namespaces")
        assert reply.status == 200
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{running.health_url}/readyz") as answer,
    ):
        assert answer.status == 200
        assert "3 tunnels up" in await answer.text()


async def test_a_dial_landing_on_a_held_replica_is_closed_and_retried_with_backoff(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    unused_kubeconfig: Path,
) -> None:
    first, second = await replica_gateways(2)
    balancer = await load_balancer([first, second])
    balancer.plan = [0, 0, 0, 1]  # the load balancer sticks to the first replica twice more
    with structlog.testing.capture_logs() as logs:
        running = await start_agent(
            gateway_url=balancer.url,
            kubeconfig=unused_kubeconfig,
            backoff_base=0.02,
            backoff_cap=0.2,
            random=lambda: 0.5,
        )
        await _converged(running, {"replica-0", "replica-1"})
    assert balancer.landed[:4] == [0, 0, 0, 1]
    metrics = running.agent.metrics
    assert metrics.sample("planelink_agent_duplicate_dials_total") == 2
    duplicates = [e for e in logs if e["event"] == "dial landed on a replica already held, closed"]
    # The pause grows while dials land on held replicas: half of 0.02, then of 0.04.
    assert [(e["gateway_id"], e["attempt"], e["retry_in_seconds"]) for e in duplicates] == [
        ("replica-0", 1, 0.01),
        ("replica-0", 2, 0.02),
    ]
    assert running.agent.seeker.backoff.attempt == 0  # it landed on a new one: starts over
    # The duplicates were closed at once, by the agent (GOAWAY: nothing was open on them).
    closed = [c for c in first.all_connections if c.ended.is_set()]
    assert [c.close_reason for c in closed] == ["drained", "drained"]
    assert len(await _live(first)) == len(await _live(second)) == 1


async def test_a_replica_that_left_is_not_dialled_for(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    unused_kubeconfig: Path,
) -> None:
    first, second = await replica_gateways(2)
    balancer = await load_balancer([first, second])
    running = await start_agent(gateway_url=balancer.url, kubeconfig=unused_kubeconfig)
    await _converged(running, {"replica-0", "replica-1"})
    # A rolling restart: the leaving replica stops being advertised (the others say so), then
    # closes its tunnels.
    first.announce(frozenset({"replica-0"}))
    await eventually(
        lambda: _reported(running, "replica-0") == frozenset({"replica-0"}),
        within=10,
        message="the agent never heard that replica-1 left",
    )
    assert running.agent.tunnels.wanted() == {"replica-0", "replica-1"}  # replica-1 says so
    [leaving] = await _live(second)
    leaving.session.close("replica going away")
    await _converged(running, {"replica-0"})
    assert running.agent.tunnels.wanted() == {"replica-0"}
    assert running.agent.tunnels.missing() == frozenset()
    # A round trip through the agent: the seeker had every chance to dial meanwhile.
    [staying] = await _live(first)
    reply = await staying.request("GET", "/version")
    assert reply.status == 502  # no API server behind this agent
    assert balancer.landed == [0, 1]
    assert running.agent.state.up


def _reported(running: RunningAgent, replica_id: str) -> frozenset[str] | None:
    for session in running.agent.tunnels:
        if running.agent.tunnels.replica_of(session) == replica_id:
            return session.replicas
    return None


async def test_with_one_replica_the_agent_holds_one_tunnel_and_never_dials_again(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    unused_kubeconfig: Path,
) -> None:
    [only] = await replica_gateways(1)
    balancer = await load_balancer([only])
    running = await start_agent(gateway_url=balancer.url, kubeconfig=unused_kubeconfig)
    await _converged(running, {"replica-0"})
    [connection] = await _live(only)
    assert connection.session.peer is not None
    assert "replicas" in connection.session.peer.capabilities
    assert running.agent.tunnels.missing() == frozenset()
    assert balancer.landed == [0]
    assert running.agent.metrics.sample("planelink_agent_tunnels") == 1


async def test_the_agent_keeps_serving_when_its_first_tunnel_ends_and_dials_it_back(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    unused_kubeconfig: Path,
) -> None:
    first, second = await replica_gateways(2)
    balancer = await load_balancer([first, second])
    running = await start_agent(gateway_url=balancer.url, kubeconfig=unused_kubeconfig)
    await _converged(running, {"replica-0", "replica-1"})
    [primary] = await _live(first)
    primary.session.close("the first replica restarts")
    await eventually(
        lambda: _held(running) == {"replica-1"}, within=10, message="the tunnel never ended"
    )
    assert running.agent.state.up  # the other tunnel still serves
    balancer.plan = [0]
    await _converged(running, {"replica-0", "replica-1"})
    assert running.agent.state.up


async def test_stop_drains_every_tunnel(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    unused_kubeconfig: Path,
) -> None:
    replicas = await replica_gateways(2)
    balancer = await load_balancer(replicas)
    running = await start_agent(gateway_url=balancer.url, kubeconfig=unused_kubeconfig)
    await _converged(running, {"replica-0", "replica-1"})
    connections = [c for replica in replicas for c in await _live(replica)]
    await running.stop()
    for connection in connections:
        await wait_for(connection.ended.wait())
        assert connection.close_reason == "drained"
    assert running.agent.metrics.sample("planelink_agent_tunnels") == 0
    assert not running.agent.state.up


async def test_a_gateway_without_an_id_is_served_and_never_makes_the_agent_dial(
    start_agent: StartAgent, fake_gateway: TestGateway, unused_kubeconfig: Path
) -> None:
    running = await start_agent(kubeconfig=unused_kubeconfig)
    connection = await fake_gateway.next_connection()
    await eventually(lambda: len(running.agent.tunnels) == 1, within=10, message="never held")
    assert running.agent.tunnels.wanted() == frozenset()
    assert connection.session.peer is not None
    assert len(fake_gateway.all_connections) == 1


async def test_the_agent_holds_no_more_tunnels_than_its_limit(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    unused_kubeconfig: Path,
) -> None:
    replicas = await replica_gateways(3)
    balancer = await load_balancer(replicas)
    running = await start_agent(
        gateway_url=balancer.url, kubeconfig=unused_kubeconfig, max_tunnels=2
    )
    await _converged(running, {"replica-0", "replica-1"})
    assert running.agent.tunnels.missing() == {"replica-2"}
    # A round trip through the agent: the seeker had every chance to dial meanwhile.
    [connection] = await _live(replicas[1])
    assert (await connection.request("GET", "/version")).status == 502
    assert balancer.landed == [0, 1]
    # One tunnel ends: the seeker may dial again, and reaches the replica it lacked.
    [first] = await _live(replicas[0])
    first.session.close("replica-0 restarts")
    balancer.plan = [2]
    await _converged(running, {"replica-1", "replica-2"})


async def test_a_newly_announced_replica_is_dialled_after_a_random_part_of_the_join_spread(
    start_agent: StartAgent,
    replica_gateways: ReplicaGateways,
    load_balancer: LoadBalancer,
    upstream_peer: UpstreamPeer,
    tmp_path: Path,
) -> None:
    """Every agent of a fleet hears of a new replica at once: each waits a random part of the
    spread first (drawn once per announcement; here the draw is 0, so the test waits for
    nothing), instead of the fleet flooding the new replica in the same instant."""
    draws: list[float] = []

    def draw() -> float:
        draws.append(0.0)
        return 0.0

    replicas = await replica_gateways(3)
    for replica in replicas:
        replica.live = frozenset({"replica-0"})  # alone at first
    balancer = await load_balancer(replicas)
    running = await start_agent(
        gateway_url=balancer.url,
        kubeconfig=upstream_peer.kubeconfig(tmp_path / "kubeconfig"),
        replica_join_spread=30.0,
        random=draw,
    )
    await _converged(running, {"replica-0"})
    assert draws == []  # alone: nothing announced, nothing drawn
    both = frozenset({"replica-0", "replica-1"})
    for replica in replicas:
        replica.announce(both)
    await _converged(running, set(both))
    assert len(draws) == 1  # one announcement, one draw (round robin: no dial was refused)
    for replica in replicas:
        replica.announce(both)  # the same set again is no news
    everyone = frozenset({"replica-0", "replica-1", "replica-2"})
    for replica in replicas:
        replica.announce(everyone)
    await _converged(running, set(everyone))
    assert len(draws) == 2
