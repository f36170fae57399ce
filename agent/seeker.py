"""The seeker: dials the gateway's address again while some live replica has no tunnel.

The gateway's replicas sit behind one address (a load balancer), so the agent cannot choose
which one a dial reaches: it dials, reads the HELLO's `gateway-id`, and keeps the tunnel if it
landed on a replica it does not hold yet. A tunnel that landed on a replica already held is
drained and closed at once (logged and counted), and the seeker pauses with full jitter
(`protocol.backoff`), the ceiling growing while dials keep landing on held replicas (a load
balancer that sticks to one replica is not hammered) and starting over when one lands on a new
replica. Failed dials back off the same way (a `Retry-After` is honoured).

Bounds: at most one dial in flight; at most `max_tunnels` tunnels; no dial for a replica no
tunnel's gateway names any more; every phase under a deadline (the dial's open timeout, then
`hello_timeout` for the HELLO).

A replica announced while the agent runs is first dialled after a random pause of up to
`join_spread` (every agent of a fleet hears of a new replica in the same instant; dialling it
at once would look like a flood to its admission limits).

It runs while the agent holds at least one tunnel (the agent's own loop dials when it holds
none) and returns once it holds none and has no dial in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from random import random as random_fraction
from typing import Any

import structlog

from agent.dialer import DialFailed, GatewayRejected
from agent.metrics import AgentMetrics
from agent.tunnels import TunnelSet
from protocol import ErrorCode
from protocol.backoff import Backoff
from tunnel import SessionClosed, TunnelSession

OpenTunnel = Callable[[], Awaitable[tuple[TunnelSession, "asyncio.Task[str]"]]]
"""Dial and start a session (its HELLO not yet received); raises `DialFailed`."""
ServeTunnel = Callable[[TunnelSession, "asyncio.Task[str]"], Coroutine[Any, Any, None]]
"""Serve a held tunnel until it ends (the agent's stop drains it); releases it at the end."""


class Seeker:
    """Keeps one tunnel per live replica, beside the agent's own loop."""

    def __init__(
        self,
        *,
        tunnels: TunnelSet,
        open_tunnel: OpenTunnel,
        serve: ServeTunnel,
        backoff: Backoff,
        metrics: AgentMetrics,
        max_tunnels: int,
        hello_timeout: float,
        logger: structlog.stdlib.BoundLogger,
        join_spread: float = 0.0,
        random: Callable[[], float] = random_fraction,
    ) -> None:
        self._tunnels = tunnels
        self._open_tunnel = open_tunnel
        self._serve = serve
        self.backoff = backoff
        self._metrics = metrics
        self._max_tunnels = max_tunnels
        self._hello_timeout = hello_timeout
        self._join_spread = join_spread
        self._random = random
        self._log = logger
        self._serving: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Seek until `stop`, or until no tunnel is held."""
        announced: frozenset[str] = frozenset()
        while not stop.is_set() and len(self._tunnels):
            changed = self._tunnels.wait_for_change()
            missing = self._tunnels.missing()
            if not missing or len(self._tunnels) >= self._max_tunnels:
                announced = missing
                await first_of(changed, stop.wait())
                continue
            _close(changed)
            if missing - announced and self._join_spread > 0:
                # Newly announced: every agent heard of it in the same instant. Spread the
                # fleet's first dials over the window instead of flooding the new replica.
                announced = missing
                spread = self._random() * self._join_spread
                await first_of(stop.wait(), asyncio.sleep(spread), self._tunnels.wait_empty())
                continue
            announced = missing
            pause = await self._seek_once(missing)
            if pause is not None:
                await first_of(stop.wait(), asyncio.sleep(pause), self._tunnels.wait_empty())

    def cancel_served(self) -> None:
        """End every tunnel this seeker found now, without a drain (the agent is cancelled)."""
        for task in self._serving:
            task.cancel()

    async def wait_served(self) -> None:
        """Returns once every tunnel this seeker found has ended (they drain on `stop`)."""
        while self._serving:
            await asyncio.gather(*list(self._serving), return_exceptions=True)

    async def _seek_once(self, missing: frozenset[str]) -> float | None:
        """One dial; returns the pause before the next (None: go on at once)."""
        try:
            session, run = await self._open_tunnel()
        except DialFailed as failure:
            self._metrics.connect_failures.labels(failure.reason).inc()
            retry_after = failure.retry_after if isinstance(failure, GatewayRejected) else None
            pause = (
                self.backoff.retry_after(retry_after)
                if retry_after is not None
                else self.backoff.next_delay()
            )
            self._log.info(
                "dial for another replica failed",
                reason=failure.message,
                missing=sorted(missing),
                retry_in_seconds=round(pause, 3),
            )
            return pause
        try:
            return await self._judge(session, run, missing)
        except asyncio.CancelledError:
            session.close("the agent is stopping", ErrorCode.CANCEL)
            await asyncio.gather(run, return_exceptions=True)
            raise

    async def _judge(
        self, session: TunnelSession, run: asyncio.Task[str], missing: frozenset[str]
    ) -> float | None:
        """Keep the tunnel if it reached a replica not held yet, else close it."""
        try:
            async with asyncio.timeout(self._hello_timeout):
                await session.wait_ready()
        except (TimeoutError, SessionClosed) as error:
            session.close("no HELLO in time", ErrorCode.PROTOCOL_ERROR)
            await asyncio.gather(run, return_exceptions=True)
            self._metrics.connect_failures.labels("no_hello").inc()
            pause = self.backoff.next_delay()
            self._log.info(
                "dial for another replica got no HELLO",
                reason=str(error) or "timeout",
                retry_in_seconds=round(pause, 3),
            )
            return pause
        replica_id = self._tunnels.replica_of(session)
        if self._tunnels.claim(session) is None:
            assert replica_id is not None
            # A drain, not a close: a caller's request the gateway sent in the instant since
            # the HELLO still gets its answer (the gateway sends no more after the GOAWAY).
            session.drain(f"the agent holds a tunnel to replica {replica_id} already")
            try:
                await asyncio.wait_for(asyncio.shield(run), timeout=self._hello_timeout)
            except TimeoutError:
                session.close("drain of a duplicate tunnel timed out", ErrorCode.CANCEL)
                await asyncio.gather(run, return_exceptions=True)
            self._metrics.duplicate_dials.inc()
            pause = self.backoff.next_delay()
            self._log.info(
                "dial landed on a replica already held, closed",
                gateway_id=replica_id,
                missing=sorted(missing),
                attempt=self.backoff.attempt,
                retry_in_seconds=round(pause, 3),
            )
            return pause
        self.backoff.reset()
        task = asyncio.create_task(self._serve(session, run), name=f"tunnel-{replica_id}")
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        return None


async def first_of(*waits: Awaitable[object]) -> None:
    """Wait until the first of `waits` completes; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


def _close(wait: Coroutine[Any, Any, object]) -> None:
    wait.close()  # never awaited: no "coroutine was never awaited" warning
