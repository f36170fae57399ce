"""Connection settings: the limits each side advertises in its HELLO, and local bounds.

:class:`Settings` are *receive-side* limits: the values a side puts in its HELLO are what it
will accept from the peer (largest frame, largest message, streams the peer may open, the
credit it grants, largest head). They are fixed for the lifetime of a connection.

:class:`SendLimits` never travel on the wire: they bound what the local application may queue
for sending, per stream and in total, so a fast producer cannot grow memory without bound.

:class:`FloodLimits` never travel on the wire either: they bound what a *peer* may make this side
do without sending anything useful (answers it does not read, frames that cost work but carry
no data, streams it opens only to reset them). A peer that passes one is disconnected with
``ENHANCE_YOUR_CALM``.

Both are frozen dataclasses validated on construction; an invalid value raises ``ValueError``
locally, and :func:`settings_from_wire` turns an invalid peer value into a
``SETTINGS_ERROR`` connection error.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable

from protocol.errors import ConnectionProtocolError, ErrorCode

__all__ = [
    "FRAME_HEADER_SIZE",
    "MAX_WINDOW",
    "MIN_MAX_FRAME_SIZE",
    "MIN_MAX_MESSAGE_SIZE",
    "RELAY_STREAM_WINDOW",
    "SETTING_FIELDS",
    "FloodLimits",
    "SendLimits",
    "SettingId",
    "Settings",
    "settings_from_wire",
]

FRAME_HEADER_SIZE = 12
"""Bytes in the fixed frame header (``!BBBxII``)."""
MAX_WINDOW = 2**31 - 1
"""Largest flow-control window; a WINDOW_UPDATE that would exceed it is a FLOW_CONTROL_ERROR."""
MIN_MAX_FRAME_SIZE = 16_384
"""Smallest MAX_FRAME_SIZE a side may advertise; a HELLO payload must fit in it."""
MIN_MAX_MESSAGE_SIZE = MIN_MAX_FRAME_SIZE + FRAME_HEADER_SIZE
"""Smallest MAX_MESSAGE_SIZE; also the size limit of messages sent before the peer's HELLO."""
_U32_MAX = 2**32 - 1
RELAY_STREAM_WINDOW = 1_048_576
"""The INITIAL_STREAM_WINDOW planelink's gateway and agent advertise (the wire default, for a
HELLO that leaves it out, stays 524288). Credit comes back once half a window is consumed, so a
stream moves at most about half a window per round trip: with 512 KiB a bulk body stalled on
credit between the agent's sends, which then carried less each; 1 MiB moved it 1.3-1.8 times
faster for 10-20 % less CPU per MiB in gateway and agent (`bench.bulk_ab`, one run each, on a
shared 2-core machine). What a receiver buffers stays bounded by `connection_window`."""


class SettingId(enum.IntEnum):
    """Identifiers of the settings carried in HELLO (u16 on the wire)."""

    MAX_FRAME_SIZE = 0x1
    MAX_MESSAGE_SIZE = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_STREAM_WINDOW = 0x4
    CONNECTION_WINDOW = 0x5
    MAX_HEADER_BLOCK_SIZE = 0x6


SETTING_FIELDS: dict[SettingId, str] = {
    SettingId.MAX_FRAME_SIZE: "max_frame_size",
    SettingId.MAX_MESSAGE_SIZE: "max_message_size",
    SettingId.MAX_CONCURRENT_STREAMS: "max_concurrent_streams",
    SettingId.INITIAL_STREAM_WINDOW: "initial_stream_window",
    SettingId.CONNECTION_WINDOW: "connection_window",
    SettingId.MAX_HEADER_BLOCK_SIZE: "max_header_block_size",
}
"""Which :class:`Settings` attribute each wire id sets."""

