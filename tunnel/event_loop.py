"""Which event loop a gateway or agent process runs: asyncio's own, or uvloop.

uvloop (libuv, its transports and TLS layer written in C) is a drop-in asyncio loop: the same
protocols and transports run on either, and the tests run under both
(PLANELINK_TEST_EVENT_LOOP=uvloop). `asyncio` and `uvloop` choose; `auto` is the default's
choice, asyncio's loop today. Side by side (bench/README.md, issue #15), uvloop took 15-25 % less
CPU per request at concurrency 1 and with aiohttp at 64, but none with HTTP/2 or a Go client.
It also holds ~2.5 MiB more at rest in each process, which takes the gateway past its
resting-memory target.

One difference a process notices: asyncio's TLS read buffer is `--tls-read-buffer`
(`tunnel.tls`), uvloop's is its own (256 KiB per connection, allocated but not zero-filled, so
only what reads touch is resident).
"""

from __future__ import annotations

import asyncio
import importlib.util
import platform
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any, TypeVar

import structlog

EVENT_LOOPS = ("auto", "asyncio", "uvloop")
"""The choices of `--event-loop`."""

_T = TypeVar("_T")

log = structlog.get_logger("planelink.event_loop")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


AUTO = "asyncio"
"""What `auto` runs (see above for why)."""


def chosen_loop(choice: str) -> str:
    """The loop `choice` (one of `EVENT_LOOPS`) runs: "asyncio" or "uvloop"; ValueError if it
    is uvloop and uvloop is not installed."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"no event loop {choice!r}: one of {', '.join(EVENT_LOOPS)}")
    loop = AUTO if choice == "auto" else choice
    if loop == "uvloop" and not uvloop_installed():
        raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)")
    return loop


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes a loop of kind `loop` ("asyncio" or "uvloop"); None: asyncio's default."""
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 - optional: only a process that runs it imports it

        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, _T], *, event_loop: str = "auto") -> _T:
    """`asyncio.run(main)` on the loop `event_loop` chooses; logs which one runs (ValueError,
    before anything runs, if the choice cannot be honoured)."""
    try:
        loop = chosen_loop(event_loop)
    except ValueError:
        main.close()
        raise
    log.info("event loop", event_loop=loop, version=loop_version(loop))
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)


def loop_version(loop: str) -> str:
    """The version of the loop's implementation: uvloop's, or Python's for asyncio."""
    if loop == "uvloop":
        return metadata.version("uvloop")
    return platform.python_version()


def running_loop() -> str:
    """ "uvloop" or "asyncio": the kind of the loop running this code ("none" outside one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "none"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
