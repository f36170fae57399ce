"""Reconnect delays: exponential backoff with full jitter, and the agent's reconnect policy.
Pure: no clock, no sleeping.

The ceiling doubles with every failed attempt, from `base` up to `cap`; the delay is drawn
uniformly in [0, ceiling) ("full jitter"), so a thousand agents that lost the same gateway at
the same instant spread their returns over the whole ceiling instead of arriving together.
`Reconnect` decides with two of them: failed dials back off on `dials`, which starts over once
a tunnel is set up (the gateway works again: a restarted gateway gets its agents back within a
second or two, however often it restarts); tunnels that end back off on `tunnels`, which starts
over only after a tunnel stayed up `reset_after` seconds — the guard against a gateway that
accepts and drops at once, which must not be hammered. For `reset_after` seconds (of delays)
after a tunnel ended, failed dials are retried at least every 4 bases (`PROMPT_ATTEMPT`): a
gateway that just restarted refuses connections for a few seconds, and an agent whose
exponential ceiling grew meanwhile must not then sit out up to `cap` (a refused dial costs the
gateway nothing). A gateway that asks for a delay (`Retry-After`, e.g. while it is starting)
gets it, within bounds.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

_SYSTEM_RANDOM = secrets.SystemRandom()
PROMPT_ATTEMPT = 2
"""Soon after a tunnel ended, the dial ceiling grows no further than after this many failures
(4 bases); afterwards it grows on from there."""


class Backoff:
    """Delays for successive failed attempts.

    `random` returns a float in [0, 1); tests inject one, the default is the system's.
    """

    def __init__(
        self, *, base: float, cap: float, random: Callable[[], float] | None = None
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._random = random or _SYSTEM_RANDOM.random
        self.attempt = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay after `attempt` failures before (0-based)."""
        # Compare exponents rather than computing 2**attempt, which overflows a float.
        if attempt >= 64 or self.base * 2.0**attempt >= self.cap:
            return self.cap
        return self.base * 2.0**attempt

    def next_delay(self, *, cap: float | None = None) -> float:
        """The delay before the next attempt (its ceiling lowered to `cap` if given); counts
        one more failure."""
        ceiling = self.ceiling(self.attempt)
        if cap is not None:
            ceiling = min(ceiling, cap)
        self.attempt += 1
        return ceiling * self._random()

    def reset(self) -> None:
        """Start again from `base`."""
        self.attempt = 0

    def retry_after(self, seconds: float) -> float:
        """The delay when the gateway said `Retry-After: seconds`: that long, at least `base`
        and at most `cap`, plus up to half again (jitter: agents told the same moment by a
        starting gateway do not all return in the same instant). Counts no failure: the
        gateway asked, the agent did nothing wrong."""
        wait = min(max(seconds, self.base), self.cap)
        return min(self.cap, wait * (1.0 + self._random() / 2))


class Reconnect:
    """How long the agent waits before it dials again, whatever ended the last attempt."""

    def __init__(
        self,
        *,
        base: float,
        cap: float,
        reset_after: float,
        random: Callable[[], float] | None = None,
    ) -> None:
        self.dials = Backoff(base=base, cap=cap, random=random)
        """Delays after failed dials; starts over once a tunnel is set up."""
        self.tunnels = Backoff(base=base, cap=cap, random=random)
        """Delays after tunnels that ended; starts over after one that stayed up."""
        self.reset_after = reset_after
        self._prompt_for = 0.0
        """Seconds of delays left during which failed dials are retried promptly."""

    def tunnel_up(self) -> None:
        """The gateway accepted the agent: dial failures start afresh."""
        self.dials.reset()

    def after_tunnel(self, up_for: float) -> float:
        """The delay after a tunnel that was up `up_for` seconds."""
        if up_for >= self.reset_after:
            self.tunnels.reset()
        self._prompt_for = self.reset_after
        return self.tunnels.next_delay()

    def after_failed_dial(self, retry_after: float | None = None) -> float:
        """The delay after a dial that failed (`retry_after`: what the gateway asked for)."""
        if retry_after is not None:
            return self.dials.retry_after(retry_after)
        if self._prompt_for <= 0:
            return self.dials.next_delay()
        delay = self.dials.next_delay(cap=self.dials.ceiling(PROMPT_ATTEMPT))
        self.dials.attempt = min(self.dials.attempt, PROMPT_ATTEMPT + 1)
        self._prompt_for -= delay
        return delay
