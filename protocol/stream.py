"""Stream state machine, written as a table (h11-style).

A stream is two *halves*: what the local side sends and what the peer sends. Each half is
either the REQUESTER half (the side that opened the stream with REQUEST) or the RESPONDER
half (the side that answers with RESPONSE), and moves through :class:`HalfState` only along
the edges in :data:`TRANSITIONS`. The same table judges local calls (an illegal edge is a
:class:`~protocol.errors.LocalProtocolError`) and received frames (an illegal edge is a
stream error of the peer). RESET, from either side, ends both halves at once and removes
the stream; it is not in the table because it is legal in every state.

Things that can never happen (any attempt is rejected, never half-applied):

* no DATA from a half after its END (half CLOSED): ``STREAM_CLOSED``;
* no second head from a half; no RESPONSE from the requester, no REQUEST from the responder;
* no DATA from the responder before its RESPONSE head;
* no DATA from the requester of an UPGRADE request until a ``101`` RESPONSE arrived; after a
  non-101 answer that half may only END;
* no ``101`` RESPONSE unless the request carried the UPGRADE flag; no other 1xx status;
* no frame on a stream after RESET (in-flight frames the peer sent before seeing our RESET
  are dropped silently, see ``Connection``).

After a ``101`` both halves are raw byte pipes: DATA flows both ways until each side ENDs.
"""

from __future__ import annotations

import enum

from protocol.flow import ReceiveWindow

__all__ = [
    "TRANSITIONS",
    "Action",
    "HalfState",
    "Side",
    "Stream",
    "next_state",
    "status_allowed",
]


class Side(enum.Enum):
    """Which half of the HTTP exchange a sender plays on a stream."""

    REQUESTER = "requester"
    RESPONDER = "responder"


class HalfState(enum.Enum):
    """State of one direction of a stream."""

    IDLE = "idle"
    """No head sent yet (only the responder half ever waits here)."""
    AWAIT_UPGRADE = "await-upgrade"
    """Requester sent an UPGRADE request: no DATA until a 101 arrives; END is allowed."""
    OPEN = "open"
    """Head sent; DATA may follow."""
    CLOSED = "closed"
    """END sent; nothing more from this half."""


class Action(enum.Enum):
    """What a half does (or, for SWITCHED, what happens to it)."""

    REQUEST = "request"
    REQUEST_UPGRADE = "request-upgrade"
    RESPONSE = "response"
    DATA = "data"
    END = "end"
    SWITCHED = "switched"
    """The other half sent or received a 101 response (applied to the requester half)."""


_R, _S = Side.REQUESTER, Side.RESPONDER
_IDLE, _WAIT, _OPEN, _CLOSED = (
    HalfState.IDLE,
    HalfState.AWAIT_UPGRADE,
    HalfState.OPEN,
    HalfState.CLOSED,
)

TRANSITIONS: dict[tuple[Side, HalfState, Action], HalfState] = {
    (_R, _IDLE, Action.REQUEST): _OPEN,
    (_R, _IDLE, Action.REQUEST_UPGRADE): _WAIT,
    (_R, _WAIT, Action.SWITCHED): _OPEN,
    (_R, _WAIT, Action.END): _CLOSED,
    (_R, _OPEN, Action.DATA): _OPEN,
    (_R, _OPEN, Action.END): _CLOSED,
    (_R, _CLOSED, Action.SWITCHED): _CLOSED,
    (_S, _IDLE, Action.RESPONSE): _OPEN,
    (_S, _OPEN, Action.DATA): _OPEN,
    (_S, _OPEN, Action.END): _CLOSED,
}
"""Every legal edge; a ``(side, state, action)`` absent from this table is illegal."""


def next_state(side: Side, state: HalfState, action: Action) -> HalfState | None:
    """The state after ``action``, or ``None`` if the table forbids it."""
    return TRANSITIONS.get((side, state, action))


def status_allowed(status: int, *, upgrade_requested: bool) -> bool:
    """A RESPONSE status is 200..599, or 101 when the request asked for an upgrade."""
    if status == 101:
        return upgrade_requested
    return 200 <= status <= 599


class Stream:
    """Per-stream bookkeeping of a connection: both half states and the receive window.

    Send-side bytes and windows live in the scheduler; this object only knows states.
    """

    __slots__ = (
        "end_flushed",
        "local",
        "local_side",
        "recv",
        "remote",
        "stream_id",
        "upgrade",
    )

    def __init__(self, stream_id: int, *, opened_locally: bool, recv: ReceiveWindow) -> None:
        self.stream_id = stream_id
        self.local_side = Side.REQUESTER if opened_locally else Side.RESPONDER
        self.local = HalfState.IDLE
        self.remote = HalfState.IDLE
        self.upgrade = False
        self.recv = recv
        self.end_flushed = False
        """Our END has left in ``data_to_send`` (only then may the stream be forgotten)."""

    def advance_local(self, action: Action) -> None:
        """Move our half along a table edge the caller has already found legal."""
        self.local = TRANSITIONS[(self.local_side, self.local, action)]

    def advance_remote(self, action: Action) -> None:
        """Move the peer's half along a table edge the caller has already found legal."""
        self.remote = TRANSITIONS[(self.remote_side, self.remote, action)]

    @property
    def remote_side(self) -> Side:
        """The role the peer plays on this stream."""
        return Side.RESPONDER if self.local_side is Side.REQUESTER else Side.REQUESTER

    @property
    def finished(self) -> bool:
        """Both halves ended and our END was emitted: the stream can be forgotten."""
        return self.local is _CLOSED and self.remote is _CLOSED and self.end_flushed
