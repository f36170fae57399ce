"""Deadlines that a task sets again and again, or many tasks set alike, on one timer.

`asyncio.timeout` makes a `Timeout` and schedules and cancels a `TimerHandle` each time; a loop
that sets a deadline per request or per write (a caller's HTTP/1.1 connection: idle, head and
request deadlines; the tunnel's write loop: one per message) pays that every time. A `Deadline`
belongs to one task and keeps a single timer: setting a later deadline only records the time
(the timer, when it fires early, looks again and sleeps on), and only a deadline earlier than
the scheduled timer reschedules it. So a busy connection schedules a timer once in a while, not
several times per request.

Many tasks that each set deadlines of one length (the streams of an HTTP/2 connection, an HTTP/2
proxy's requests) share a `DeadlineQueue` instead: one timer for all of them, as their deadlines
come in the order they were set.

Semantics are `asyncio.timeout`'s: when the deadline passes inside the block, the task is
cancelled, and the block raises `TimeoutError` (a cancellation from elsewhere stays a
cancellation). Blocks do not nest on one `Deadline`. `close()` drops the timer once the task is
done with it, so that it holds nothing until it would have fired.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

__all__ = ["Deadline", "DeadlineQueue"]


def _raise_if_timed_out(
    task: asyncio.Task[Any],
    cancelling: int,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
) -> None:
    """As `asyncio.timeout` leaves a block whose deadline cancelled `task`: the cancellation
    becomes TimeoutError, unless another cancellation came on top of the deadline's."""
    if (
        task.uncancel() <= cancelling
        and exc_type is not None
        and issubclass(exc_type, asyncio.CancelledError)
    ):
        raise TimeoutError from exc


class Deadline:
    """`async with deadline.within(seconds):` — as `asyncio.timeout(seconds)`, for the task
    that enters it, on a timer kept between blocks."""

    __slots__ = (
        "_bound",
        "_cancelling",
        "_expired",
        "_handle",
        "_loop",
        "_seconds",
        "_task",
        "_timer_at",
        "_when",
    )

    def __init__(self, task: asyncio.Task[Any] | None = None) -> None:
        """`task`: the only task that will enter it (spares looking it up at every block);
        None: whichever task enters it, one block at a time."""
        self._bound = task is not None
        self._task: asyncio.Task[Any] | None = task
        self._loop: asyncio.AbstractEventLoop | None = None if task is None else task.get_loop()
        self._handle: asyncio.Handle | None = None
        self._timer_at = 0.0
        """When `_handle` is due: uvloop's handle of a timer due at once has no `when()`."""
        self._when: float | None = None
        """The deadline of the block now running; None outside a block."""
        self._seconds = 0.0
        self._expired = False
        self._cancelling = 0

    def within(self, seconds: float) -> Deadline:
        """This deadline, for a block that must end within `seconds` of entering it."""
        self._seconds = seconds
        return self

    async def __aenter__(self) -> None:
        if self._when is not None:
            raise RuntimeError("a Deadline's blocks do not nest")
        if self._bound:
            task, loop = self._task, self._loop
            assert task is not None
            assert loop is not None
        else:
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("a Deadline is entered by a task")
            loop = self._loop
            if loop is None or self._task is not task:
                loop = self._loop = task.get_loop()
                self._task = task
        self._cancelling = task.cancelling()
        when = self._when = loop.time() + self._seconds
        handle = self._handle
        if handle is None or self._timer_at > when:
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(when, self._fire)
            self._timer_at = when

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._when = None
        if not self._expired:
            return
        self._expired = False
        assert self._task is not None
        _raise_if_timed_out(self._task, self._cancelling, exc_type, exc)

    def close(self) -> None:
        """Drop the timer (the task is done with this deadline; it may still be entered)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        assert self._loop is not None
        assert self._task is not None
        fired_at = self._timer_at if self._handle is not None else self._loop.time()
        self._handle = None
        when = self._when
        if when is None:
            return  # between blocks: the next one schedules a timer
        if when > fired_at:
            self._handle = self._loop.call_at(when, self._fire)  # a later block's deadline
            self._timer_at = when
            return
        self._expired = True
        self._task.cancel()


class DeadlineQueue:
    """Deadlines for many tasks at once (the streams of one connection, the requests of one
    proxy), on one timer: `async with queue.within(seconds):` is `asyncio.timeout(seconds)`.

    Blocks of one length end in the order they began, so the queue is a dict in insertion
    order: entering adds a block, leaving removes it, and the one timer is set for the first
    block still in it. A block whose deadline comes before the last one queued (a shorter
    length) gets a timer of its own. The queue holds only blocks being run."""

    __slots__ = ("_armed", "_handle", "_last_when", "_timer_at")

    def __init__(self) -> None:
        self._armed: dict[_Block, None] = {}
        self._handle: asyncio.Handle | None = None
        self._timer_at = 0.0  # when `_handle` is due (see `Deadline._timer_at`)
        self._last_when = 0.0

    def within(self, seconds: float) -> _Block:
        """A block that must end within `seconds` of entering it."""
        return _Block(self, seconds)

    def close(self) -> None:
        """Drop the timer (the blocks still running keep no deadline)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed.clear()

    def _arm(self, block: _Block, loop: asyncio.AbstractEventLoop) -> None:
        when = block.when
        if when < self._last_when:
            block.handle = loop.call_at(when, block.expire)  # out of order: a timer of its own
            return
        self._last_when = when
        self._armed[block] = None
        if self._handle is None:
            self._handle = loop.call_at(when, self._fire, loop)
            self._timer_at = when

    def _disarm(self, block: _Block) -> None:
        if block.handle is not None:
            block.handle.cancel()
            block.handle = None
            return
        # The timer stays: when it fires it finds the next block, or none and goes.
        self._armed.pop(block, None)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        fired_at = self._timer_at if self._handle is not None else loop.time()
        self._handle = None
        armed = self._armed
        while armed:
            block = next(iter(armed))
            if block.when > fired_at:
                self._handle = loop.call_at(block.when, self._fire, loop)
                self._timer_at = block.when
                return
            del armed[block]
            block.expire()


class _Block:
    """One `DeadlineQueue.within` block."""

    __slots__ = ("_cancelling", "_expired", "_queue", "_seconds", "_task", "handle", "when")

    def __init__(self, queue: DeadlineQueue, seconds: float) -> None:
        self._queue = queue
        self._seconds = seconds
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False
        self.when = 0.0
        self.handle: asyncio.Handle | None = None

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline is entered by a task")
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        self.when = loop.time() + self._seconds
        self._queue._arm(self, loop)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._queue._disarm(self)
        if not self._expired:
            return
        assert self._task is not None
        _raise_if_timed_out(self._task, self._cancelling, exc_type, exc)

    def expire(self) -> None:
        self.handle = None
        self._expired = True
        assert self._task is not None
        self._task.cancel()
