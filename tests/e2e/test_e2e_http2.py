"""HTTP/2 on both outer hops, with the real kube-apiserver, the real kubectl and the real curl.

kubectl (client-go) offers `h2` in ALPN and, when the gateway picks it, puts every request of
one run on one connection; exec and port-forward it opens on HTTP/1.1 connections of their own.
The agent speaks HTTP/2 to the API server (which offers it). What each test checks: that the
requests arrived over the protocol it says (the gateway's
`planelink_gateway_requests_by_protocol_total`) and left the agent over HTTP/2 (the agent's
`planelink_agent_upstream_requests_total`), that one caller connection carries 1,000 watches of
which any one can be cancelled alone (seen on the API server's own
`apiserver_longrunning_requests`), and that an upgrade tried over HTTP/2 is answered as the API
server answers it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agent.settings import AgentSettings
from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer, run_kubectl
from envtest.pytest_plugin import ServerFactory
from kubeproxy.h2pool import H2Exchange, H2Pool
from kubeproxy.upstream import load_kubeconfig
from planelink.local import LocalPlanelink
from tests.e2e.kubelet_lab import KubeletLab, kubelet_lab, running_kubectl
from tests.kit.h2_request import Header, RawAnswer, send_raw
from tests.kit.waits import eventually, scaled, wait_for, within

T = TypeVar("T")
PLANE = plane_ref("org-h2", "plane")
WATCHES = 1000
LIST_SIZE = 2000
PROTOCOL_ERROR = 1
HTTP1_ONLY = {**os.environ, "GODEBUG": "http2client=0"}
"""kubectl's environment with client-go's HTTP/2 off: it offers only http/1.1 in ALPN."""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _counted(registry: CollectorRegistry, name: str, protocol: str) -> float:
    """The sum of `name`'s samples labelled `protocol` (over any other labels it has)."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and sample.labels.get("protocol") == protocol
    )


def gateway_requests(local: LocalPlanelink, protocol: str) -> float:
    """Caller requests the gateway took over `protocol` ("http1", "http2")."""
    assert local.gateway is not None
    registry = local.gateway.metrics.registry
    return _counted(registry, "planelink_gateway_requests_by_protocol_total", protocol)


def agent_upstream_requests(local: LocalPlanelink, plane: PlaneRef, protocol: str) -> float:
    """Requests the agent of `plane` sent to its API server over `protocol`."""
    registry = local.agent(plane).metrics.registry
    return _counted(registry, "planelink_agent_upstream_requests_total", protocol)


class Counts:
    """The protocol counters at one moment; `grown()` is how much each grew since."""

    def __init__(self, local: LocalPlanelink, plane: PlaneRef) -> None:
        self._local, self._plane = local, plane
        self._at = self._now()

    def _now(self) -> dict[str, float]:
        local, plane = self._local, self._plane
        return {
            "in_http1": gateway_requests(local, "http1"),
            "in_http2": gateway_requests(local, "http2"),
            "out_http1": agent_upstream_requests(local, plane, "http1"),
            "out_http2": agent_upstream_requests(local, plane, "http2"),
        }

    def grown(self) -> dict[str, float]:
        return {key: value - self._at[key] for key, value in self._now().items()}


def _http2_upstream(settings: AgentSettings) -> AgentSettings:
    # The 1,000 watches are 1,000 tunnel streams at once: over the agent's default of 512.
    return replace(settings, upstream_http2=True, max_streams=4 * WATCHES)


