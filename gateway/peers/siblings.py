"""The other workers of this gateway, asked for their own operator documents.

The workers of one gateway (`--workers N`) are replicas with the same `host`. The worker that
answers an operator's /planes or /metrics asks each sibling for its own document over the peer
link (`GET /peer/v1/planes`, `/peer/v1/metrics`, served by `gateway.peers.listener`), all at
once and under one deadline, and merges them with its own (`gateway.peers.merge`). A sibling
that does not answer in time, or answers nonsense, is reported as missing — never waited on.
With no siblings (one process) the documents are exactly this replica's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.interfaces import Replica
from gateway.peers.directory import PeerDirectory
from gateway.peers.forward import PeerForwarder
from gateway.peers.listener import METRICS_PATH, PLANES_PATH
from gateway.peers.merge import MergeError, merge_metrics, merge_planes

log = structlog.get_logger("gateway.peers.siblings")

PeerFetch = Callable[[Replica, str], Awaitable[bytes]]
"""GET `path` from a replica's peer listener: the body of a 200, else an exception."""

DOCUMENT_LIMIT = 8 * 1024 * 1024
"""Bytes of a sibling's document at most (its metrics with per-agent gauges are the largest)."""


def peer_fetch(forwarder: PeerForwarder) -> PeerFetch:
    """Fetch siblings' documents over the links forwarded requests take."""

    async def fetch(replica: Replica, path: str) -> bytes:
        return await forwarder.fetch(replica, path, body_limit=DOCUMENT_LIMIT)

    return fetch


@dataclass(frozen=True)
class Gathered:
    answers: dict[str, bytes]
    """Each sibling that answered in time: its replica id and its document."""
    missing: tuple[str, ...]


@dataclass(frozen=True)
class Siblings:
    """This replica's view of the whole gateway it is a worker of."""

    directory: PeerDirectory
    fetch: PeerFetch
    deadline: float = 2.0
    """Seconds a sibling gets to answer; operators scrape every few seconds."""
    max_concurrent: int = 4
    """Gatherings at once: each asks every sibling, so a flood of operator requests must not
    become a flood of peer requests. One that finds no room within `deadline` reports every
    sibling missing."""
    _room: asyncio.Semaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_room", asyncio.Semaphore(self.max_concurrent))

    def members(self) -> list[Replica]:
        """The live siblings that can be asked (same host, a peer listener)."""
        host = self.directory.host
        return [peer for peer in self.directory.peers() if peer.host == host and peer.peer_url]

    async def gather(self, path: str) -> Gathered:
        members = self.members()
        if not members:
            return Gathered({}, ())
        try:
            async with asyncio.timeout(self.deadline):
                await self._room.acquire()
        except TimeoutError:
            log.warning("too many operator requests at once: siblings not asked", path=path)
            return Gathered({}, tuple(member.id for member in members))
        try:
            results = await asyncio.gather(
                *(self._ask(member, path) for member in members), return_exceptions=True
            )
        finally:
            self._room.release()
        answers: dict[str, bytes] = {}
        missing: list[str] = []
        for member, result in zip(members, results, strict=True):
            if isinstance(result, bytes):
                answers[member.id] = result
                continue
            missing.append(member.id)
            log.warning(
                "worker did not answer",
                replica=self.directory.own_id,
                worker=member.id,
                path=path,
                error=str(result) or type(result).__name__,
            )
        return Gathered(answers, tuple(missing))

    async def _ask(self, member: Replica, path: str) -> bytes:
        async with asyncio.timeout(self.deadline):
            return await self.fetch(member, path)

    async def planes(self, own: dict[str, Any]) -> dict[str, Any]:
        """The whole gateway's /planes, from this replica's own and its siblings'."""
        gathered = await self.gather(PLANES_PATH)
        if not gathered.answers and not gathered.missing:
            return own
        reports: dict[str, dict[str, Any]] = {self.directory.own_id: own}
        missing = list(gathered.missing)
        for replica_id, body in gathered.answers.items():
            try:
                document = json.loads(body)
                merge_planes({replica_id: document}, answering=replica_id)  # checks its shape
            except (ValueError, MergeError) as error:
                log.warning("worker's planes unreadable", worker=replica_id, error=str(error))
                missing.append(replica_id)
                continue
            reports[replica_id] = document
        return merge_planes(reports, answering=self.directory.own_id, missing=missing)

    async def metrics(self, own: bytes) -> bytes:
        """The whole gateway's /metrics, from this replica's own and its siblings'."""
        gathered = await self.gather(METRICS_PATH)
        if not gathered.answers and not gathered.missing:
            return own
        texts = {self.directory.own_id: own.decode()}
        missing = list(gathered.missing)
        for replica_id, body in gathered.answers.items():
            try:
                text = body.decode()
                merge_metrics({replica_id: text})  # checks that it parses
            except (UnicodeDecodeError, MergeError) as error:
                log.warning("worker's metrics unreadable", worker=replica_id, error=str(error))
                missing.append(replica_id)
                continue
            texts[replica_id] = text
        return merge_metrics(texts, missing=missing)
