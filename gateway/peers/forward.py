"""Forwarding a caller's request to a peer replica that holds a tunnel to its plane.

A replica without a tunnel to a plane, while a live peer has one (`PeerDirectory.holders`),
carries the caller's request to that peer's listener (`gateway.peers.listener`) over HTTP/1.1
and mTLS, with the same pool and proxy a direct plane uses (`kubeproxy`): a `PeerLink` per peer
is an `Upstream` that trusts only the peer CA and checks the peers' fixed name
(`certs.PEER_SERVER_NAME`, since pod addresses change), a `ConnectionPool` of kept-alive
connections, a `Proxy`, and `LocalStreams` that the caller endpoint relays exactly as it relays
a tunnel stream — streamed both ways, upgrades included, a caller's reset cancelling the
proxy's exchange and so aborting the connection the peer serves it on.

Bounds, as a direct plane's (`FORWARD_LIMITS`): `max_streams` requests open per peer (more are
refused, and the caller endpoint tries another peer), `buffer_bytes` per direction of a request
and `budget_bytes` in all of a peer's requests, `pool_max_idle` idle connections, a connect
deadline.

This module never accepts connections and never decides who may forward: the caller endpoint
has authenticated and authorized the caller before it asks for a peer.
"""

from __future__ import annotations

import asyncio
import random
from urllib.parse import urlsplit

import structlog

from certs import PEER_SERVER_NAME, PlaneRef
from gateway.interfaces import Replica
from gateway.peers.directory import PeerDirectory
from gateway.peers.settings import PeerSettings
from http1 import TO_PEER
from kubeproxy import (
    LocalLimits,
    LocalProxy,
    LocalStream,
    ProxyMetrics,
    TLSSettings,
    Upstream,
    UpstreamConfigError,
    UpstreamError,
)
from protocol import Headers

log = structlog.get_logger("gateway.peers.forward")


class PeerAnswerError(Exception):
    """A peer answered a request for one of its documents, but not with the document."""


FORWARD_LIMITS = LocalLimits(connect_timeout=3.0, upstream_http2=False)
"""How this replica forwards to each peer: a direct plane's bounds, and a peer that takes over
3 s to connect to is skipped for the request. HTTP/1.1 only: the peer listener's contract
(`http1.forwarding.FROM_PEER`) is an HTTP/1.1 head."""


class PeerCertificatesError(ValueError):
    """The peer certificate, key or CA cannot be read or used (at start: a bad flag)."""


def peer_tls(settings: PeerSettings) -> TLSSettings:
    """The forwarding client's TLS: the peer CA alone, this replica's peer certificate.
    Raises PeerCertificatesError when the files cannot make a context."""
    try:
        tls = TLSSettings(
            ca_data=settings.ca.read_bytes(),
            ca_file=None,
            client_cert_pem=settings.certificate.read_bytes(),
            client_key_pem=settings.key.read_bytes(),
        )
        tls.context()  # fail now, at start, if they are unusable
    except (OSError, UpstreamConfigError) as error:
        raise PeerCertificatesError(f"peer certificates: {error}") from None
    return tls


class PeerLink(LocalProxy):
    """One peer's listener: the pool and proxy this replica forwards through to it."""

    def __init__(self, replica_id: str, url: str, *, tls: TLSSettings, limits: LocalLimits):
        self.replica_id = replica_id
        self.url = url
        address = urlsplit(url)
        if address.scheme != "https" or address.hostname is None or address.port is None:
            raise UpstreamConfigError(f"peer {replica_id}: bad peer URL {url!r}")
        self._log = log.bind(peer=replica_id, url=url)
        upstream = Upstream(
            scheme="https",
            host=address.hostname,
            port=address.port,
            server_hostname=PEER_SERVER_NAME,
            tls=tls,
            source=f"peer replica {replica_id}",
        )
        metrics = ProxyMetrics(prefix="planelink_gateway_peer")
        super().__init__(upstream, limits=limits, metrics=metrics, logger=self._log, policy=TO_PEER)

    async def reachable(self) -> bool:
        """Whether a connection to the peer can be had now: an idle one, else a new one (kept
        idle for the request about to be opened). A peer that cannot be reached is logged."""
        if self.pool.idle:
            return True
        try:
            connection = await self.pool.acquire()
        except UpstreamError as error:
            self._log.warning("peer unreachable", kind=error.kind, error=error.message)
            return False
        self.pool.release(connection, reusable=True)
        return True

    def open_stream(
        self, *, method: str, path: str, headers: Headers, end_stream: bool, upgrade: bool
    ) -> LocalStream:
        """Start forwarding one request (`path`: the caller's `/planes/...` target). Raises
        StreamResetError(REFUSED_STREAM) past `max_streams`, or once closed."""
        return self.streams.open_stream(
            method=method, path=path, headers=headers, end_stream=end_stream, upgrade=upgrade
        )


