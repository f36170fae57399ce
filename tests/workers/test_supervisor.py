"""The supervisor alone (`planelink.supervisor`), with tiny Python programs for workers: a crash
loop makes it give up with exit 1, a stop reaches every worker (each told its index), and a
worker that ignores the stop is killed after the grace."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from planelink.supervisor import WORKER_INDEX_VARIABLE, Supervisor, SupervisorSettings
from protocol.backoff import BackoffPolicy
from tests.kit.waits import eventually, wait_for

FAST = BackoffPolicy(base=0.01, cap=0.02)


def worker(code: str, index: int, ready: Path) -> tuple[Sequence[str], dict[str, str]]:
    """A worker running `code`, then saying it is ready (a file named after its index holding
    the index it was given) and sleeping until a signal. The file appears whole, by a rename:
    a stop that came between its creation and its write would leave it empty."""
    partial = ready / f".{index}"
    program = "\n".join(
        [
            "import os, pathlib, signal, sys, time",
            code,
            f"pathlib.Path({str(partial)!r}).write_text(os.environ[{WORKER_INDEX_VARIABLE!r}])",
            f"os.replace({str(partial)!r}, {str(ready / str(index))!r})",
            "time.sleep(60)",
        ]
    )
    return [sys.executable, "-c", program], {WORKER_INDEX_VARIABLE: str(index)}


async def all_ready(ready: Path, workers: int) -> None:
    await eventually(
        lambda: len(told(ready)) == workers,
        within=30,
        message="the workers never became ready",
    )


def told(ready: Path) -> dict[str, str]:
    """Each ready worker's file name (its index) and the index its environment gave it."""
    return {
        path.name: path.read_text() for path in ready.iterdir() if not path.name.startswith(".")
    }


async def test_workers_that_keep_dying_make_it_give_up_with_exit_1() -> None:
    exits: list[int] = []
    supervisor = Supervisor(
        SupervisorSettings(workers=2, stop_grace=5, restart_backoff=FAST, max_restarts=3),
        lambda index: ([sys.executable, "-c", f"raise SystemExit({3 + index})"], {}),
        on_worker_exit=exits.append,
    )
    with structlog.testing.capture_logs() as logs:
        assert await wait_for(supervisor.run(), 30) == 1
    died = [entry for entry in logs if entry["event"] == "worker died: restarting it"]
    assert {(entry["worker"], entry["exit_code"]) for entry in died} <= {(0, 3), (1, 4)}
    (gave_up, *_) = [entry for entry in logs if "keeps dying" in entry["event"]]
    assert gave_up["deaths"] == 4, "three restarts, then the fourth death within the window"
    assert exits.count(gave_up["worker"]) == 4, "every exit reported (to withdraw presence)"


async def test_a_worker_refusing_its_settings_stops_the_gateway_with_exit_2(
    tmp_path: Path,
) -> None:
    """Exit 2 is `planelink gateway` refusing its settings: restarting would not help."""
    code = "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))"

    def command(index: int) -> tuple[Sequence[str], dict[str, str]]:
        if index == 1:
            return [sys.executable, "-c", "raise SystemExit(2)"], {}
        return worker(code, index, tmp_path)

    supervisor = Supervisor(SupervisorSettings(workers=2, stop_grace=10), command)
    with structlog.testing.capture_logs() as logs:
        assert await wait_for(supervisor.run(), 30) == 2
    assert not [entry for entry in logs if entry["event"] == "worker died: restarting it"]


async def test_a_stop_reaches_every_worker_each_told_its_index(tmp_path: Path) -> None:
    code = "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))"
    supervisor = Supervisor(
        SupervisorSettings(workers=3, stop_grace=10),
        lambda index: worker(code, index, tmp_path),
    )
    task = asyncio.ensure_future(supervisor.run())
    await all_ready(tmp_path, 3)
    supervisor.stop(signal.SIGTERM)
    assert await wait_for(task, 30) == 0
    assert told(tmp_path) == {"0": "0", "1": "1", "2": "2"}


async def test_a_worker_that_ignores_the_stop_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = "signal.signal(signal.SIGTERM, signal.SIG_IGN)"
    supervisor = Supervisor(
        SupervisorSettings(workers=1, stop_grace=0.5),
        lambda index: worker(code, index, tmp_path),
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.ensure_future(supervisor.run())
        await all_ready(tmp_path, 1)
        supervisor.stop()
        assert await wait_for(task, 30) == 1, "killed: not a clean stop"
    assert any(entry["event"] == "worker did not stop in time: killing it" for entry in logs)


async def test_a_worker_stopped_before_it_took_the_signal_is_a_clean_stop(
    tmp_path: Path,
) -> None:
    """A worker told to stop while still starting (no handler yet) dies of the signal itself:
    it had nothing to drain, and the gateway's exit says a clean stop."""
    supervisor = Supervisor(
        SupervisorSettings(workers=1, stop_grace=10),
        lambda index: worker("", index, tmp_path),  # the default action: SIGTERM ends it
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.ensure_future(supervisor.run())
        await all_ready(tmp_path, 1)
        supervisor.stop(signal.SIGTERM)
        assert await wait_for(task, 30) == 0
    assert [
        entry["worker"] for entry in logs if entry["event"] == "worker stopped before it served"
    ] == [0]
