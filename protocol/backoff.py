"""Delays between attempts: exponential backoff with full jitter, the one formula of planelink.

The ceiling doubles with every failed attempt, from `base` up to `cap`; the delay is drawn
uniformly in [0, ceiling) ("full jitter"), so a thousand agents that lost the same gateway, or
gateway replicas that lost the same control plane, spread their returns over the whole ceiling
instead of arriving together. `BackoffPolicy` is the setting (base and cap) and the formula;
`Backoff` is a generator of successive delays that counts the failures.

It lives in the bottom layer because the agent's reconnects and the reconciler's retries both
use it. Pure: it never reads a clock and never sleeps; callers wait.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

_SYSTEM_RANDOM = secrets.SystemRandom()
_DOUBLINGS = 64
"""Beyond this many failures the ceiling is the cap for any base (2**64 overflows nothing)."""


def system_random() -> float:
    """A float in [0, 1) from the system's generator: jitter that no peer can predict."""
    return _SYSTEM_RANDOM.random()


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class BackoffPolicy:
    """Delays `base * 2**n` seconds at most after n failures, never above `cap`."""

    base: float
    cap: float

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("backoff needs 0 < base <= cap")

    def ceiling(self, attempt: int) -> float:
        """The largest delay after `attempt` failures before (0-based)."""
        # Compare exponents rather than computing 2**attempt, which overflows a float.
        if attempt >= _DOUBLINGS or self.base * 2.0**attempt >= self.cap:
            return self.cap
        return self.base * 2.0**attempt

    def delay(self, attempt: int, *, random: Callable[[], float] = system_random) -> float:
        """The delay after `attempt` failures before: uniform below the ceiling."""
        return self.ceiling(attempt) * random()


class Backoff:
    """Successive delays of one `BackoffPolicy`, counting failures until `reset`.

    `random` returns a float in [0, 1); tests inject one, the default is the system's.
    """

    def __init__(self, policy: BackoffPolicy, *, random: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self._random = random or system_random
        self.attempt = 0
        """Failures counted so far."""

    def ceiling(self, attempt: int) -> float:
        return self.policy.ceiling(attempt)

    def next_delay(self, *, cap: float | None = None) -> float:
        """The delay before the next attempt (its ceiling lowered to `cap` if given); counts
        one more failure."""
        ceiling = self.policy.ceiling(self.attempt)
        if cap is not None:
            ceiling = min(ceiling, cap)
        self.attempt += 1
        return ceiling * self._random()

    def reset(self) -> None:
        """Start again from `base`."""
        self.attempt = 0

    def retry_after(self, seconds: float) -> float:
        """The delay when the peer said `Retry-After: seconds`: that long, at least `base`
        and at most `cap`, plus up to half again (jitter: peers told the same moment do not
        all return in the same instant). Counts no failure: the peer asked, nothing failed."""
        base, cap = self.policy.base, self.policy.cap
        wait = min(max(seconds, base), cap)
        return min(cap, wait * (1.0 + self._random() / 2))
