"""`tunnel.deadline`: asyncio.timeout's behaviour, on one timer kept between blocks (`Deadline`)
or shared by many tasks (`DeadlineQueue`).

Waits scale with PLANELINK_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.kit.waits import scaled
from tunnel.deadline import Deadline, DeadlineQueue

SHORT = 0.05
"""A deadline the tests wait out: what they assert is which block it ends, not its length."""


async def test_a_block_that_outlasts_its_deadline_raises_timeout_error() -> None:
    deadline = Deadline()
    never = asyncio.Event()
    async with asyncio.timeout(scaled(10)):  # the test's own bound
        with pytest.raises(TimeoutError):
            async with deadline.within(SHORT):
                await never.wait()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the cancellation it used is taken back
    deadline.close()


async def test_a_block_that_ends_in_time_leaves_no_cancellation_behind() -> None:
    deadline = Deadline()
    loop = asyncio.get_running_loop()
    async with deadline.within(SHORT):
        pass
    # The timer of that block is still scheduled: it fires while no block runs, and the wait
    # below, which outlasts it, must not be cancelled.
    done = asyncio.Event()
    loop.call_later(4 * SHORT, done.set)
    async with asyncio.timeout(scaled(10)):
        await done.wait()
    deadline.close()


async def test_a_later_deadline_is_kept_when_an_earlier_timer_fires() -> None:
    deadline = Deadline()
    loop = asyncio.get_running_loop()
    async with deadline.within(SHORT):
        pass
    done = asyncio.Event()
    loop.call_later(4 * SHORT, done.set)  # after the first block's timer, well before 10 s
    async with asyncio.timeout(scaled(10)), deadline.within(scaled(10)):
        await done.wait()
    deadline.close()


async def test_an_earlier_deadline_than_the_scheduled_timer_still_ends_its_block() -> None:
    deadline = Deadline()
    async with deadline.within(3600):
        pass
    never = asyncio.Event()
    async with asyncio.timeout(scaled(10)):
        with pytest.raises(TimeoutError):
            async with deadline.within(SHORT):
                await never.wait()
    deadline.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadline = Deadline()
    entered = asyncio.Event()

    async def waits() -> None:
        async with deadline.within(3600):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits())
    async with asyncio.timeout(scaled(10)):
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    deadline.close()


async def test_blocks_do_not_nest() -> None:
    deadline = Deadline()
    async with deadline.within(3600):
        with pytest.raises(RuntimeError, match="nest"):
            async with deadline.within(1):
                pass
    deadline.close()


async def test_a_deadline_serves_block_after_block_and_each_may_expire() -> None:
    deadline = Deadline()
    never = asyncio.Event()
    async with asyncio.timeout(scaled(10)):
        for _ in range(3):
            async with deadline.within(3600):
                await asyncio.sleep(0)
            with pytest.raises(TimeoutError):
                async with deadline.within(SHORT):
                    await never.wait()
    deadline.close()


async def test_a_deadline_bound_to_its_task_serves_it_the_same_way() -> None:
    deadline = Deadline(asyncio.current_task())
    never = asyncio.Event()
    async with asyncio.timeout(scaled(10)):
        async with deadline.within(3600):
            await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with deadline.within(SHORT):
                await never.wait()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    deadline.close()


# -- DeadlineQueue ------------------------------------------------------------------------------


async def _block_waits(queue: DeadlineQueue, seconds: float, until: asyncio.Event) -> str:
    try:
        async with queue.within(seconds):
            await until.wait()
    except TimeoutError:
        return "timeout"
    return "done"


async def test_of_many_tasks_only_the_one_that_outlasts_its_deadline_times_out() -> None:
    queue = DeadlineQueue()
    done, never = asyncio.Event(), asyncio.Event()
    quick = [asyncio.create_task(_block_waits(queue, 3600, done)) for _ in range(5)]
    slow = asyncio.create_task(_block_waits(queue, SHORT, never))
    async with asyncio.timeout(scaled(10)):
        assert await slow == "timeout"
        done.set()
        assert await asyncio.gather(*quick) == ["done"] * 5
    queue.close()


async def test_a_block_keeps_its_whole_time_after_earlier_blocks_ended() -> None:
    queue = DeadlineQueue()
    loop = asyncio.get_running_loop()
    for _ in range(3):  # their deadlines come first, and pass while the next one runs
        async with queue.within(SHORT):
            pass
    done = asyncio.Event()
    loop.call_later(4 * SHORT, done.set)
    async with asyncio.timeout(scaled(10)):
        assert await _block_waits(queue, scaled(10), done) == "done"
    queue.close()


async def test_a_shorter_block_after_longer_ones_still_ends_in_time() -> None:
    queue = DeadlineQueue()
    waiting, never = asyncio.Event(), asyncio.Event()
    long = asyncio.create_task(_block_waits(queue, 3600, waiting))
    await asyncio.sleep(0)  # it is in its block
    async with asyncio.timeout(scaled(10)):
        assert await _block_waits(queue, SHORT, never) == "timeout"
        waiting.set()
        assert await long == "done"
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    queue.close()


async def test_a_cancellation_from_elsewhere_stays_one_in_a_queue_too() -> None:
    queue = DeadlineQueue()
    entered = asyncio.Event()

    async def waits() -> None:
        async with queue.within(3600):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(waits())
    async with asyncio.timeout(scaled(10)):
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    queue.close()
