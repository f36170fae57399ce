"""The agents and callers the gateway refused lately: a ring of the last `LIMIT`, for the
console (the metrics count every refusal; the log has each one in full).

`note` never blocks and never grows the ring past its size; texts are cut to a few hundred
characters, so a flood of refusals with long details costs a fixed amount of memory.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.console.text import cut

LIMIT = 50
TEXT_LIMIT = 300

Side = Literal["agent", "caller"]


@dataclass(frozen=True)
class RecentRefusal:
    side: Side
    reason: str
    """The short reason the metrics count it by (`Untrusted`, `Forbidden`...)."""
    detail: str
    plane: str = ""
    """The plane it came for, "" when unknown (refused before the plane was read)."""
    who: str = ""
    """The agent id or caller identity, if known."""
    address: str = ""
    at: float = field(default_factory=time.time)


class RecentRefusals:
    def __init__(self, *, limit: int = LIMIT) -> None:
        self._ring: deque[RecentRefusal] = deque(maxlen=limit)
        self.total = 0
        """RecentRefusals noted since start (the ring keeps the last `limit` of them)."""

    def note(self, refusal: RecentRefusal) -> None:
        self._ring.append(
            RecentRefusal(
                side=refusal.side,
                reason=cut(refusal.reason, 64),
                detail=cut(refusal.detail, TEXT_LIMIT),
                plane=cut(refusal.plane, 128),
                who=cut(refusal.who, 128),
                address=cut(refusal.address, 64),
                at=refusal.at,
            )
        )
        self.total += 1

    def recent(self) -> list[RecentRefusal]:
        """The kept refusals, newest first."""
        return list(reversed(self._ring))

    def document(self) -> list[dict[str, Any]]:
        return [describe(refusal) for refusal in self.recent()]


def describe(refusal: RecentRefusal) -> dict[str, Any]:
    return {
        "at": refusal.at,
        "side": refusal.side,
        "reason": refusal.reason,
        "detail": refusal.detail,
        "plane": refusal.plane,
        "who": refusal.who,
        "address": refusal.address,
    }
