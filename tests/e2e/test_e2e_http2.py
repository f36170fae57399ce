"""kubectl and curl through the gateway over HTTP/2 (and HTTP/1.1 beside it), against the real
API server: what each run did, and over which protocol its requests arrived at the gateway and
left the agent (tests/e2e/http2_lab.py reads the counters).

kubectl (client-go) offers `h2` in ALPN and, when the gateway picks it, puts every request of a
run on one connection; exec and port-forward it upgrades on HTTP/1.1 connections of its own.
`DISABLE_HTTP2` turns its HTTP/2 off (`GODEBUG=http2client=0` does not: client-go sets HTTP/2
up on its transport itself). The agent speaks HTTP/2 to the API server whatever the caller
spoke. logs -f, exec and port-forward reach the stand-in kubelet (a real API server hands them
to a kubelet, which envtest does not run), which speaks HTTP/1.1 only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from certs import plane_ref
from envtest import run_kubectl
from envtest.pytest_plugin import ServerFactory
from tests.e2e.http2_lab import Counts, Lab, curl, http2_lab, unique
from tests.e2e.kubelet_lab import KubeletLab, kubelet_lab, running_kubectl
from tests.kit.waits import scaled, wait_for, within

LIST_SIZE = 2000
PROTOCOLS = ("--http1.1", "--http2")
HTTP1_ONLY = {**os.environ, "DISABLE_HTTP2": "1"}
"""kubectl's environment with client-go's HTTP/2 off (k8s.io/apimachinery's util/net reads
`DISABLE_HTTP2`): it offers only http/1.1 in ALPN."""


@pytest.fixture
async def lab(kube_servers: ServerFactory, tmp_path: Path) -> AsyncIterator[Lab]:
    async with http2_lab(kube_servers("e2e-http2"), tmp_path) as lab:
        yield lab


async def test_kubectl_crud_arrives_and_leaves_over_http2(lab: Lab) -> None:
    namespace = unique("h2-crud")
    counts = lab.counts()
    code, out, err = await lab.kubectl("create", "namespace", namespace)
    assert code == 0, err
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": namespace},
        "data": {"colour": "blue"},
    }
    code, out, err = await lab.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert out.strip() == "configmap/settings created", err
    patch = '{"data":{"colour":"green"}}'
    code, out, err = await lab.kubectl(
        "patch", "configmap", "settings", "-n", namespace, "--type=merge", "-p", patch
    )
    assert code == 0, err
    got = json.loads(await lab.direct("get", "cm", "settings", "-n", namespace, "-o", "json"))
    assert got["data"] == {"colour": "green"}
    code, out, err = await lab.kubectl("get", "configmaps", "-n", namespace, "-o", "name")
    assert "configmap/settings" in out.split(), err
    code, out, err = await lab.kubectl("delete", "configmap", "settings", "-n", namespace)
    assert code == 0, err
    code, out, err = await lab.kubectl("get", "configmap", "settings", "-n", namespace)
    assert code == 1
    assert 'configmaps "settings" not found' in err

    grown = counts.grown()
    # Five kubectl runs, each at least one request, none of them on HTTP/1.1.
    assert grown["in_http2"] >= 6, grown
    assert grown["in_http1"] == 0, grown
    assert grown["connections_http2"] <= 6, grown  # one connection a run, whatever it asked
    # Every one of them left the agent on an HTTP/2 stream to the API server.
    assert grown["out_http2"] == grown["in_http2"], grown
    assert grown["out_http1"] == 0, grown
    h2_pool = lab.local.agent(lab.plane).h2_pool
    assert h2_pool is not None
    assert h2_pool.protocol == "h2"


async def test_kubectl_lists_2000_configmaps_over_http2(lab: Lab) -> None:
    namespace = unique("h2-bulk")
    await lab.direct("create", "namespace", namespace)
    await lab.create_configmaps(namespace, LIST_SIZE)
    counts = lab.counts()
    code, out, err = await lab.kubectl("get", "configmaps", "-n", namespace, "-o", "json")
    assert code == 0, err
    names = [item["metadata"]["name"] for item in json.loads(out)["items"]]
    assert names == [f"cm-{index:04d}" for index in range(LIST_SIZE)]
    assert len(out) > LIST_SIZE * 512  # over a megabyte: many DATA frames on both hops
    grown = counts.grown()
    assert grown["in_http2"] >= 1, grown
    assert grown["in_http1"] == 0, grown
    assert grown["connections_http2"] == 1, grown
    assert grown["out_http2"] == grown["in_http2"], grown
    assert grown["out_http1"] == 0, grown


async def test_kubectl_get_watch_over_http2_sees_events(lab: Lab) -> None:
    namespace = unique("h2-watch")
    await lab.direct("create", "namespace", namespace)
    counts = lab.counts()
    args = ("get", "configmaps", "-n", namespace, "-w", "-o", "name")
    async with running_kubectl(lab.kubeconfig, *args) as watch:
        assert watch.stdout is not None
        for index in range(2):
            await lab.direct("create", "configmap", f"event-{index}", "-n", namespace)
            line = await wait_for(watch.stdout.readline(), 20)
            assert line.decode().strip() == f"configmap/event-{index}"
        # The watch's own request came over HTTP/2 and is still open at the gateway.
        grown = counts.grown()
        assert grown["in_http2"] >= 2, grown  # the LIST, then the watch
        assert grown["in_http1"] == 0, grown
        assert grown["connections_http2"] == 1, grown  # the watch cost no connection
        assert grown["out_http2"] == grown["in_http2"], grown
    session = lab.local.agent(lab.plane).session
    assert session is not None
    await wait_for(session.wait_idle(), 15)  # kubectl left: its watch's stream is gone


# -- logs -f, exec and port-forward (the stand-in kubelet: a real API server hands them on) ---


@pytest.fixture
async def kubelet(tmp_path: Path) -> AsyncIterator[KubeletLab]:
    async with kubelet_lab(tmp_path, plane_ref("org-h2", "kubelet")) as lab:
        yield lab


def kubelet_counts(lab: KubeletLab) -> Counts:
    return Counts(lab.local, lab.plane)


async def test_kubectl_logs_follow_over_http2(kubelet: KubeletLab) -> None:
    counts = kubelet_counts(kubelet)
    async with running_kubectl(kubelet.kubeconfig, "logs", "-f", "shell") as process:
        assert process.stdout is not None
        kubelet.peer.release_log_line("line 1")
        assert await wait_for(process.stdout.readline(), 30) == b"line 1\n"
        # The pod's GET and the log stream itself, both on kubectl's HTTP/2 connection.
        grown = counts.grown()
        assert grown["in_http2"] >= 2, grown
        assert grown["in_http1"] == 0, grown
        assert grown["connections_http2"] == 1, grown
        kubelet.peer.release_log_line("line 2")
        assert await wait_for(process.stdout.readline(), 30) == b"line 2\n"
        kubelet.peer.end_log_stream()
        async with within(30):
            _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
    assert kubelet.peer.log_queries[-1]["follow"] == ["true"]
    await kubelet.wait_streams_released()


async def test_kubectl_exec_and_port_forward_beside_http2(kubelet: KubeletLab) -> None:
    """client-go asks for the pod over HTTP/2 and upgrades on an HTTP/1.1 connection."""
    counts = kubelet_counts(kubelet)
    args = ("exec", "-i", "shell", "--", "cat")
    done = await run_kubectl(kubelet.kubeconfig, *args, input=b"over h2\n", timeout=scaled(30))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "cat\nover h2\n"
    grown = counts.grown()
    assert grown["in_http2"] >= 1, grown  # the pod
    assert grown["in_http1"] == 1, grown  # the upgrade
    assert (grown["connections_http2"], grown["connections_http1"]) == (1, 1), grown
    assert len(kubelet.peer.exec_requests) == 1

    counts = kubelet_counts(kubelet)
    async with running_kubectl(kubelet.kubeconfig, "port-forward", "pod/shell", "0:8080") as pf:
        assert pf.stdout is not None
        line = await wait_for(pf.stdout.readline(), 30)
        forwarding = re.fullmatch(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 8080\n", line)
        assert forwarding is not None, line
        async with within(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", int(forwarding[1]))
            writer.write(b"through the gateway\n")
            assert await reader.readexactly(20) == b"through the gateway\n"
            writer.close()
            await writer.wait_closed()
        pf.send_signal(signal.SIGINT)
        async with within(30):
            _, err = await pf.communicate()
        assert pf.returncode == 0, err.decode()
    grown = counts.grown()
    assert grown["in_http2"] >= 1, grown
    assert grown["in_http1"] == 1, grown
    assert (grown["connections_http2"], grown["connections_http1"]) == (1, 1), grown
    assert kubelet.peer.portforward_upgrades == ["websocket"]
    await kubelet.wait_streams_released()


# -- 2. HTTP/1.1 callers, and curl ------------------------------------------------------------


async def create_and_read_a_configmap(lab: Lab, env: Mapping[str, str]) -> None:
    """Three kubectl runs with `env`: a namespace, a ConfigMap in it, and its data read back."""
    namespace = unique("h1")
    code, out, err = await lab.kubectl("create", "namespace", namespace, env=env)
    assert code == 0, err
    code, out, err = await lab.kubectl(
        "create", "configmap", "plain", "-n", namespace, "--from-literal=a=b", env=env
    )
    assert out.strip() == "configmap/plain created", err
    code, out, err = await lab.kubectl(
        "get", "configmap", "plain", "-n", namespace, "-o", "jsonpath={.data.a}", env=env
    )
    assert out == "b", err


async def test_kubectl_without_http2_still_works(lab: Lab) -> None:
    counts = lab.counts()
    await create_and_read_a_configmap(lab, HTTP1_ONLY)
    grown = counts.grown()
    assert grown["in_http1"] >= 3, grown
    assert (grown["in_http2"], grown["connections_http2"]) == (0, 0), grown
    # The hops are independent: the agent still sends them on over HTTP/2.
    assert grown["out_http2"] == grown["in_http1"], grown


async def test_godebug_does_not_turn_kubectls_http2_off(lab: Lab) -> None:
    """client-go configures golang.org/x/net/http2 on its transport itself, so Go's
    `GODEBUG=http2client=0` (which turns off net/http's own HTTP/2) leaves kubectl on HTTP/2;
    `DISABLE_HTTP2` is client-go's switch. Either way kubectl works."""
    counts = lab.counts()
    await create_and_read_a_configmap(lab, {**os.environ, "GODEBUG": "http2client=0"})
    grown = counts.grown()
    assert grown["in_http2"] >= 3, grown
    assert (grown["in_http1"], grown["connections_http1"]) == (0, 0), grown


async def test_curl_over_http1(lab: Lab) -> None:
    namespace = unique("curl-h1")
    await lab.direct("create", "namespace", namespace)
    counts = lab.counts()
    url = lab.gateway_url(f"/api/v1/namespaces/{namespace}")
    answer = await curl("--http1.1", *lab.caller_curl_args(), url)
    assert (answer.version, answer.status) == ("1.1", 200), answer
    assert json.loads(answer.body)["metadata"]["name"] == namespace
    grown = counts.grown()
    assert (grown["in_http1"], grown["in_http2"]) == (1, 0), grown
    assert grown["out_http2"] == 1, grown


async def test_curl_over_http2(lab: Lab) -> None:
    namespace = unique("curl-h2")
    await lab.direct("create", "namespace", namespace)
    caller = lab.caller_curl_args()
    url = lab.gateway_url(f"/api/v1/namespaces/{namespace}")
    counts = lab.counts()
    answer = await curl("--http2", *caller, url)
    assert (answer.version, answer.status) == ("2", 200), answer
    assert json.loads(answer.body)["metadata"]["name"] == namespace
    created = {"metadata": {"name": "from-curl"}, "data": {"over": "h2"}}
    answer = await curl(
        "--http2",
        *caller,
        *("--header", "Content-Type: application/json"),
        *("--data-binary", json.dumps(created)),
        f"{url}/configmaps",
    )
    assert (answer.version, answer.status) == ("2", 201), answer
    grown = counts.grown()
    assert grown["in_http2"] == 2, grown
    assert grown["in_http1"] == 0, grown
    assert grown["out_http2"] == 2, grown
    got = await lab.direct("get", "cm", "from-curl", "-n", namespace, "-o", "jsonpath={.data}")
    assert json.loads(got) == {"over": "h2"}


async def test_the_gateways_refusals_are_the_same_over_both_protocols(lab: Lab) -> None:
    """A refusal is the same Kubernetes Status, Warning and request id over HTTP/2 as over
    HTTP/1.1: here, a plane nobody configured."""
    assert lab.local.gateway is not None
    port = lab.local.gateway.callers.port
    url = f"https://127.0.0.1:{port}/planes/org-h2/nowhere/k8s/api"
    answers = [await curl(version, *lab.caller_curl_args(), url) for version in PROTOCOLS]
    assert [answer.version for answer in answers] == ["1.1", "2"]
    over_http1, over_http2 = answers
    assert over_http1.status == over_http2.status == 404
    status = [json.loads(answer.body) for answer in answers]
    assert status[0]["reason"] == status[1]["reason"] == "NotFound"
    assert status[0]["message"] == status[1]["message"]
    assert over_http1.headers["warning"] == over_http2.headers["warning"]
    assert over_http1.headers["content-type"] == over_http2.headers["content-type"]
    ids = [answer.headers["planelink-request-id"] for answer in answers]
    assert len(ids[0]) == len(ids[1]) == 1
    assert ids[0] != ids[1]
