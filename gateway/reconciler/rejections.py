"""Agents rejected for a known DataPlane become Warning Events on it, without an API write per
retry.

The listener rejects agents in synchronous code, so a rejection is only *noted* here (`note`
never blocks and holds at most `limit` distinct plane/reason pairs); `run` writes them. For each
plane and reason at most one Event write happens per `interval`: rejections in between are
folded into the next write's count, so `kubectl describe` says how often an agent was turned
away while a misconfigured agent retrying every second costs one write per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from certs import PlaneRef
from gateway.reconciler.events import EventSpec

log = structlog.get_logger("gateway.reconciler.rejections")

REASON = "AgentRejected"
"""The Event reason; the rejection's own reason (`Untrusted`, `PlaneMismatch`…) leads the
message."""

Write = Callable[[PlaneRef, EventSpec, int], Awaitable[None]]
"""Records `EventSpec` on the plane's DataPlane as having happened `int` times."""


@dataclass
class _Pending:
    message: str
    times: int


class RejectionEvents:
    def __init__(
        self,
        write: Write,
        *,
        interval: float,
        limit: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._interval = interval
        self._limit = limit
        self._clock = clock
        self._pending: dict[tuple[PlaneRef, str], _Pending] = {}
        self._last_write: dict[tuple[PlaneRef, str], float] = {}
        self._wake = asyncio.Event()
        self.dropped = 0
        """Rejections not noted because `limit` pairs were already waiting."""

    def note(self, plane: PlaneRef, reason: str, message: str) -> None:
        """One more rejection of an agent of `plane`; the latest message is the one told."""
        key = (plane, reason)
        pending = self._pending.get(key)
        if pending is not None:
            pending.message = message
            pending.times += 1
        elif len(self._pending) < self._limit:
            self._pending[key] = _Pending(message, 1)
        else:
            self.dropped += 1
            return
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            for key in [k for k in self._pending if self._due(k) <= now]:
                pending = self._pending.pop(key)
                self._last_write[key] = now
                plane, reason = key
                event = EventSpec("Warning", REASON, f"{reason}: {pending.message}")
                try:
                    await self._write(plane, event, pending.times)
                except Exception:  # a bug in telling must not end the reconciler it runs in
                    log.exception("refusal event not written", plane=str(plane), reason=reason)
            # Pairs quiet for a whole interval need no memory: their next rejection is due at once.
            for key in [k for k, at in self._last_write.items() if at + self._interval <= now]:
                if key not in self._pending:
                    del self._last_write[key]
            if not self._pending:
                await self._wake.wait()
                continue
            wait = min(self._due(k) for k in self._pending) - self._clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await self._wake.wait()

    def _due(self, key: tuple[PlaneRef, str]) -> float:
        last = self._last_write.get(key)
        return float("-inf") if last is None else last + self._interval
