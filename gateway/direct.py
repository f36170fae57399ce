"""Direct-mode planes: the gateway dials the plane's API server itself, with kubeproxy.

From a plane's resolved `DirectCredentials` (handed over by the reconciler through
`gateway.interfaces.DirectPlaneSink`) to a kubeproxy `Upstream`, `ConnectionPool` and `Proxy` —
the same pool and proxy an agent runs in its cluster. A caller's request to a direct plane is a
`kubeproxy.LocalStream`: the caller endpoint relays it exactly as it relays a tunnel stream (same
routing, authentication, statuses, upgrades), and `Proxy.handle` serves its other end in this
process. There is no tunnel, session or heartbeat in between, and nothing is registered as an
agent. The reconciler's probe (`DirectPlanes.fetch`) goes through the same pool.

Life cycle: new credentials serve the plane at once; changed credentials (a rotated token, a new
CA) serve new requests with the new ones, while open streams (a watch, say) may finish for
`drain_grace` seconds; a plane removed is closed at once. This module never touches trust and
never accepts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from cryptography import x509

import certs
from certs import PlaneRef
from gateway.interfaces import DirectCredentials, PlaneAnswer, PlaneUnreachable
from gateway.metrics import AgentSample, DirectUpstreamSample, GatewayMetrics
from kubeproxy import (
    LocalLimits,
    LocalProxy,
    LocalStream,
    ProxyMetrics,
    TLSSettings,
    Upstream,
    UpstreamConfigError,
    UpstreamCredentialsError,
    UpstreamError,
)
from protocol import ErrorCode, Headers
from tunnel import StreamResetError
from tunnel.contract import IDENTITY_AGENT_ID, IDENTITY_PLANE

log = structlog.get_logger("gateway.direct")

DIRECT_AGENT_ID = "direct"
"""How /planes and the agent metrics name a direct plane's one "agent": the gateway itself."""
_PROBE_BODY_LIMIT = 300
"""Characters of a probe's answer kept for the condition's message."""
_PREFIX = "planelink_gateway_direct"
"""Of each plane's own proxy metrics; the gateway's registry shows some of them by plane."""
_REQUESTS = f"{_PREFIX}_upstream_requests_total"
_CONNECTIONS = f"{_PREFIX}_upstream_connections"


@dataclass(frozen=True)
class DirectSettings(LocalLimits):
    """How the gateway proxies to each direct-mode plane (the agent's defaults): requests open
    at once (more are refused, 429), bytes buffered per request and in all of a plane's
    requests (however many callers stop reading, a plane holds no more)."""

    drain_grace: float = 30.0


def upstream_for(plane: PlaneRef, credentials: DirectCredentials) -> Upstream:
    """The kubeproxy upstream of a direct plane: its server, CA, client certificate, token.
    Raises UpstreamConfigError when they cannot make one."""
    server = urlsplit(credentials.server.rstrip("/"))
    if server.hostname is None:
        raise UpstreamConfigError(f"direct plane {plane}: bad server {credentials.server!r}")
    upstream = Upstream(
        scheme=server.scheme,
        host=server.hostname,
        port=server.port or (443 if server.scheme == "https" else 80),
        base_path=server.path,
        tls=TLSSettings(
            ca_data=credentials.ca_pem,
            ca_file=None,
            client_cert_pem=credentials.client_cert_pem,
            client_key_pem=credentials.client_key_pem,
        ),
        token=credentials.bearer_token,
        source=f"DataPlane {plane} spec.kubernetesCluster",
    )
    upstream.ssl_context()  # fail now if the TLS material is unusable
    return upstream


# -- one plane ----------------------------------------------------------------------------------


