"""What one replica keeps for the console, and the whole gateway's from each worker's.

`ConsoleState` holds this replica's stores (conditions, recent refusals, history); its
`own_document` is what a sibling worker asks for over the peer link
(`/peer/v1/console`), and `merged_document` joins the siblings' with this one's: histories
add up per plane and instant, refusals are the newest of everyone's. A sibling's document is
read as untrusted data: anything not of the expected shape is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.console.conditions import PlaneConditions
from gateway.console.history import INTERVAL, History, merged, points_of, series_document
from gateway.console.refusals import LIMIT, RecentRefusals


@dataclass
class ConsoleState:
    conditions: PlaneConditions = field(default_factory=PlaneConditions)
    refusals: RecentRefusals = field(default_factory=RecentRefusals)
    history: History = field(default_factory=History)

    def own_document(self) -> dict[str, Any]:
        return {"history": self.history.document(), "refusals": self.refusals.document()}


def merged_document(own: Mapping[str, Any], siblings: Mapping[str, bytes]) -> dict[str, Any]:
    """The whole gateway's history and refusals from this replica's `own_document` and each
    sibling's answer (its body, by replica id)."""
    documents = [own]
    for body in siblings.values():
        try:
            document = json.loads(body)
        except ValueError:
            continue
        if isinstance(document, dict):
            documents.append(document)
    by_plane: dict[str, list[Any]] = {}
    refusals: list[dict[str, Any]] = []
    for document in documents:
        history = document.get("history")
        planes = history.get("planes") if isinstance(history, dict) else None
        for plane, series in (planes if isinstance(planes, dict) else {}).items():
            if isinstance(series, dict):
                by_plane.setdefault(str(plane), []).append(points_of(series))
        listed = document.get("refusals")
        refusals += [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    refusals.sort(key=_refusal_time, reverse=True)
    return {
        "history": {
            "intervalSeconds": INTERVAL,
            "planes": {
                plane: series_document(merged(series)) for plane, series in by_plane.items()
            },
        },
        "refusals": refusals[:LIMIT],
    }


def _refusal_time(refusal: Mapping[str, Any]) -> float:
    at = refusal.get("at")
    return float(at) if isinstance(at, int | float) else 0.0
