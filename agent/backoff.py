"""Reconnect delays: exponential backoff with full jitter. Pure: no clock, no sleeping.

The ceiling doubles with every failed attempt, from `base` up to `cap`; the delay is drawn
uniformly in [0, ceiling) ("full jitter"), so a thousand agents that lost the same gateway at
the same instant spread their returns over the whole ceiling instead of arriving together.
The caller resets the attempt counter when the reason to back off is gone (see `agent.app`).
A gateway that asks for a delay (`Retry-After`) gets it, within bounds (`retry_after`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

_SYSTEM_RANDOM = secrets.SystemRandom()


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

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        ceiling = self.ceiling(self.attempt)
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
