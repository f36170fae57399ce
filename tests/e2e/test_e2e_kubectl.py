"""What a user does with kubectl through the gateway, against real API servers."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import aiohttp
import pytest
import yaml

from certs import PlaneRef
from tests.e2e.conftest import Lab
from tests.kit.waits import scaled, wait_for

CUT_MARGIN = scaled(10.0)
"""After the drain grace: the agent closes, the gateway sees it and resets the caller's stream."""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_crud_lands_in_the_right_plane(lab: Lab, planes: tuple[PlaneRef, PlaneRef]) -> None:
    plane_a, plane_b = planes
    namespace = _name("crud")
    created = await lab.kubectl(plane_a, "create", "namespace", namespace)
    assert created.returncode == 0, created.stderr
    assert (await lab.direct(plane_a, "get", "namespace", namespace)).returncode == 0
    assert (await lab.direct(plane_b, "get", "namespace", namespace)).returncode != 0

    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": namespace},
        "data": {"colour": "blue"},
    }
    applied = await lab.kubectl(
        plane_a, "apply", "-f", "-", stdin=yaml.safe_dump(manifest).encode()
    )
    assert applied.stdout.strip() == "configmap/settings created", applied.stderr
    patched = await lab.kubectl(
        plane_a,
        "patch",
        "configmap",
        "settings",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"data":{"colour":"green"}}',
    )
    assert patched.returncode == 0, patched.stderr
    got = json.loads(
        (await lab.direct(plane_a, "get", "cm", "settings", "-n", namespace, "-o", "json")).stdout
    )
    assert got["data"] == {"colour": "green"}
    listed = await lab.kubectl(plane_a, "get", "configmaps", "-n", namespace, "-o", "name")
    assert "configmap/settings" in listed.stdout.split()
    deleted = await lab.kubectl(plane_a, "delete", "configmap", "settings", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr
    assert (await lab.direct(plane_a, "get", "cm", "settings", "-n", namespace)).returncode != 0

    # kubectl spoke HTTP/2 to the gateway, and the agent HTTP/2 to the API server.
    gateway = lab.local.gateway
    assert gateway is not None
    arrived = gateway.metrics.registry.get_sample_value
    assert (arrived("planelink_gateway_requests_by_protocol_total", {"protocol": "http2"}) or 0) > 0
    left = lab.local.agent(plane_a).metrics.sample
    assert left("planelink_agent_upstream_requests_total", protocol="http2") >= 5
    assert left("planelink_agent_upstream_requests_total", protocol="http1") == 0


async def test_watch_sees_events_while_open(lab: Lab, planes: tuple[PlaneRef, PlaneRef]) -> None:
    plane = planes[0]
    namespace = _name("watch")
    await lab.direct(plane, "create", "namespace", namespace)
    watch = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(lab.local.caller_kubeconfig(plane)),
        "get",
        "configmaps",
        "-n",
        namespace,
        "-w",
        "-o",
        "name",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        for index in range(3):
            await lab.direct(plane, "create", "configmap", f"event-{index}", "-n", namespace)
            line = await wait_for(watch.stdout.readline(), 15)
            assert line.decode().strip() == f"configmap/event-{index}"
        # Other requests flow while the watch holds its stream open.
        other = await lab.kubectl(plane, "get", "namespace", namespace, "-o", "name")
        assert other.stdout.strip() == f"namespace/{namespace}"
    finally:
        watch.terminate()
        await watch.wait()
    # The caller left: its stream is gone at the gateway and the agent.
    agent_session = lab.local.agent(plane).session
    assert agent_session is not None
    await wait_for(agent_session.wait_idle(), 10)


async def test_a_large_list_streams_through(lab: Lab, planes: tuple[PlaneRef, PlaneRef]) -> None:
    plane = planes[1]
    namespace = _name("bulk")
    await lab.direct(plane, "create", "namespace", namespace)
    items = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i:04d}", "namespace": namespace},
            "data": {"payload": "x" * 512},
        }
        for i in range(2000)
    ]
    # Straight at the plane's API server, in a worker thread: 2000 POSTs take a while, and the
    # tunnels' heartbeats must go on meanwhile.
    created = await lab.servers[plane].akubectl(
        "create",
        "-f",
        "-",
        input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}),
        timeout=scaled(300),
    )
    assert created.returncode == 0
    listed = await lab.kubectl(plane, "get", "configmaps", "-n", namespace, "-o", "json", limit=120)
    assert listed.returncode == 0, listed.stderr
    names = [item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]]
    assert len(names) == 2000
    assert names[0] == "cm-0000"
    assert names[-1] == "cm-1999"
    # Nothing was held whole: the agent never held more than one read of the API server's
    # answer (the LIST is over a megabyte), and the tunnel's buffers are empty again.
    assert lab.local.agent(plane).proxy.stats.peak_held_bytes <= 64 * 1024
    assert lab.local.gateway is not None
    gateway_agent = lab.local.gateway.agents.agents(plane)[0]
    assert gateway_agent.session.open_streams == 0


async def test_agent_loss_gives_503_without_retry_after(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    plane = planes[0]
    await lab.local.stop_agent(plane)
    gateway = lab.local.gateway
    assert gateway is not None
    # Long after start-up (not while agents are expected back: then it is Retry-After: 1),
    # and long after the agent left (no wait for it to come back).
    gateway.trust.startup.agents_return_within = 0
    gateway.callers._settings = replace(gateway.callers._settings, agent_wait=0)
    async with lab.raw_client() as http, http.get(lab.plane_url(plane, "/api")) as answer:
        assert answer.status == 503
        # client-go would retry it ten times before kubectl showed anything
        # (tests/e2e/test_e2e_kubectl_errors.py has what kubectl shows).
        assert "Retry-After" not in answer.headers
        assert answer.headers["Planelink-Request-Id"]
        status = await answer.json()
    assert status["message"].startswith(
        "no agent of dataplane org-a/plane-a is connected (the last one disconnected "
    )


async def test_agent_killed_mid_watch_fails_the_caller_promptly(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    plane = planes[0]
    async with (
        lab.raw_client() as http,
        http.get(lab.plane_url(plane, "/api/v1/namespaces?watch=1")) as watch,
    ):
        assert watch.status == 200
        assert b'"type":"ADDED"' in await wait_for(watch.content.readline(), 15)
        grace = lab.local.agent(plane).settings.drain_grace  # a watch never ends by itself
        started = asyncio.get_running_loop().time()
        await lab.local.stop_agent(plane)
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(watch.content.read(), timeout=CUT_MARGIN)
        # At the end of the agent's drain grace, not after a request timeout (minutes).
        assert asyncio.get_running_loop().time() - started < grace + CUT_MARGIN


async def test_gateway_restart_agents_come_back_by_themselves(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    await lab.local.stop_gateway()
    await lab.local.start_gateway()
    for plane in planes:
        await wait_for(lab.local.wait_connected(plane), 30)
        answer = await lab.kubectl(plane, "get", "namespace", "kube-system", "-o", "name")
        assert answer.stdout.strip() == "namespace/kube-system", answer.stderr
