"""Each plane's DataPlane conditions, as the reconciler last read them from the control plane.

The reconciler feeds it through `gateway.interfaces.ConditionSink`; the console reads it. One
entry per DataPlane, dropped with it; messages are cut to `MESSAGE_LIMIT` characters, so a
status written by anyone with access to DataPlanes cannot make the page grow without bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from certs import PlaneRef
from gateway.console.text import cut
from gateway.interfaces import PlaneCondition

MESSAGE_LIMIT = 500
CONDITIONS_PER_PLANE = 8
"""The owned types are three; a few others (set by other controllers) are kept, not more."""


class PlaneConditions:
    """The conditions of every plane the reconciler follows (`ConditionSink`)."""

    def __init__(self) -> None:
        self._by_plane: dict[PlaneRef, tuple[PlaneCondition, ...]] = {}

    def set_conditions(self, plane: PlaneRef, conditions: Sequence[PlaneCondition]) -> None:
        self._by_plane[plane] = tuple(_bounded(c) for c in conditions[:CONDITIONS_PER_PLANE])

    def remove_conditions(self, plane: PlaneRef) -> None:
        self._by_plane.pop(plane, None)

    def of(self, plane: PlaneRef) -> tuple[PlaneCondition, ...] | None:
        """The plane's conditions; None for a plane no DataPlane describes (a planes file's)."""
        return self._by_plane.get(plane)


def describe(conditions: Sequence[PlaneCondition]) -> list[dict[str, Any]]:
    """Conditions as /planes shows them: the Kubernetes field names."""
    return [
        {
            "type": c.type,
            "status": c.status,
            "reason": c.reason,
            "message": c.message,
            "lastTransitionTime": c.last_transition,
        }
        for c in conditions
    ]


def _bounded(condition: PlaneCondition) -> PlaneCondition:
    return replace(
        condition,
        type=cut(condition.type, 64),
        status=cut(condition.status, 16),
        reason=cut(condition.reason, 128),
        message=cut(condition.message, MESSAGE_LIMIT),
        last_transition=cut(condition.last_transition, 40),
    )
