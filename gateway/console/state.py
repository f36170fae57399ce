"""What one replica keeps for the console, and the whole gateway's from each worker's.

`ConsoleState` holds this replica's stores (conditions, recent refusals, history); its
`own_document` is what a sibling worker asks for over the peer link
(`/peer/v1/console`), and `whole_gateway` joins the siblings' with this one's: histories
add up per plane and instant, refusals are the newest of everyone's. A sibling's document is
read as untrusted data: anything not of the expected shape is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.console.conditions import PlaneConditions
from gateway.console.history import (
    INTERVAL,
    History,
    Point,
    merged,
    points_of,
    series_document,
)
from gateway.console.refusals import LIMIT, RecentRefusals


@dataclass
class ConsoleState:
    conditions: PlaneConditions = field(default_factory=PlaneConditions)
    refusals: RecentRefusals = field(default_factory=RecentRefusals)
    history: History = field(default_factory=History)

    def own_document(self) -> dict[str, Any]:
        return {"history": self.history.document(), "refusals": self.refusals.document()}


@dataclass(frozen=True)
class WholeGateway:
    """The history and the recent refusals of every worker of the gateway, joined."""

    history: dict[str, list[Point]]
    """Per plane, its points (rates added up over the workers at each instant)."""
    refusals: list[dict[str, Any]]
    """The newest `LIMIT` of everyone's, newest first."""

    def document(self) -> dict[str, Any]:
        """As /console serves it (/history alone is its `history`)."""
        return {
            "history": {
                "intervalSeconds": INTERVAL,
                "planes": {
                    plane: series_document(points) for plane, points in self.history.items()
                },
            },
            "refusals": self.refusals,
        }


def whole_gateway(state: ConsoleState, siblings: Mapping[str, bytes]) -> WholeGateway:
    """This replica's own history and refusals joined with each sibling's `own_document` (its
    body, by replica id); this replica's own points are used as they are, never re-read."""
    by_plane: dict[str, list[list[Point]]] = {
        plane: [state.history.series(plane)] for plane in state.history.planes()
    }
    refusals = state.refusals.document()
    for body in siblings.values():
        try:
            document = json.loads(body)
        except ValueError:
            continue
        if not isinstance(document, dict):
            continue
        history = document.get("history")
        planes = history.get("planes") if isinstance(history, dict) else None
        for plane, series in (planes if isinstance(planes, dict) else {}).items():
            if isinstance(series, dict):
                by_plane.setdefault(str(plane), []).append(points_of(series))
        listed = document.get("refusals")
        refusals += [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    refusals.sort(key=_refusal_time, reverse=True)
    history = {
        plane: series[0] if len(series) == 1 else merged(series)
        for plane, series in by_plane.items()
    }
    return WholeGateway(history, refusals[:LIMIT])


def _refusal_time(refusal: Mapping[str, Any]) -> float:
    at = refusal.get("at")
    return float(at) if isinstance(at, int | float) else 0.0
