"""List, then watch from the list's resourceVersion, forever: one collection into a Store.

The loop (as kopf and client-go do it): list → replace the store → watch from the returned
`resourceVersion` with bookmarks → on a clean end, watch again from the last version seen →
on `410 Gone` (the version expired), list again → on any other failure, wait (exponential
backoff with full jitter, `protocol.backoff`) and start over. A handler that raises is logged
and the loop goes on: one object's failure never stops the watch. `synced` is set after the
first list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway.reconciler.errors import Gone, KubeError
from gateway.reconciler.kube import ListWatch, WatchEvent
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.store import Change, Store, resource_version
from kubeobject import ObjectRef
from protocol.backoff import BackoffPolicy

ChangeHandler = Callable[[Change], None]

_QUICK_END = 1.0
"""A watch that ends this soon without an event counts as a failure (no tight loop)."""


class Informer:
    def __init__(
        self,
        source: ListWatch,
        store: Store,
        on_change: ChangeHandler,
        *,
        backoff: BackoffPolicy,
        metrics: ReconcilerMetrics,
    ) -> None:
        self._source = source
        self._store = store
        self._on_change = on_change
        self._backoff = backoff
        self._metrics = metrics
        self._log = structlog.get_logger("gateway.reconciler.watch").bind(
            kind=source.kind, namespace=source.namespace or "*"
        )
        self.synced = asyncio.Event()
        self.resource_version: str | None = None
        """Where the next watch starts; None means list first."""

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                    failures = 0
                started, events = time.monotonic(), await self._watch()
                if events or time.monotonic() - started > _QUICK_END:
                    failures = 0
                    continue
                failures += 1
                self._restart("ended")
            except Gone as gone:
                self._log.info("watch expired, listing again", reason=gone.message)
                self.resource_version = None
                self._restart("expired")
                failures += 1
                if failures < 2:
                    continue
            except KubeError as error:
                self._log.warning("watch failed", error=str(error), attempt=failures + 1)
                self._restart(error.reason)
                failures += 1
            await asyncio.sleep(self._backoff.delay(failures - 1))

    async def _list(self) -> None:
        items, version = await self._source.list()
        for change in self._store.replace(items, namespace=self._source.namespace):
            self._deliver(change)
        self.resource_version = version
        self._log.debug("listed", count=len(items), resource_version=version)
        self.synced.set()

    async def _watch(self) -> int:
        assert self.resource_version is not None
        events = 0
        async for event in self._source.watch(self.resource_version):
            events += 1
            self._apply(event)
        return events

    def _apply(self, event: WatchEvent) -> None:
        version = resource_version(event.object)
        if event.type == "DELETED":
            change = self._store.delete(ObjectRef.of(event.object))
        elif event.type in ("ADDED", "MODIFIED"):
            change = self._store.upsert(event.object)
        else:  # BOOKMARK: only a newer version to resume from
            change = None
        if version:
            self.resource_version = version
        if change is not None:
            self._deliver(change)

    def _deliver(self, change: Change) -> None:
        try:
            self._on_change(change)
        except Exception:
            self._log.exception("change handler failed", object=str(change.key))

    def _restart(self, reason: str) -> None:
        self._metrics.watch_restarts.labels(kind=self._source.kind, reason=reason).inc()
