"""An hour of each plane's traffic, for the console's charts: requests/s, body bytes/s and the
agents' heartbeat round trip, sampled every `INTERVAL` seconds into a ring of `POINTS` per plane.

`History` is pure (totals and a time in, points out): a rate is the growth of a counter over
the time since the plane's previous sample, and a counter that went down (a restart of what
counts) starts again from zero instead of giving a negative rate. A plane absent from a sample
is gone and its ring with it; at most `max_planes` planes are kept (the ones first seen), so
the memory of the history is bounded whatever the control plane holds. `HistorySampler` is the
thin loop that reads the gateway's counters (through `GatewayMetrics`' attributes and the agent
registry, never by metric name) at each whole `INTERVAL` of the clock, so the workers of one
gateway sample the same instants and their histories add up.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from tunnel.plain_metrics import PlainCounter

log = structlog.get_logger("gateway.console.history")

INTERVAL = 10.0
POINTS = 360
"""An hour of 10 s samples."""
MAX_PLANES = 1000


@dataclass(frozen=True)
class Totals:
    """One plane at one instant: its counters so far and its agents' round trip now."""

    requests: float
    body_bytes: float
    rtt: float | None
    """The slowest of its agents' last heartbeat round trips, in seconds (None: no agent)."""


@dataclass(frozen=True)
class Point:
    at: float
    """The sample's time (epoch seconds, a whole multiple of the interval when sampled)."""
    requests: float
    """Requests per second since the previous sample."""
    body_bytes: float
    """Body bytes (both directions) per second since the previous sample."""
    rtt: float | None


class History:
    def __init__(self, *, points: int = POINTS, max_planes: int = MAX_PLANES) -> None:
        self.points = points
        self.max_planes = max_planes
        self._rings: dict[str, deque[Point]] = {}
        self._last: dict[str, tuple[float, Totals]] = {}
        self.planes_left_out = 0
        """Planes of the last sample not kept: `max_planes` were kept already."""

    def record(self, at: float, totals: Mapping[str, Totals]) -> None:
        """One sample of every plane there is now; planes not in it are forgotten."""
        for gone in [plane for plane in self._last if plane not in totals]:
            del self._last[gone]
            self._rings.pop(gone, None)
        left_out = 0
        for plane, now in totals.items():
            if plane not in self._last and len(self._last) >= self.max_planes:
                left_out += 1
                continue
            previous = self._last.get(plane)
            self._last[plane] = (at, now)
            if previous is None or at <= previous[0]:
                continue  # a rate needs a previous sample of this plane
            before_at, before = previous
            seconds = at - before_at
            ring = self._rings.setdefault(plane, deque(maxlen=self.points))
            ring.append(
                Point(
                    at=at,
                    requests=_rate(before.requests, now.requests, seconds),
                    body_bytes=_rate(before.body_bytes, now.body_bytes, seconds),
                    rtt=now.rtt,
                )
            )
        self.planes_left_out = left_out

    def series(self, plane: str) -> list[Point]:
        return list(self._rings.get(plane, ()))

    def planes(self) -> list[str]:
        """The planes with points."""
        return list(self._rings)

    def document(self) -> dict[str, Any]:
        """The history as /history serves it: per plane, parallel lists of times and values."""
        return {
            "intervalSeconds": INTERVAL,
            "points": self.points,
            "planesLeftOut": self.planes_left_out,
            "planes": {plane: series_document(ring) for plane, ring in self._rings.items()},
        }


def series_document(points: Iterable[Point]) -> dict[str, list[Any]]:
    listed = list(points)
    return {
        "at": [p.at for p in listed],
        "requestsPerSecond": [round(p.requests, 3) for p in listed],
        "bytesPerSecond": [round(p.body_bytes, 1) for p in listed],
        "rttSeconds": [None if p.rtt is None else round(p.rtt, 6) for p in listed],
    }


def points_of(series: Mapping[str, Any]) -> list[Point]:
    """A plane's points back from its `series_document` (a sibling worker's, say); entries that
    are not numbers are skipped, never trusted."""
    columns = [series.get(name) for name in _COLUMNS]
    if not all(isinstance(column, list) for column in columns):
        return []
    points = []
    for row in zip(*columns, strict=False):
        at, requests, body_bytes, rtt = (finite(value) for value in row)
        if at is not None and requests is not None and body_bytes is not None:
            points.append(Point(at, requests, body_bytes, rtt))
    return points


def merged(series: Iterable[list[Point]]) -> list[Point]:
    """The workers' points of one plane as one gateway's: rates add up at each instant, the
    round trip is the slowest."""
    by_time: dict[float, Point] = {}
    for points in series:
        for point in points:
            into = by_time.get(point.at)
            if into is None:
                by_time[point.at] = point
                continue
            rtts = [r for r in (into.rtt, point.rtt) if r is not None]
            by_time[point.at] = Point(
                point.at,
                into.requests + point.requests,
                into.body_bytes + point.body_bytes,
                max(rtts) if rtts else None,
            )
    return [by_time[at] for at in sorted(by_time)]


_COLUMNS = ("at", "requestsPerSecond", "bytesPerSecond", "rttSeconds")


def finite(value: object) -> float | None:
    """`value` if it is a finite number (not a bool), else None: for numbers read from JSON."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _rate(before: float, now: float, seconds: float) -> float:
    grown = now - before if now >= before else now  # counted again from zero
    return grown / seconds


def counter_by_plane(counter: PlainCounter) -> dict[str, float]:
    """A counter's totals summed per `plane` label (over its other labels)."""
    totals: dict[str, float] = {}
    for family in counter.collect():
        total_name = family.name + "_total"
        for sample in family.samples:
            plane = sample.labels.get("plane")
            if sample.name == total_name and plane is not None:
                totals[plane] = totals.get(plane, 0.0) + sample.value
    return totals


class HistorySampler:
    """Samples `read()` into `history` at every whole `interval` of the wall clock."""

    def __init__(
        self,
        history: History,
        read: Callable[[], Mapping[str, Totals]],
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.history = history
        self._read = read
        self._interval = interval
        self._clock = clock

    def sample(self) -> None:
        # The nearest whole interval: a wake-up a hair early is still that instant's sample.
        at = round(self._clock() / self._interval) * self._interval
        self.history.record(at, self._read())

    async def run(self) -> None:
        while True:  # a first sample at once: the first rate comes one interval later
            try:
                self.sample()
            except Exception:  # a bug in reading must not end the history, nor the gateway
                log.exception("history not sampled")
            await asyncio.sleep(self._interval - self._clock() % self._interval)
