"""Bounded waits for tests: every budget scales with one factor, read once.

A test gives something a budget to happen in (a response, a reconnect, a process exit); on a
loaded CI machine everything is slower, so `PLANELINK_TEST_TIMEOUT_FACTOR` (default 1)
multiplies every such budget. Each budget goes through `scaled()`, directly or through the
helpers here: `within()` for a block, `wait_for()` for one awaitable, `eventually()` for state
that no event announces (without an event loop: `envtest.wait_until(..., timeout=scaled(N))`).
Await an event when there is one; poll only when there is none.

Scale budgets, never the behaviour a test is about: a sleep that is itself the case (a reader
that is slow on purpose, a connection returned late) stays as it is, and a deadline the code
under test is given is scaled only where the test then allows it the same margin.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from envtest.factor import read_factor

T = TypeVar("T")

FACTOR_VARIABLE = "PLANELINK_TEST_TIMEOUT_FACTOR"
FACTOR = read_factor(os.environ, FACTOR_VARIABLE)
"""This run's factor, read once when the kit is first imported."""


def scaled(seconds: float) -> float:
    """`seconds` of budget, scaled by this run's factor."""
    return seconds * FACTOR


def kubectl_timeout(seconds: float) -> str:
    """`seconds` scaled, in whole seconds as kubectl's `--timeout` and `--request-timeout`
    want them ("60s")."""
    return f"{math.ceil(scaled(seconds))}s"


def within(seconds: float) -> asyncio.Timeout:
    """`async with within(10):` fails the block with TimeoutError after 10 s (scaled)."""
    return asyncio.timeout(scaled(seconds))


async def wait_for(awaitable: Awaitable[T], seconds: float = 10.0) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds` (scaled): `asyncio.wait_for`
    with a scaled budget."""
    return await asyncio.wait_for(awaitable, scaled(seconds))


Predicate = Callable[[], bool] | Callable[[], Awaitable[bool]]


async def eventually(
    predicate: Predicate, *, within: float, interval: float = 0.01, message: str
) -> None:
    """Return once `predicate()` (plain or async) holds, checking every `interval` seconds;
    fail the test with `message` if it still does not after `within` seconds (scaled).

    For state that nothing announces; where an event or a queue says it, await that instead.
    """
    budget = scaled(within)
    deadline = time.monotonic() + budget
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} (still not so after {budget:g} s)")
        await asyncio.sleep(interval)


def bench_environment() -> dict[str, str]:
    """The environment of a `python -m bench` run a test starts: the harness's own wait
    budgets (`bench.processes.budget`) stretched by this run's factor."""
    return {**os.environ, "PLANELINK_BENCH_WAIT_FACTOR": repr(FACTOR)}
