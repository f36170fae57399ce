"""Keys to reconcile: each key handled by one worker at a time, different keys in parallel.

The semantics of client-go's workqueue: a key added while queued is queued once; a key added
while it is being handled is handled again afterwards (never twice at once). So the queue holds
at most one entry per distinct key — its size is bounded by the number of objects, however fast
events arrive — and the last state of an object is always the one handled. A handler that
raises is retried after an exponential backoff; other keys carry on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog

from protocol.backoff import BackoffPolicy

K = TypeVar("K", bound=Hashable)

log = structlog.get_logger("gateway.reconciler.queue")


class WorkQueue(Generic[K]):
    def __init__(self, *, retry: BackoffPolicy) -> None:
        self._retry = retry
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.Handle]] = {}
        """Per key, when its pending add is due and its timer (uvloop's handle of a timer due
        within half a millisecond has no `when()`)."""
        self._failures: dict[K, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return self._queue.qsize()

    def add(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        self._idle.clear()
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: K, seconds: float) -> None:
        """Add `key` in `seconds` (an earlier pending add for the key wins)."""
        if seconds <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + seconds
        pending = self._timers.get(key)
        if pending is not None:
            due, timer = pending
            if due <= when:
                return
            timer.cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def run(self, handler: Callable[[K], Awaitable[None]], *, workers: int) -> None:
        """Handle keys with `workers` concurrent workers until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(workers):
                    group.create_task(self._work(handler), name=f"reconcile-worker-{number}")
        finally:
            for _, timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    async def _work(self, handler: Callable[[K], Awaitable[None]]) -> None:
        while True:
            key = await self._queue.get()
            self._dirty.discard(key)
            self._processing.add(key)
            try:
                await handler(key)
            except Exception:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                wait = self._retry.delay(failures - 1)
                log.exception("reconcile failed", key=str(key), retry_in=round(wait, 3))
                self.add_after(key, wait)
            else:
                self._failures.pop(key, None)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._queue.put_nowait(key)
                elif not self._dirty and not self._processing:
                    self._idle.set()

    async def wait_idle(self) -> None:
        """Until no key is queued or being handled (delayed adds not counted)."""
        await self._idle.wait()
