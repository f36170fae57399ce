"""`planelink gateway` flags for what one agent may cost: write deadline and flood limits."""

from __future__ import annotations

import pytest

from protocol import FloodLimits
from tests.cli.test_gateway_cli_limits import parse


def test_defaults_are_the_protocols() -> None:
    settings = parse()
    assert settings.agents.flood == FloodLimits()
    assert settings.agents.heartbeat.write_timeout == 30.0


def test_flags_and_environment_set_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse("--write-timeout", "5", "--flood-idle-frame-rate", "50.5")
    assert settings.agents.heartbeat.write_timeout == 5.0
    assert settings.agents.flood.idle_frame_rate == 50.5
    monkeypatch.setenv("PLANELINK_GATEWAY_FLOOD_STREAM_CHURN_BURST", "77")
    monkeypatch.setenv("PLANELINK_GATEWAY_FLOOD_MAX_QUEUED_ANSWERS", "12")
    monkeypatch.setenv("PLANELINK_GATEWAY_WRITE_TIMEOUT", "9")
    settings = parse()
    assert settings.agents.flood.stream_churn_burst == 77
    assert settings.agents.flood.max_queued_answers == 12
    assert settings.agents.heartbeat.write_timeout == 9.0


def test_a_limit_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="stream_churn_rate"):
        parse("--flood-stream-churn-rate", "0")