class PeerForwarder:
    """The links to the live peers, made when a request first needs one and closed when the
    peer leaves (or moves to another URL): the caller endpoint's `Forwarder`."""

    def __init__(
        self,
        directory: PeerDirectory,
        settings: PeerSettings,
        *,
        limits: LocalLimits = FORWARD_LIMITS,
    ) -> None:
        self._directory = directory
        self._tls = peer_tls(settings)
        self._limits = limits
        self._links: dict[str, PeerLink] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._unsubscribe = directory.subscribe(self._prune)

    @property
    def own_id(self) -> str:
        return self._directory.own_id

    def peers_for(self, plane: PlaneRef) -> list[PeerLink]:
        """Links to the peers holding a tunnel to `plane`, the least busy first (ties in a
        random order, so that forwarded load spreads)."""
        links = [link for peer in self._directory.holders(plane) if (link := self._link(peer))]
        random.shuffle(links)
        return sorted(links, key=lambda link: link.streams.open)

    def links(self) -> list[PeerLink]:
        return list(self._links.values())

    async def fetch(self, peer: Replica, path: str, *, body_limit: int) -> bytes:
        """GET one of `peer`'s own documents (`/peer/v1/...`) over the link forwarded requests
        take: the body of its 200. Raises UpstreamError or UpstreamConfigError when the peer
        cannot be reached, PeerAnswerError for another status or more than `body_limit` bytes."""
        link = self._link(peer)
        if link is None:
            raise UpstreamConfigError(f"peer {peer.id}: no usable peer URL")
        status, body = await link.proxy.fetch(path, body_limit=body_limit + 1)
        if status != 200:
            raise PeerAnswerError(f"peer {peer.id} answered {path} with {status}")
        if len(body) > body_limit:
            raise PeerAnswerError(f"peer {peer.id} answered {path} with over {body_limit} bytes")
        return body

    async def stop(self) -> None:
        self._unsubscribe()
        for link in list(self._links.values()):
            self._close(link, "gateway stopping")
        self._links.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _link(self, peer: Replica) -> PeerLink | None:
        link = self._links.get(peer.id)
        if link is not None and link.url == peer.peer_url:
            return link
        if link is not None:
            self._close(link, "the peer moved")
        try:
            link = PeerLink(peer.id, peer.peer_url, tls=self._tls, limits=self._limits)
        except UpstreamConfigError as error:
            log.warning("cannot forward to peer", peer=peer.id, error=str(error))
            self._links.pop(peer.id, None)
            return None
        self._links[peer.id] = link
        return link

    def _prune(self) -> None:
        live = set(self._directory.live_ids())
        for replica_id in [key for key in self._links if key not in live]:
            self._close(self._links.pop(replica_id), "the peer left")

    def _close(self, link: PeerLink, reason: str) -> None:
        handlers = link.close(reason)
        if handlers:
            closing = asyncio.create_task(_gathered(handlers), name=f"peer-close-{link.replica_id}")
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)


async def _gathered(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def peer_url(host: str, port: int) -> str:
    """The URL peers dial to reach a listener on `host` and `port`."""
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}"