@dataclass
class Lab:
    """planelink with one plane on its own real API server; kubectl and curl as a caller."""

    local: LocalPlanelink
    server: KubeAPIServer
    plane: PlaneRef = PLANE

    @property
    def kubeconfig(self) -> Path:
        return self.local.caller_kubeconfig(self.plane)

    def counts(self) -> Counts:
        return Counts(self.local, self.plane)

    async def kubectl(
        self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> tuple[int, str, str]:
        done = await run_kubectl(self.kubeconfig, *args, input=stdin, timeout=scaled(60), env=env)
        return done.returncode, done.stdout, done.stderr

    async def direct(self, *args: str, stdin: str | None = None) -> str:
        """kubectl straight at the API server, as its admin; its stdout (it must succeed)."""
        done = await self.server.akubectl(*args, input=stdin, timeout=scaled(120))
        return done.stdout

    def gateway_url(self, path: str) -> str:
        assert self.local.gateway is not None
        port = self.local.gateway.callers.port
        plane = self.plane
        return f"https://127.0.0.1:{port}/planes/{plane.namespace}/{plane.name}/k8s{path}"

    def caller_curl_args(self) -> list[str]:
        directory = self.local.directory
        return [
            *("--cacert", str(directory / "gateway" / "ca.crt")),
            *("--cert", str(directory / "callers" / "tls.crt")),
            *("--key", str(directory / "callers" / "tls.key")),
        ]

    def admin_curl_args(self) -> list[str]:
        return [
            *("--cacert", str(self.server.ca_file)),
            *("--header", f"Authorization: Bearer {self.server.admin_token}"),
        ]

    async def apiserver_watches(self, resource: str) -> float:
        """The API server's own count of WATCH requests it is serving on namespaced `resource`
        (`apiserver_longrunning_requests`, read from its /metrics as the admin)."""
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        connector = aiohttp.TCPConnector(ssl=self.server.ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(f"{self.server.url}/metrics", headers=headers) as answer,
        ):
            assert answer.status == 200
            text = await answer.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "apiserver_longrunning_requests"
            for sample in family.samples
            if sample.labels.get("verb") == "WATCH"
            and sample.labels.get("resource") == resource
            and sample.labels.get("scope") == "namespace"
        )

    async def serves_watches(self, resource: str, count: float) -> bool:
        return await self.apiserver_watches(resource) == count


@pytest.fixture
async def lab(kube_servers: ServerFactory, tmp_path: Path) -> AsyncIterator[Lab]:
    # A server of its own: the 1,000-watch test reads the API server's count of watches.
    server = kube_servers("e2e-http2")
    local = LocalPlanelink(
        directory=tmp_path / "planelink",
        planes={PLANE: server.kubeconfig_path},
        agent_settings=_http2_upstream,
    )
    await local.start()
    try:
        await wait_for(local.wait_connected(PLANE), 30)
        yield Lab(local, server)
    finally:
        await local.stop()


async def curl(*args: str) -> tuple[str, int, bytes]:
    """The real curl, run to its end: the HTTP version it used ("1.1", "2"), the status and
    the body."""
    marker = "\ncurl-answered:"
    process = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        f"{scaled(30):.0f}",
        "--write-out",
        f"{marker}%{{http_version}} %{{http_code}}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with within(40):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    body, _, written = out.rpartition(marker.encode())
    version, code = written.decode().split()
    return version, int(code), body


# -- 1. kubectl over HTTP/2 ---------------------------------------------------------------------


async def test_kubectl_crud_arrives_and_leaves_over_http2(lab: Lab) -> None:
    namespace = _name("h2-crud")
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
    # Every one of them left the agent on an HTTP/2 stream to the API server.
    assert grown["out_http2"] >= grown["in_http2"], grown
    assert grown["out_http1"] == 0, grown
    h2_pool = lab.local.agent(lab.plane).h2_pool
    assert h2_pool is not None
    assert h2_pool.protocol == "h2"


