"""The event loop a process runs: what `--event-loop` chooses, and that `run` runs on it."""

from __future__ import annotations

import asyncio

import pytest

from tunnel import event_loop


def test_auto_is_asyncio_and_each_loop_is_itself() -> None:
    assert event_loop.uvloop_installed(), "uvloop is in the lock files for CPython on Linux"
    assert event_loop.chosen_loop("auto") == "asyncio"
    assert event_loop.chosen_loop("uvloop") == "uvloop"
    assert event_loop.chosen_loop("asyncio") == "asyncio"


def test_without_uvloop_only_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_installed", lambda: False)
    assert event_loop.chosen_loop("auto") == "asyncio"
    assert event_loop.chosen_loop("asyncio") == "asyncio"
    with pytest.raises(ValueError, match="uvloop is not installed"):
        event_loop.chosen_loop("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="no event loop 'trio'"):
        event_loop.chosen_loop("trio")


async def _kind() -> tuple[str, str]:
    return event_loop.running_loop(), type(asyncio.get_running_loop()).__module__


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_runs_on_the_chosen_loop(choice: str) -> None:
    kind, module = event_loop.run(_kind(), event_loop=choice)
    assert kind == choice
    assert module.split(".")[0] == choice


def test_a_choice_that_cannot_be_honoured_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_loop, "uvloop_installed", lambda: False)
    ran = []

    async def main() -> None:
        ran.append(True)

    with pytest.raises(ValueError, match="uvloop is not installed"):
        event_loop.run(main(), event_loop="uvloop")
    assert ran == []


def test_outside_a_loop_none_runs() -> None:
    assert event_loop.running_loop() == "none"
