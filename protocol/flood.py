"""Token buckets that bound how much useless work a peer may cause (SPEC §9.1).

A bucket holds up to ``burst`` tokens and regains ``rate`` tokens per second of a clock it is
told about (:meth:`TokenBucket.advance`); each counted event takes one token, and an event
that finds the bucket empty is refused. The core never reads a clock: the I/O layer passes
the time with each received message, so tests drive time exactly and a connection that is
never told the time simply never refills.

It never decides what an event is or what a refusal means: the connection does.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``burst`` events at once, refilled at ``rate`` per second."""

    __slots__ = ("_now", "burst", "name", "rate", "tokens")

    def __init__(self, name: str, burst: int, rate: float) -> None:
        self.name = name
        """Prefix of the two settings that configure it (``<name>_burst``, ``<name>_rate``)."""
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self._now: float | None = None

    def advance(self, now: float) -> None:
        """Refill for the time since the last call (a clock going backwards refills nothing)."""
        last = self._now
        self._now = now
        if last is not None and now > last:
            self.tokens = min(float(self.burst), self.tokens + (now - last) * self.rate)

    def take(self) -> bool:
        """Spend one token; ``False`` (and nothing spent) when the bucket is empty."""
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def describe(self) -> str:
        """The bound, for the message of a peer that passed it."""
        return (
            f"more than {self.burst} at once ({self.name}_burst) "
            f"or {self.rate:g} per second ({self.name}_rate)"
        )