async def create_configmaps(server: KubeAPIServer, namespace: str, count: int) -> None:
    """`count` ConfigMaps of 512 bytes each, POSTed straight to the API server 16 at a time."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    url = f"{server.url}/api/v1/namespaces/{namespace}/configmaps"
    gate = asyncio.Semaphore(16)
    connector = aiohttp.TCPConnector(ssl=server.ssl_context(), limit=16)

    async def create(http: aiohttp.ClientSession, index: int) -> None:
        body = {"metadata": {"name": f"cm-{index:04d}"}, "data": {"payload": "x" * 512}}
        async with gate, http.post(url, json=body, headers=headers) as answer:
            assert answer.status == 201, await answer.text()

    async with aiohttp.ClientSession(connector=connector) as http, within(240):
        await asyncio.gather(*(create(http, index) for index in range(count)))


async def test_kubectl_lists_2000_configmaps_over_http2(lab: Lab) -> None:
    namespace = _name("h2-bulk")
    await lab.direct("create", "namespace", namespace)
    await create_configmaps(lab.server, namespace, LIST_SIZE)
    counts = lab.counts()
    code, out, err = await lab.kubectl("get", "configmaps", "-n", namespace, "-o", "json")
    assert code == 0, err
    names = [item["metadata"]["name"] for item in json.loads(out)["items"]]
    assert names == [f"cm-{index:04d}" for index in range(LIST_SIZE)]
    assert len(out) > LIST_SIZE * 512  # over a megabyte: many DATA frames on both hops
    grown = counts.grown()
    assert grown["in_http2"] >= 1, grown
    assert grown["in_http1"] == 0, grown
    assert grown["out_http2"] >= grown["in_http2"], grown
    assert grown["out_http1"] == 0, grown


async def test_kubectl_get_watch_over_http2_sees_events(lab: Lab) -> None:
    namespace = _name("h2-watch")
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
        assert grown["out_http2"] >= grown["in_http2"], grown
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
    assert kubelet.peer.portforward_upgrades == ["websocket"]
    await kubelet.wait_streams_released()


# -- 2. HTTP/1.1 callers, and curl ------------------------------------------------------------


async def test_kubectl_without_http2_still_works(lab: Lab) -> None:
    namespace = _name("h1")
    counts = lab.counts()
    code, out, err = await lab.kubectl("create", "namespace", namespace, env=HTTP1_ONLY)
    assert code == 0, err
    code, out, err = await lab.kubectl(
        "create", "configmap", "plain", "-n", namespace, "--from-literal=a=b", env=HTTP1_ONLY
    )
    assert out.strip() == "configmap/plain created", err
    code, out, err = await lab.kubectl(
        "get", "configmap", "plain", "-n", namespace, "-o", "jsonpath={.data.a}", env=HTTP1_ONLY
    )
    assert out == "b", err
    grown = counts.grown()
    assert grown["in_http1"] >= 3, grown
    assert grown["in_http2"] == 0, grown
    # The hops are independent: the agent still sends them on over HTTP/2.
    assert grown["out_http2"] >= grown["in_http1"], grown


async def test_curl_over_http1(lab: Lab) -> None:
    namespace = _name("curl-h1")
    await lab.direct("create", "namespace", namespace)
    counts = lab.counts()
    url = lab.gateway_url(f"/api/v1/namespaces/{namespace}")
    version, code, body = await curl("--http1.1", *lab.caller_curl_args(), url)
    assert (version, code) == ("1.1", 200), body
    assert json.loads(body)["metadata"]["name"] == namespace
    grown = counts.grown()
    assert (grown["in_http1"], grown["in_http2"]) == (1, 0), grown


async def test_curl_over_http2(lab: Lab) -> None:
    namespace = _name("curl-h2")
    await lab.direct("create", "namespace", namespace)
    caller = lab.caller_curl_args()
    url = lab.gateway_url(f"/api/v1/namespaces/{namespace}")
    counts = lab.counts()
    version, code, body = await curl("--http2", *caller, url)
    assert (version, code) == ("2", 200), body
    assert json.loads(body)["metadata"]["name"] == namespace
    created = {"metadata": {"name": "from-curl"}, "data": {"over": "h2"}}
    version, code, body = await curl(
        "--http2",
        *caller,
        *("--header", "Content-Type: application/json"),
        *("--data-binary", json.dumps(created)),
        f"{url}/configmaps",
    )
    assert (version, code) == ("2", 201), body
    grown = counts.grown()
    assert grown["in_http2"] == 2, grown
    assert grown["in_http1"] == 0, grown
    got = await lab.direct("get", "cm", "from-curl", "-n", namespace, "-o", "jsonpath={.data}")
    assert json.loads(got) == {"over": "h2"}


# -- 3. One HTTP/2 connection, 1,000 watches --------------------------------------------------


class Watch:
    """One watch on a stream of the caller's HTTP/2 connection, read an event at a time."""

    def __init__(self, exchange: H2Exchange) -> None:
        self.exchange = exchange
        self._buffer = b""

    async def next_event(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            piece = await self.exchange.body_piece()
            assert piece, "the watch ended"
            self._buffer += piece
        line, _, self._buffer = self._buffer.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event


async def _each(
    watches: list[Watch], step: Callable[[Watch], Awaitable[T]], seconds: float
) -> list[T]:
    """`step` of every watch at once, within `seconds` (scaled)."""
    async with within(seconds):
        return await asyncio.gather(*(step(watch) for watch in watches))


async def test_one_http2_connection_carries_1000_watches_each_cancelled_alone(
    lab: Lab, record_property: Callable[[str, object], None]
) -> None:
    namespace = _name("h2-watches")
    await lab.direct("create", "namespace", namespace)
    listed = json.loads(await lab.direct("get", "configmaps", "-n", namespace, "-o", "json"))
    since = listed["metadata"]["resourceVersion"]
    before = await lab.apiserver_watches("configmaps")
    target = f"/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion={since}"

    pool = H2Pool(load_kubeconfig(lab.kubeconfig), max_connections=1, connect_timeout=scaled(10))
    try:
        started = time.monotonic()
        first = await pool.request("GET", target)
        [connection] = pool.connections
        assert connection.max_streams >= WATCHES, "the gateway's SETTINGS_MAX_CONCURRENT_STREAMS"
        rest = [await pool.request("GET", target) for _ in range(WATCHES - 1)]
        watches = [Watch(exchange) for exchange in [first, *rest]]
        heads = await _each(watches, lambda w: w.exchange.response_head(), 120)
        assert {head.status for head in heads} == {200}
        await eventually(
            lambda: lab.serves_watches("configmaps", before + WATCHES),
            within=60,
            interval=0.5,
            message=f"the API server serves {WATCHES} more watches",
        )
        record_property("seconds_to_open_1000_watches", time.monotonic() - started)
        assert (pool.opened, len(pool.connections)) == (1, 1)  # one caller connection for all
        h2_pool = lab.local.agent(lab.plane).h2_pool
        assert h2_pool is not None
        record_property("agent_connections_to_the_api_server", len(h2_pool.connections))

        await lab.direct("create", "configmap", "first", "-n", namespace)
        started = time.monotonic()
        events = await _each(watches, Watch.next_event, 120)
        record_property("seconds_to_deliver_one_event_to_all", time.monotonic() - started)
        assert {(e["type"], e["object"]["metadata"]["name"]) for e in events} == {
            ("ADDED", "first")
        }

        cancelled = watches.pop(WATCHES // 2)
        cancelled.exchange.cancel()
        await eventually(
            lambda: lab.serves_watches("configmaps", before + WATCHES - 1),
            within=30,
            interval=0.2,
            message="the API server ended exactly the cancelled watch",
        )
        assert lab.local.gateway is not None
        [gateway_agent] = lab.local.gateway.agents.agents(lab.plane)
        assert gateway_agent.session.open_streams == WATCHES - 1

        await lab.direct("create", "configmap", "second", "-n", namespace)
        events = await _each(watches, Watch.next_event, 120)
        assert {(e["type"], e["object"]["metadata"]["name"]) for e in events} == {
            ("ADDED", "second")
        }
        assert await lab.apiserver_watches("configmaps") == before + WATCHES - 1
    finally:
        pool.close()
    await eventually(
        lambda: lab.serves_watches("configmaps", before),
        within=60,
        interval=0.5,
        message="the caller's connection closed: the API server ended every watch",
    )


# -- 4. An upgrade tried over HTTP/2 ------------------------------------------------------------

EXEC = "/api/v1/namespaces/{namespace}/pods/shell/exec?command=date&stdout=true"
WEBSOCKET_FIELDS = [
    argument
    for field in (
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol: v5.channel.k8s.io",
    )
    for argument in ("--header", field)
]


async def _pod_on_a_node(lab: Lab) -> str:
    """A namespace with pod `shell` bound to a node: what the API server needs to get as far
    as the upgrade (no kubelet listens where the node says)."""
    namespace = _name("h2-upgrade")
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"node-{namespace}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}},
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "shell", "namespace": namespace},
        "spec": {
            "nodeName": f"node-{namespace}",
            "containers": [{"name": "main", "image": "busybox"}],
        },
    }
    await lab.direct("create", "namespace", namespace)
    await lab.direct("create", "-f", "-", stdin=json.dumps(node))
    await lab.direct("create", "-f", "-", stdin=json.dumps(pod))
    return namespace


