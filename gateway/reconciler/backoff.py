"""Delays between attempts: exponential with full jitter, so restarting replicas spread out."""

from __future__ import annotations

import random

from gateway.reconciler.settings import Backoff


def delay(backoff: Backoff, attempt: int) -> float:
    """Seconds to wait before attempt number `attempt + 1` (`attempt` failures so far)."""
    ceiling = min(backoff.maximum, backoff.initial * 2 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
