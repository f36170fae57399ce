"""Time helpers shared by the certs modules: everything is an aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_DAY = 86400
_HOUR = 3600
_MINUTE = 60


def utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive datetime is taken to be UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_or_now(moment: datetime | None) -> datetime:
    """:func:`utc` of ``moment``, or the current time when it is None."""
    return datetime.now(UTC) if moment is None else utc(moment)


def iso(moment: datetime) -> str:
    """``2025-01-31T12:00:00Z``: second precision, as certificates store time."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(delta: timedelta) -> str:
    """A rough duration in its largest whole unit: ``3 days``, ``1 hour``, ``42 seconds``."""
    seconds = int(abs(delta.total_seconds()))
    for size, unit in ((_DAY, "day"), (_HOUR, "hour"), (_MINUTE, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