async def test_curl_upgrade_over_http2_is_answered_as_the_api_server_answers(lab: Lab) -> None:
    """curl leaves `Connection` and `Upgrade` out of an HTTP/2 request: what arrives is a plain
    request for exec, which the API server refuses (400, "Upgrade request required")."""
    path = EXEC.format(namespace=await _pod_on_a_node(lab))
    direct = await curl("--http2", *lab.admin_curl_args(), *WEBSOCKET_FIELDS, lab.server.url + path)
    via_gateway = await curl(
        "--http2", *lab.caller_curl_args(), *WEBSOCKET_FIELDS, lab.gateway_url(path)
    )
    assert direct[:2] == ("2", 400), direct
    assert via_gateway[:2] == direct[:2], via_gateway
    direct_status, gateway_status = json.loads(direct[2]), json.loads(via_gateway[2])
    assert direct_status["message"] == "Upgrade request required"
    assert (gateway_status["reason"], gateway_status["message"]) == (
        direct_status["reason"],
        direct_status["message"],
    )


async def test_raw_upgrade_fields_over_http2_are_answered_as_the_api_server_answers(
    lab: Lab,
) -> None:
    """A client that does send `connection`/`upgrade` over HTTP/2, or an extended CONNECT the
    server never offered, gets what the API server (Go's HTTP/2 server) gives it."""
    path = EXEC.format(namespace=await _pod_on_a_node(lab)).encode()
    assert lab.local.gateway is not None
    gateway_port = lab.local.gateway.callers.port
    gateway_path = f"/planes/{lab.plane.namespace}/{lab.plane.name}/k8s".encode() + path

    async def both(method: bytes, fields: list[Header]) -> tuple[RawAnswer, RawAnswer]:
        """`fields` (pseudo-fields first) sent to the API server and through the gateway."""
        token = f"Bearer {lab.server.admin_token}".encode()
        direct_head = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", f"127.0.0.1:{lab.server.port}".encode()),
            (b":path", path),
            *fields,
            (b"authorization", token),
        ]
        gateway_head = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", f"127.0.0.1:{gateway_port}".encode()),
            (b":path", gateway_path),
            *fields,
        ]
        async with within(30):
            direct = await send_raw(
                "127.0.0.1", lab.server.port, lab.server.ssl_context(), direct_head
            )
            via_gateway = await send_raw(
                "127.0.0.1", gateway_port, lab.local.caller_ssl_context(), gateway_head
            )
        return direct, via_gateway

    for name in (b"connection", b"upgrade"):
        fields = [(b"upgrade", b"websocket")]
        if name == b"connection":
            fields.insert(0, (b"connection", b"Upgrade"))
        direct, via_gateway = await both(b"GET", fields)
        # Go answers 400 naming the field, rather than resetting the stream.
        assert (direct.status, direct.reset) == (400, None), direct
        assert name.title() in direct.body, direct
        assert (via_gateway.status, via_gateway.reset) == (direct.status, direct.reset), via_gateway
        assert name.title() in via_gateway.body, via_gateway

    # RFC 8441's extended CONNECT (WebSocket over HTTP/2): neither server offers it.
    direct, via_gateway = await both(b"CONNECT", [(b":protocol", b"websocket")])
    assert (direct.status, direct.reset) == (None, PROTOCOL_ERROR), direct
    assert (via_gateway.status, via_gateway.reset) == (None, PROTOCOL_ERROR), via_gateway