class DirectPlane(LocalProxy):
    """One direct plane's credentials as an upstream, its pool and proxy, and the requests
    open through them."""

    def __init__(
        self, plane: PlaneRef, credentials: DirectCredentials, settings: DirectSettings
    ) -> None:
        self.plane = plane
        self.credentials = credentials
        self.server = credentials.server.rstrip("/")
        plane_log = log.bind(plane=str(plane), server=self.server)
        super().__init__(
            upstream_for(plane, credentials),
            limits=settings,
            # A registry of its own per plane: the pool's gauges are per pool.
            metrics=ProxyMetrics(prefix=_PREFIX),
            logger=plane_log,
        )
        self._ca = x509.load_pem_x509_certificates(credentials.ca_pem)[0]
        self.connected_at = time.time()
        self.draining = False

    def open_stream(
        self, *, method: str, path: str, headers: Headers, end_stream: bool, upgrade: bool
    ) -> LocalStream:
        """Start relaying one caller request. Raises StreamResetError(REFUSED_STREAM) when the
        plane has `max_streams` open, or is closing (safe to retry)."""
        if self.draining:
            raise StreamResetError(ErrorCode.REFUSED_STREAM, "the plane is closing", remote=True)
        return self.streams.open_stream(
            method=method, path=path, headers=headers, end_stream=end_stream, upgrade=upgrade
        )

    async def fetch(self, path: str, *, limit: float) -> PlaneAnswer:
        """GET `path` through the pool within `limit` seconds. Raises PlaneUnreachable."""
        try:
            async with asyncio.timeout(limit):
                status, body = await self.proxy.fetch(path, body_limit=_PROBE_BODY_LIMIT * 4)
        except UpstreamError as error:
            raise PlaneUnreachable(error.kind, f"{self.server}: {error.message}") from error
        except UpstreamCredentialsError as error:
            raise PlaneUnreachable("credentials", f"{self.server}: {error}") from error
        except TimeoutError:
            raise PlaneUnreachable(
                "timeout", f"{self.server}: no answer within {limit:g} s"
            ) from None
        text = body.decode("utf-8", errors="replace")[:_PROBE_BODY_LIMIT].strip()
        return PlaneAnswer(url=self.server + path, status=status, body=text)

    def drain(self) -> None:
        """No new requests; the open ones go on."""
        self.draining = True

    def describe(self) -> dict[str, object]:
        """This plane as /planes shows an agent (the gateway is its one agent)."""
        sent, received = self.streams.bytes_moved
        ca = certs.describe(self._ca)
        return {
            "agentId": DIRECT_AGENT_ID,
            "direct": True,
            "remoteAddress": self.server,
            "connectedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.connected_at)),
            "lastHeartbeatSecondsAgo": 0.0,
            "rttSeconds": None,
            "openStreams": self.streams.open,
            "streamsOpened": self.streams.opened,
            "bytesToAgent": sent,
            "bytesFromAgent": received,
            "draining": self.draining,
            "identity": {IDENTITY_PLANE: str(self.plane), IDENTITY_AGENT_ID: DIRECT_AGENT_ID},
            "certificate": {
                "subject": ca.subject,
                "notAfter": ca.not_after.isoformat(),
                "sha256": ca.sha256_fingerprint,
            },
        }


@dataclass(frozen=True)
class _Unservable:
    """Credentials that make no upstream (a bad server URL, an unusable CA)."""

    credentials: DirectCredentials
    problem: str


# -- every plane ----------------------------------------------------------------------------------


