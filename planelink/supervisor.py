"""The supervisor of `planelink gateway --workers N`: N worker processes, kept running.

Each worker is a fresh `planelink gateway` process (the same command line, re-executed, with
its index in `WORKER_INDEX_VARIABLE`) rather than a `multiprocessing` child: a worker is then
exactly the process a single gateway is — the same flags, environment, logging, signals and
code path, nothing pickled across, no resource-tracker process — and shows in `ps` as what it
is. The supervisor:

- forwards SIGTERM and SIGINT to every worker, waits for them to drain (their `--drain-grace`,
  plus a margin, then SIGKILL), and exits 0 when every worker exited 0;
- forwards SIGHUP (reload the planes file);
- stops the others and exits 2 when a worker refuses its settings (exit 2: nothing a restart
  would change);
- restarts a worker that dies otherwise, after a backoff (`protocol.backoff`, reset once a
  worker has lived `restart_window`), logging each death; a worker that dies `max_restarts`
  times within `restart_window` makes it stop the others and exit 1 — a crash loop is for
  the kubelet to see, not to hide;
- has the kernel send SIGTERM to a worker whose supervisor died (PR_SET_PDEATHSIG), so no
  worker outlives it holding the ports.

It never serves anything itself and holds no port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from protocol.backoff import Backoff, BackoffPolicy

log = structlog.get_logger("planelink.supervisor")

WORKER_INDEX_VARIABLE = "PLANELINK_GATEWAY_WORKER_INDEX"
"""Set by the supervisor in each worker's environment: the worker's index, 0 to N-1."""

_PR_SET_PDEATHSIG = 1

REFUSED_SETTINGS = 2
"""The exit code of a `planelink` command that refuses its settings (a file it cannot read, a
port it cannot bind): a worker that exits with it would only refuse them again."""


@dataclass(frozen=True, kw_only=True)
class SupervisorSettings:
    workers: int
    stop_grace: float
    """Seconds workers get, after SIGTERM, to drain and exit before they are killed."""
    restart_backoff: BackoffPolicy = field(
        default_factory=lambda: BackoffPolicy(base=0.5, cap=10.0)
    )
    max_restarts: int = 5
    restart_window: float = 60.0


WorkerCommand = Callable[[int], tuple[Sequence[str], dict[str, str]]]
"""Worker i's command line and environment."""


class Supervisor:
    def __init__(
        self,
        settings: SupervisorSettings,
        command: WorkerCommand,
        *,
        on_worker_exit: Callable[[int], None] = lambda index: None,
    ) -> None:
        self._settings = settings
        self._command = command
        self._on_worker_exit = on_worker_exit
        """Called when worker i has exited (e.g. to withdraw what it announced)."""
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._stop_signal: int | None = None
        self._failed: int | None = None
        """The supervisor's exit code once it gave up on its workers."""

    async def run(self) -> int:
        """Run the workers until a signal stops them (0 when all drained cleanly) or one
        keeps dying (1)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        try:
            codes = await asyncio.gather(
                *(self._keep(index) for index in range(self._settings.workers))
            )
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(ValueError):
                    loop.remove_signal_handler(signum)
        if self._failed is not None:
            return self._failed
        # Killed by the very signal forwarded to it: the worker had no handler yet, so it was
        # still starting (`planelink gateway` takes SIGTERM before it serves) and had nothing
        # to drain.
        before_serving = -self._stop_signal if self._stop_signal is not None else None
        for index, code in enumerate(codes):
            if code == before_serving:
                log.info("worker stopped before it served", worker=index)
        unclean = {
            index: code for index, code in enumerate(codes) if code not in (0, before_serving)
        }
        if unclean:
            log.error("workers did not stop cleanly", exit_codes=unclean)
            return 1
        log.info("all workers stopped")
        return 0

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop every worker (they drain), once."""
        if self._stopping.is_set():
            return
        log.info("stopping workers", signal=signal.Signals(signum).name)
        self._stop_signal = signum
        self._stopping.set()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def _keep(self, index: int) -> int:
        """Run worker `index`, again each time it dies, until stopped; its last exit code."""
        settings = self._settings
        backoff = Backoff(settings.restart_backoff)
        deaths: list[float] = []
        while True:
            started = time.monotonic()
            process = await self._spawn(index)
            code = await self._wait(index, process)
            self._on_worker_exit(index)
            if self._stopping.is_set():
                return code
            if code == REFUSED_SETTINGS:
                log.error("worker refused its settings: stopping the gateway", worker=index)
                return self._give_up(REFUSED_SETTINGS, code)
            now = time.monotonic()
            deaths = [moment for moment in deaths if now - moment < settings.restart_window]
            deaths.append(now)
            if now - started >= settings.restart_window:
                backoff.reset()
            if len(deaths) > settings.max_restarts:
                log.error(
                    "worker keeps dying: stopping the gateway",
                    worker=index,
                    exit_code=code,
                    deaths=len(deaths),
                    within_seconds=settings.restart_window,
                )
                return self._give_up(1, code)
            delay = backoff.next_delay()
            log.warning(
                "worker died: restarting it", worker=index, exit_code=code, after_seconds=delay
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return code

    def _give_up(self, exit_code: int, worker_code: int) -> int:
        if self._failed is None:
            self._failed = exit_code
        self.stop()
        return worker_code

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        argv, environment = self._command(index)
        supervisor = os.getpid()
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=lambda: _die_with(supervisor),
        )
        self._processes[index] = process
        log.info("worker started", worker=index, pid=process.pid)
        return process

    async def _wait(self, index: int, process: asyncio.subprocess.Process) -> int:
        """The worker's exit code; once stopping, it gets `stop_grace` before SIGKILL."""
        waiting = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                try:
                    async with asyncio.timeout(self._settings.stop_grace):
                        await asyncio.shield(waiting)
                except TimeoutError:
                    log.error("worker did not stop in time: killing it", worker=index)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            return await waiting
        finally:
            stopping.cancel()


def _die_with(supervisor: int) -> None:
    """In a new worker, before it runs: SIGTERM when the supervisor dies (Linux), so that a
    killed supervisor leaves no worker holding the ports."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the request above took effect
        os._exit(1)