_RANGES: dict[str, tuple[int, int]] = {
    "max_frame_size": (MIN_MAX_FRAME_SIZE, 16_777_215),
    "max_message_size": (MIN_MAX_MESSAGE_SIZE, MAX_WINDOW),
    "max_concurrent_streams": (0, MAX_WINDOW),
    "initial_stream_window": (1, MAX_WINDOW),
    "connection_window": (1, MAX_WINDOW),
    "max_header_block_size": (1_024, 16_777_215),
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Receive-side limits a side advertises in its HELLO (see SPEC.md, "Settings").

    Cross-field rules: ``max_message_size >= max_frame_size + 12`` and
    ``max_header_block_size <= max_frame_size``.
    """

    max_frame_size: int = 65_536
    """Largest frame payload this side accepts."""
    max_message_size: int = 1_048_576
    """Largest WebSocket message (a batch of whole frames) this side accepts."""
    max_concurrent_streams: int = 512
    """Streams the peer may have open at once towards this side (0: the peer may open none)."""
    initial_stream_window: int = 524_288
    """Credit, in DATA payload bytes, granted to the peer for every stream at its start (the
    wire default; planelink's gateway and agent advertise `RELAY_STREAM_WINDOW`).

    Credit comes back once half of it is consumed, so a stream moves at most about half a
    window per round trip. What a receiver buffers stays bounded by `connection_window`
    across all streams."""
    connection_window: int = 16_777_216
    """Credit, in DATA payload bytes, granted to the peer for the whole connection."""
    max_header_block_size: int = 65_536
    """Largest REQUEST or RESPONSE payload (the whole head) this side accepts."""

    def __post_init__(self) -> None:
        problem = _settings_problem(self)
        if problem is not None:
            raise ValueError(problem)

    def to_wire(self) -> list[tuple[int, int]]:
        """The ``(id, value)`` pairs for a HELLO, in id order."""
        return [(int(sid), getattr(self, name)) for sid, name in SETTING_FIELDS.items()]


def _settings_problem(settings: Settings) -> str | None:
    for name, (low, high) in _RANGES.items():
        value = getattr(settings, name)
        if not isinstance(value, int) or not low <= value <= high:
            return f"setting {name}={value!r} is outside [{low}, {high}]"
    if settings.max_message_size < settings.max_frame_size + FRAME_HEADER_SIZE:
        return (
            f"max_message_size={settings.max_message_size} cannot hold one frame of "
            f"max_frame_size={settings.max_frame_size} plus its {FRAME_HEADER_SIZE}-byte header"
        )
    if settings.max_header_block_size > settings.max_frame_size:
        return (
            f"max_header_block_size={settings.max_header_block_size} exceeds "
            f"max_frame_size={settings.max_frame_size}"
        )
    return None


def settings_from_wire(pairs: Iterable[tuple[int, int]]) -> Settings:
    """Build the peer's :class:`Settings` from HELLO pairs.

    Unknown ids are ignored (forward compatibility); absent ids take the default. A
    duplicate id or an invalid value raises a ``SETTINGS_ERROR`` connection error.
    """
    values: dict[str, int] = {}
    seen: set[int] = set()
    for sid, value in pairs:
        if sid in seen:
            raise ConnectionProtocolError(
                ErrorCode.SETTINGS_ERROR, f"setting id {sid:#x} appears twice in HELLO"
            )
        seen.add(sid)
        try:
            name = SETTING_FIELDS[SettingId(sid)]
        except ValueError:
            continue
        values[name] = value
    try:
        return Settings(**values)
    except ValueError as exc:
        raise ConnectionProtocolError(ErrorCode.SETTINGS_ERROR, f"peer HELLO: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SendLimits:
    """Local bounds on bytes the application may queue for sending (never on the wire).

    ``send_data()`` accepts at most
    ``min(max_stream_buffer - queued(stream), max_connection_buffer - queued(all))``
    bytes, and returns how many it took.
    """

    max_stream_buffer: int = 262_144
    """Largest number of DATA bytes queued and not yet emitted, per stream."""
    max_connection_buffer: int = 8_388_608
    """Largest number of DATA bytes queued and not yet emitted, all streams together."""

    def __post_init__(self) -> None:
        for name in ("max_stream_buffer", "max_connection_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= _U32_MAX:
                raise ValueError(f"{name}={value!r} must be in [1, {_U32_MAX}]")
        if self.max_stream_buffer > self.max_connection_buffer:
            raise ValueError(
                f"max_stream_buffer={self.max_stream_buffer} exceeds "
                f"max_connection_buffer={self.max_connection_buffer}"
            )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FloodLimits:
    """Local bounds on the work and memory a peer may cost without useful traffic (SPEC §9.1).

    A *rate* is a token bucket: ``burst`` events at once, refilled at ``rate`` per second of
    the clock the I/O layer passes to ``Connection.receive_data(now=...)``. Passing a limit
    is a connection error ``ENHANCE_YOUR_CALM``.
    """

    max_queued_answers: int = 1_000
    """RESET frames owed to the peer (answers to its frames) queued and not yet sent. A peer
    that keeps provoking answers without reading them is cut off here; PONGs never count,
    since at most one is ever queued (answers to PINGs are merged)."""
    idle_frame_burst: int = 1_000
    """Frames that cost work but carry no data, at once: PING, PONG, empty DATA without
    END_STREAM, a second GOAWAY, RESET and WINDOW_UPDATE of a closed stream, and frames
    answered with a stream error."""
    idle_frame_rate: float = 500.0
    """Refill of ``idle_frame_burst`` per second. A healthy peer sends a PING every few
    seconds and at most one frame per stream that races the stream's close (a WINDOW_UPDATE
    or RESET crossing our END); a flood runs at hundreds of thousands per second."""
    stream_churn_burst: int = 1_000
    """Streams the peer opened that ended without an exchange, at once: refused by this side,
    or reset by the peer (the "rapid reset" pattern, CVE-2023-44487)."""
    stream_churn_rate: float = 200.0
    """Refill of ``stream_churn_burst`` per second (callers that cancel requests cost one
    each; the agent is not cut off by a gateway relaying a burst of cancellations)."""

    def __post_init__(self) -> None:
        for name in ("max_queued_answers", "idle_frame_burst", "stream_churn_burst"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= _U32_MAX:
                raise ValueError(f"{name}={value!r} must be in [1, {_U32_MAX}]")
        for name in ("idle_frame_rate", "stream_churn_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}={value!r} must be a positive number of events per second")
