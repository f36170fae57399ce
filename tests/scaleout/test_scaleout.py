"""Scale-out end to end: three gateway replicas behind HAProxy, two planes, real kubectl.

Every process is real (tests/kit/replicas.py): gateways and agents are `planelink` processes,
the API servers are kube-apiservers, the balancer is HAProxy. Exec, `logs -f` and port-forward
need a kubelet, which these API servers lack: test_scaleout_kubelet.py covers them with the
stand-in kubelet.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from certs import PlaneRef
from planelink.local import CALLER_NAME
from tests.kit.replicas import ReplicaLab
from tests.kit.waits import scaled, wait_for, within
from tests.scaleout.conftest import MakeLab

REPLICAS = ("r1", "r2", "r3")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _get_ok(lab: ReplicaLab, plane: PlaneRef, *, at: str | None = None) -> None:
    done = await lab.kubectl(plane, "get", "namespace", "default", "-o", "name", at=at)
    assert (done.returncode, done.stdout.strip()) == (0, "namespace/default"), done.stderr


async def test_every_replica_reaches_every_plane_as_the_caller(
    make_lab: MakeLab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    spread, pinned = planes
    # The pinned plane's agent reaches r1 only: r2 and r3 serve it by forwarding to r1.
    lab = await make_lab(replicas=3, pinned={pinned: "r1"})
    assert (await lab.planes_at("r2"))[pinned] == set()
    assert (await lab.planes_at("r3"))[pinned] == set()

    # What the data plane sees with one replica holding the tunnel (r1), the caller...
    local = await lab.whoami(pinned, at="r1")
    assert local["username"] == CALLER_NAME
    for plane in planes:
        for replica in REPLICAS:
            # ... it sees from every replica, forwarded or not, and through the balancer.
            assert await lab.whoami(plane, at=replica) == local
            await _get_ok(lab, plane, at=replica)
        for _ in REPLICAS:
            assert await lab.whoami(plane) == local
    del spread


async def test_a_watch_through_a_forwarding_replica(
    make_lab: MakeLab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    plane = planes[1]
    lab = await make_lab(replicas=2, pinned={plane: "r1"})
    namespace = _name("watch")
    assert (await lab.direct(plane, "create", "namespace", namespace)).returncode == 0
    watch = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(lab.kubeconfig(plane, "r2")),
        *("get", "configmaps", "-n", namespace, "-w", "-o", "name"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        for index in range(3):
            created = await lab.direct(plane, "create", "configmap", f"e{index}", "-n", namespace)
            assert created.returncode == 0, created.stderr
            line = await wait_for(watch.stdout.readline(), 15)
            assert line.decode().strip() == f"configmap/e{index}"
    finally:
        watch.terminate()
        await watch.wait()


async def test_agents_converge_to_each_replica_scaling_1_3_1(
    make_lab: MakeLab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    lab = await make_lab(replicas=1)
    await lab.start_replica("r2")
    await lab.start_replica("r3")
    await lab.wait_tunnels(REPLICAS)
    for plane in planes:
        for _ in REPLICAS:
            await _get_ok(lab, plane)

    for replica in ("r3", "r2"):
        assert await lab.stop_replica(replica) == 0
    await lab.wait_tunnels(["r1"])
    for plane in planes:
        for _ in REPLICAS:
            await _get_ok(lab, plane)
    # Back up: the agents find the replica again.
    await lab.start_replica("r2")
    await lab.wait_tunnels(["r1", "r2"])


async def test_kill_9_of_a_replica(make_lab: MakeLab, planes: tuple[PlaneRef, PlaneRef]) -> None:
    lab = await make_lab(replicas=3)
    await lab.wait_tunnels(REPLICAS)
    plane = planes[0]
    # A watch held open on r2: the connection dies with r2, as it must.
    url = (
        f"https://127.0.0.1:{lab.replicas['r2'].caller_port}"
        f"/planes/{plane.namespace}/{plane.name}/k8s/api/v1/namespaces/default/configmaps"
        "?watch=true"
    )
    connector = aiohttp.TCPConnector(ssl=lab.caller_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        within(30),
        http.get(url) as watch,
    ):
        assert watch.status == 200
        await lab.kill_replica("r2")
        with pytest.raises(aiohttp.ClientError):
            await watch.content.read()

    await lab.lb.wait_status("r2", "DOWN")
    for plane in planes:
        for _ in range(2 * len(REPLICAS)):
            await _get_ok(lab, plane)


async def test_a_rolling_restart_under_a_get_loop_fails_no_request(
    make_lab: MakeLab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    lab = await make_lab(replicas=3)
    await lab.wait_tunnels(REPLICAS)
    failures: list[str] = []
    served = 0
    restarted = asyncio.Event()

    async def loop(plane: PlaneRef) -> None:
        nonlocal served
        while not restarted.is_set():
            done = await lab.kubectl(plane, "get", "namespace", "default", "-o", "name")
            if done.returncode == 0:
                served += 1
            else:
                failures.append(done.stderr)

    loops = [asyncio.create_task(loop(plane)) for plane in planes]
    try:
        for replica in REPLICAS:
            assert await lab.stop_replica(replica) == 0
            await lab.start_replica(replica)
            await lab.wait_tunnels(lab.running())
    finally:
        restarted.set()
        await asyncio.wait_for(asyncio.gather(*loops), scaled(60))
    assert failures == []
    assert served >= len(REPLICAS)
