"""The test kit's waits: the factor is validated and applied to every budget, and each wait
fails when its budget is spent."""

from __future__ import annotations

import asyncio

import pytest

from envtest.factor import read_factor
from tests.kit import waits
from tests.kit.waits import (
    FACTOR_VARIABLE,
    bench_environment,
    eventually,
    scaled,
    wait_for,
    within,
)


@pytest.mark.parametrize(
    ("environ", "factor"),
    [
        ({}, 1.0),
        ({FACTOR_VARIABLE: ""}, 1.0),
        ({FACTOR_VARIABLE: "2"}, 2.0),
        ({FACTOR_VARIABLE: " 0.5 "}, 0.5),
    ],
)
def test_the_factor_is_read_from_the_environment(environ: dict[str, str], factor: float) -> None:
    assert read_factor(environ, FACTOR_VARIABLE) == factor


@pytest.mark.parametrize("raw", ["two", "0", "-1", "inf", "nan"])
def test_a_factor_that_is_not_a_positive_number_is_refused_by_name(raw: str) -> None:
    with pytest.raises(ValueError, match=FACTOR_VARIABLE):
        read_factor({FACTOR_VARIABLE: raw}, FACTOR_VARIABLE)


@pytest.fixture
def factor(monkeypatch: pytest.MonkeyPatch) -> float:
    """A factor of 3 for this test (the kit read the real one once, at import)."""
    monkeypatch.setattr(waits, "FACTOR", 3.0)
    return 3.0


def test_scaled_multiplies_by_the_factor(factor: float) -> None:
    assert scaled(2.0) == 2.0 * factor


async def test_within_sets_a_scaled_deadline(factor: float) -> None:
    loop = asyncio.get_running_loop()
    before = loop.time()
    timeout = within(2.0)
    when = timeout.when()
    assert when is not None
    assert before + 2.0 * factor <= when <= loop.time() + 2.0 * factor


async def test_within_fails_the_block_when_its_budget_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waits, "FACTOR", 0.001)
    with pytest.raises(TimeoutError):
        async with within(1.0):
            await asyncio.Event().wait()


async def test_wait_for_returns_the_result_or_fails_after_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await wait_for(asyncio.sleep(0, result="done"), 1.0) == "done"
    monkeypatch.setattr(waits, "FACTOR", 0.001)
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.Event().wait(), 1.0)


async def test_eventually_returns_once_a_plain_predicate_holds() -> None:
    calls = 0

    def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    await eventually(third_time, within=5.0, interval=0, message="never the third call")
    assert calls == 3


async def test_eventually_awaits_an_async_predicate() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_soon(flag.set)

    async def flag_is_set() -> bool:
        return flag.is_set()

    await eventually(flag_is_set, within=5.0, message="the flag was never set")
    assert flag.is_set()


async def test_eventually_fails_with_the_message_after_its_scaled_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waits, "FACTOR", 0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(
        AssertionError, match=r"the door never opened \(still not so after 0.01 s\)"
    ):
        await eventually(lambda: False, within=1.0, message="the door never opened")
    assert loop.time() - started >= 0.01


def test_a_bench_run_waits_by_the_same_factor(factor: float) -> None:
    assert float(bench_environment()["PLANELINK_BENCH_WAIT_FACTOR"]) == factor
