"""Settings and send limits: defaults, ranges, cross-field rules, wire parsing."""

from __future__ import annotations

import dataclasses

import pytest

from protocol import ErrorCode, SendLimits, SettingId, Settings
from protocol.errors import ConnectionProtocolError
from protocol.settings import settings_from_wire


def test_defaults_are_valid_and_round_trip_through_the_wire() -> None:
    settings = Settings()
    assert settings_from_wire(settings.to_wire()) == settings
    assert [sid for sid, _ in settings.to_wire()] == sorted(int(s) for s in SettingId)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_frame_size = 1  # type: ignore[misc]  # refused, as tested


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_frame_size", 16_383),
        ("max_frame_size", 16_777_216),
        ("max_message_size", 16_395),
        ("max_concurrent_streams", -1),
        ("initial_stream_window", 0),
        ("initial_stream_window", 2**31),
        ("connection_window", 0),
        ("max_header_block_size", 1_023),
    ],
)
def test_out_of_range_values_rejected(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})


def test_cross_field_rules() -> None:
    with pytest.raises(ValueError, match="cannot hold one frame"):
        Settings(max_frame_size=65_536, max_message_size=65_547)
    Settings(max_frame_size=65_536, max_message_size=65_548)
    with pytest.raises(ValueError, match="exceeds max_frame_size"):
        Settings(max_frame_size=16_384, max_message_size=16_396, max_header_block_size=16_385)


def test_wire_unknown_ids_ignored_absent_ids_default() -> None:
    assert settings_from_wire([(0x99, 7), (int(SettingId.MAX_CONCURRENT_STREAMS), 3)]) == Settings(
        max_concurrent_streams=3
    )


def test_wire_duplicate_and_invalid_are_settings_errors() -> None:
    with pytest.raises(ConnectionProtocolError) as info:
        settings_from_wire([(1, 20_000), (1, 20_000)])
    assert info.value.code is ErrorCode.SETTINGS_ERROR
    assert "twice" in info.value.message
    with pytest.raises(ConnectionProtocolError) as info:
        settings_from_wire([(int(SettingId.INITIAL_STREAM_WINDOW), 0)])
    assert info.value.code is ErrorCode.SETTINGS_ERROR
    assert "initial_stream_window" in info.value.message


def test_send_limits_validation() -> None:
    assert SendLimits().max_stream_buffer <= SendLimits().max_connection_buffer
    with pytest.raises(ValueError, match="max_stream_buffer"):
        SendLimits(max_stream_buffer=0)
    with pytest.raises(ValueError, match="exceeds"):
        SendLimits(max_stream_buffer=10, max_connection_buffer=5)
