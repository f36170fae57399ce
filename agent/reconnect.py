"""The agent's reconnect policy: how long it waits before it dials the gateway again.
Pure: no clock, no sleeping.

Delays come from `protocol.backoff` (exponential, full jitter), so a thousand agents that lost
the same gateway at the same instant spread their returns. `Reconnect` decides with two
`Backoff`s: failed dials back off on `dials`, which starts over once a tunnel is set up (the
gateway works again: a restarted gateway gets its agents back within a second or two, however
often it restarts); tunnels that end back off on `tunnels`, which starts
over only after a tunnel stayed up `reset_after` seconds — the guard against a gateway that
accepts and drops at once, which must not be hammered. For `reset_after` seconds (of delays)
after a tunnel ended, failed dials are retried at least every 4 bases (`PROMPT_ATTEMPT`): a
gateway that just restarted refuses connections for a few seconds, and an agent whose
exponential ceiling grew meanwhile must not then sit out up to `cap` (a refused dial costs the
gateway nothing). A gateway that asks for a delay (`Retry-After`, e.g. while it is starting)
gets it, within bounds.
"""

from __future__ import annotations

from collections.abc import Callable

from protocol.backoff import Backoff, BackoffPolicy

PROMPT_ATTEMPT = 2
"""Soon after a tunnel ended, the dial ceiling grows no further than after this many failures
(4 bases); afterwards it grows on from there."""


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
        policy = BackoffPolicy(base=base, cap=cap)
        self.dials = Backoff(policy, random=random)
        """Delays after failed dials; starts over once a tunnel is set up."""
        self.tunnels = Backoff(policy, random=random)
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