class DirectPlanes:
    """The direct planes the reconciler resolved, each served through its own pool: the
    reconciler's `gateway.interfaces.DirectPlaneSink`, and the caller endpoint's backends."""

    def __init__(
        self, *, settings: DirectSettings | None = None, metrics: GatewayMetrics | None = None
    ) -> None:
        self._settings = settings or DirectSettings()
        self._metrics = metrics
        self._current: dict[PlaneRef, DirectPlane | _Unservable] = {}
        self._retiring: set[DirectPlane] = set()
        """Replaced planes still finishing their open requests."""
        self._tasks: set[asyncio.Task[None]] = set()
        if metrics is not None:
            metrics.watch_agents(self.samples)
            metrics.watch_direct_upstreams(self.upstream_samples)

    # -- the reconciler's port ----------------------------------------------------------------

    def set(self, plane: PlaneRef, credentials: DirectCredentials) -> bool:
        current = self._current.get(plane)
        if current is not None and current.credentials == credentials:
            return False
        served: DirectPlane | _Unservable
        try:
            served = DirectPlane(plane, credentials, self._settings)
        except (UpstreamConfigError, ValueError) as error:
            log.error("cannot serve direct plane", plane=str(plane), error=str(error))
            served = _Unservable(credentials, str(error))
        self._current[plane] = served
        if isinstance(current, DirectPlane):
            self._retire(current)
        if isinstance(served, DirectPlane):
            log.info("direct plane served", plane=str(plane), server=served.server)
            if self._metrics is not None:
                self._metrics.agent_connects.labels(plane=str(plane)).inc()
        return True

    def remove(self, plane: PlaneRef) -> bool:
        current = self._current.pop(plane, None)
        if current is None:
            return False
        if isinstance(current, DirectPlane):
            log.info("direct plane removed: closing it", plane=str(plane))
            self._await(current.close("the plane is no longer reached directly"))
        return True

    def serves(self, plane: PlaneRef) -> bool:
        return plane in self._current

    async def fetch(self, plane: PlaneRef, path: str, *, limit: float) -> PlaneAnswer:
        current = self._current[plane]
        if isinstance(current, _Unservable):
            raise PlaneUnreachable("config", f"{current.credentials.server}: {current.problem}")
        return await current.fetch(path, limit=limit)

    # -- the caller endpoint's and the operator's view ---------------------------------------

    def backend(self, plane: PlaneRef) -> DirectPlane | None:
        """The plane's current `DirectPlane`, if it is direct and can be served."""
        current = self._current.get(plane)
        return current if isinstance(current, DirectPlane) else None

    def served(self) -> Iterator[DirectPlane]:
        for current in self._current.values():
            if isinstance(current, DirectPlane):
                yield current

    def samples(self) -> Iterator[AgentSample]:
        for served in self.served():
            yield AgentSample(
                plane=str(served.plane),
                agent_id=DIRECT_AGENT_ID,
                rtt=None,
                open_streams=served.streams.open,
            )

    def upstream_samples(self) -> Iterator[DirectUpstreamSample]:
        """Each plane's requests by protocol and connections held, its draining
        predecessors' too (the gateway's `planelink_gateway_direct_upstream_*`)."""
        for served in (*self.served(), *self._retiring):
            sample = served.metrics.sample
            yield DirectUpstreamSample(
                plane=str(served.plane),
                http1_requests=sample(_REQUESTS, protocol="http1"),
                http2_requests=sample(_REQUESTS, protocol="http2"),
                active_connections=sample(_CONNECTIONS, state="active"),
                idle_connections=sample(_CONNECTIONS, state="idle"),
            )

    async def stop(self) -> None:
        """Close every plane and wait until their requests have ended."""
        for served in (*self.served(), *self._retiring):
            self._await(served.close("gateway stopping"))
        self._current.clear()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- retiring -----------------------------------------------------------------------------

    def _retire(self, previous: DirectPlane) -> None:
        previous.drain()
        self._retiring.add(previous)
        self._spawn(self._close_after_grace(previous), f"direct-drain-{previous.plane}")

    async def _close_after_grace(self, previous: DirectPlane) -> None:
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.drain_grace):
                    await previous.streams.wait_idle()
            await asyncio.gather(*previous.close("drain grace over"), return_exceptions=True)
        finally:
            self._retiring.discard(previous)

    def _await(self, handlers: list[asyncio.Task[None]]) -> None:
        if handlers:
            self._spawn(_gathered(handlers), "direct-close")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _gathered(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
