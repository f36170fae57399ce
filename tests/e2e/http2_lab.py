"""The lab of the HTTP/2 end-to-end tests: planelink with one plane on a real API server of
its own, whose agent speaks HTTP/2 to it; kubectl, curl and the protocol counters as a caller
sees them.

What a test reads: how many caller requests the gateway took over each protocol
(`planelink_gateway_requests_by_protocol_total`), how many the agent sent on over each
(`planelink_agent_upstream_requests_total`), and how many watches the API server itself is
serving (`apiserver_longrunning_requests`, from its /metrics): a watch a caller cancelled is over
only when that count says so.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from agent.settings import AgentSettings
from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer, run_kubectl
from planelink.local import LocalPlanelink
from tests.kit.waits import scaled, wait_for, within

PLANE = plane_ref("org-h2", "plane")
MAX_STREAMS = 4096
"""The agent's stream limit here: a test holds 1,000 watches at once, over the default 512."""


def unique(prefix: str) -> str:
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


def gateway_connections(local: LocalPlanelink, protocol: str) -> float:
    """Caller connections the gateway took (past TLS) whose ALPN picked `protocol`."""
    assert local.gateway is not None
    registry = local.gateway.metrics.registry
    return _counted(registry, "planelink_gateway_caller_connections_total", protocol)


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
            "connections_http1": gateway_connections(local, "http1"),
            "connections_http2": gateway_connections(local, "http2"),
            "out_http1": agent_upstream_requests(local, plane, "http1"),
            "out_http2": agent_upstream_requests(local, plane, "http2"),
        }

    def grown(self) -> dict[str, float]:
        return {key: value - self._at[key] for key, value in self._now().items()}


def _http2_upstream(settings: AgentSettings) -> AgentSettings:
    return replace(settings, upstream_http2=True, max_streams=MAX_STREAMS)


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

    async def list_version(self, path: str) -> str:
        """The resourceVersion of the API server's list at `path` (kubectl's `get -o json`
        has none: it builds its List itself): a watch from it misses no later event."""
        listed = json.loads(await self.direct("get", "--raw", path))
        version: str = listed["metadata"]["resourceVersion"]
        assert version, listed["metadata"]
        return version

    async def create_configmaps(
        self, namespace: str, count: int, *, size: int = 512, at_once: int = 16
    ) -> None:
        """ConfigMaps `cm-0000`... (`count` of them, `size` bytes of data each) POSTed straight
        to the API server, `at_once` at a time (1: in the order of their names)."""
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        url = f"{self.server.url}/api/v1/namespaces/{namespace}/configmaps"
        gate = asyncio.Semaphore(at_once)
        connector = aiohttp.TCPConnector(ssl=self.server.ssl_context(), limit=at_once)

        async def create(http: aiohttp.ClientSession, index: int) -> None:
            body = {"metadata": {"name": f"cm-{index:04d}"}, "data": {"payload": "x" * size}}
            async with gate, http.post(url, json=body, headers=headers) as answer:
                assert answer.status == 201, await answer.text()

        async with aiohttp.ClientSession(connector=connector) as http, within(240):
            await asyncio.gather(*(create(http, index) for index in range(count)))

    async def serves_watches(self, resource: str, count: float) -> bool:
        return await self.server.watches_served(resource) == count


@asynccontextmanager
async def http2_lab(server: KubeAPIServer, workdir: Path) -> AsyncIterator[Lab]:
    """planelink running under `workdir`, its one plane's agent connected to `server` (which
    should be the tests' alone: they read its count of watches)."""
    local = LocalPlanelink(
        directory=workdir / "planelink",
        planes={PLANE: server.kubeconfig_path},
        agent_settings=_http2_upstream,
    )
    await local.start()
    try:
        await wait_for(local.wait_connected(PLANE), 30)
        yield Lab(local, server)
    finally:
        await local.stop()


@dataclass(frozen=True)
class CurlAnswer:
    version: str
    """The HTTP version curl used: "1.1" or "2"."""
    status: int
    headers: dict[str, list[str]]
    """Names lower-case, values in order."""
    body: bytes


async def curl(*args: str) -> CurlAnswer:
    """The real curl, run to its end (it must exit 0), and the answer it got."""
    marker = "\ncurl-answered:"
    process = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        f"{scaled(30):.0f}",
        "--write-out",
        f"{marker}%{{http_version}} %{{http_code}} %{{header_json}}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with within(40):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    body, _, written = out.rpartition(marker.encode())
    version, code, headers = written.decode().split(maxsplit=2)
    return CurlAnswer(version, int(code), json.loads(headers), body)
