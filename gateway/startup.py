"""Whether the gateway knows its planes yet.

Until every source of trust has loaded once (the planes file is read before the listeners open;
the DataPlane reconciler lists and resolves its DataPlanes after), a plane this gateway does not
know may well exist. In that window nobody may be told "unknown plane": callers get 503 with a
short `Retry-After`, agents an HTTP 503 with `Retry-After` and the rejection `Starting`, and
/readyz says not ready. Then, for `agents_return_within` seconds, agents are still coming
back: a plane without one is told to retry just as soon (`agents_returning`), not after the
usual no-agent delay. This module only holds that state; it never decides who is accepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("gateway.startup")


class StartupGate:
    """Names the trust sources still loading; `starting` is None once none is."""

    def __init__(
        self,
        *,
        retry_after: int = 1,
        agents_return_within: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_after = retry_after
        """Seconds callers and agents are told to wait while the gateway starts."""
        self.agents_return_within = agents_return_within
        self._clock = clock
        self._pending: list[str] = []
        self._loaded_at = clock()

    @property
    def starting(self) -> str | None:
        """Why the gateway cannot yet say which planes exist, or None when it can."""
        if not self._pending:
            return None
        return f"the gateway is starting: {', '.join(self._pending)} not loaded yet"

    def wait_for(self, source: str) -> None:
        """`source` (e.g. "DataPlanes") must load before the gateway knows its planes."""
        if source not in self._pending:
            self._pending.append(source)

    def loaded(self, source: str) -> None:
        if source in self._pending:
            self._pending.remove(source)
            self._loaded_at = self._clock()
            log.info("trust source loaded", source=source, still_loading=list(self._pending))

    @property
    def agents_returning(self) -> bool:
        """Starting, or started so recently that the agents of a restarted gateway are still
        dialing back in (each within a second or two)."""
        return bool(self._pending) or self._clock() - self._loaded_at < self.agents_return_within
