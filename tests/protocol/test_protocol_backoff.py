"""The one backoff formula: what the reconciler's retries draw (the agent's reconnects, built on
the same `Backoff`, are pinned in tests/agent/test_agent_units.py)."""

from __future__ import annotations

import pytest

from protocol.backoff import Backoff, BackoffPolicy


def test_the_policy_draws_full_jitter_below_a_doubling_ceiling() -> None:
    policy = BackoffPolicy(base=0.5, cap=30.0)
    assert [policy.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert policy.delay(0, random=lambda: 0.0) == 0.0  # an immediate retry is possible
    assert policy.delay(3, random=lambda: 0.25) == 1.0  # a quarter of the 4 s ceiling
    assert policy.delay(10_000, random=lambda: 0.5) == 15.0  # half of the cap


def test_the_default_draws_spread_over_the_whole_ceiling() -> None:
    policy = BackoffPolicy(base=2.0, cap=2.0)
    delays = [policy.delay(0) for _ in range(1000)]
    assert 0.0 <= min(delays) < 0.2  # not equal jitter: no floor at half the ceiling
    assert 1.8 < max(delays) < 2.0


def test_the_generator_counts_failures_of_its_policy() -> None:
    backoff = Backoff(BackoffPolicy(base=1.0, cap=4.0), random=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert backoff.attempt == 4


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_policy_that_cannot_back_off_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        BackoffPolicy(base=base, cap=cap)
