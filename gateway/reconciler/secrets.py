"""The Secrets DataPlanes reference, and only those: one watch per referenced Secret.

The gateway never lists or caches the Secrets of a namespace, let alone of the cluster: memory
follows the DataPlanes, never the other Secrets stored next to them. A Secret gets a watch
(list + watch with `fieldSelector=metadata.name=<name>`) when the first DataPlane names it and
loses it when the last one stops naming it. Each watch holds one connection of the client's
pool, so at most `limit` Secrets are watched; beyond that, and until a new watch has listed, a
Secret is read with a GET whenever its DataPlane is reconciled (the periodic resync re-reads
it). This module must never read a Secret no DataPlane names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gateway.reconciler.informer import ChangeHandler, Informer
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.store import Store
from kubeobject import KubeObject, ObjectRef
from protocol.backoff import BackoffPolicy

log = structlog.get_logger("gateway.reconciler.secrets")


@dataclass
class _Watch:
    store: Store
    informer: Informer
    task: asyncio.Task[None]


class SecretWatches:
    """Watches of the referenced Secrets, started and stopped as references come and go."""

    def __init__(
        self,
        api: KubeApi,
        on_change: ChangeHandler,
        *,
        limit: int,
        backoff: BackoffPolicy,
        metrics: ReconcilerMetrics,
    ) -> None:
        self._api = api
        self._on_change = on_change
        self._limit = limit
        self._backoff = backoff
        self._metrics = metrics
        self._watches: dict[ObjectRef, _Watch] = {}
        self._unwatched: set[ObjectRef] = set()
        """Referenced beyond the limit: read on every reconcile instead."""

    def __len__(self) -> int:
        return len(self._watches)

    def watched(self) -> set[ObjectRef]:
        return set(self._watches)

    def cached(self) -> int:
        """Secrets held in memory (at most one per watch)."""
        return sum(len(watch.store) for watch in self._watches.values())

    def referenced(self, refs: set[ObjectRef]) -> None:
        """Make the watched Secrets follow `refs`, every Secret some DataPlane names now."""
        for gone in (self._watches.keys() | self._unwatched) - refs:
            self._stop(gone)
        for ref in sorted(refs - self._watches.keys()):
            if len(self._watches) >= self._limit:
                if ref not in self._unwatched:
                    self._unwatched.add(ref)
                    log.warning(
                        "secret not watched: the limit of watches is reached",
                        secret=str(ref),
                        limit=self._limit,
                    )
                continue
            self._unwatched.discard(ref)
            self._start(ref)
        self._metrics.secret_watches.set(len(self._watches))
        self._metrics.secrets_unwatched.set(len(self._unwatched))

    async def get(self, ref: ObjectRef) -> KubeObject | None:
        """The Secret as last seen by its watch, or read now if it has none (yet)."""
        watch = self._watches.get(ref)
        if watch is not None and watch.informer.synced.is_set():
            return watch.store.get(ref)
        return await self._api.get_secret(ref.namespace, ref.name)

    async def stop(self) -> None:
        tasks = [watch.task for watch in self._watches.values()]
        self._watches.clear()
        self._unwatched.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start(self, ref: ObjectRef) -> None:
        store = Store()
        informer = Informer(
            self._api.secret(ref.namespace, ref.name),
            store,
            self._on_change,
            backoff=self._backoff,
            metrics=self._metrics,
        )
        task = asyncio.create_task(informer.run(), name=f"secret-watch {ref}")
        task.add_done_callback(_log_end(ref))
        self._watches[ref] = _Watch(store, informer, task)

    def _stop(self, ref: ObjectRef) -> None:
        self._unwatched.discard(ref)
        watch = self._watches.pop(ref, None)
        if watch is not None:
            watch.task.cancel()


def _log_end(ref: ObjectRef) -> Callable[[asyncio.Task[None]], None]:
    def ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("secret watch ended", secret=str(ref), error=repr(task.exception()))

    return ended
