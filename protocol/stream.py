"""Stream state machine, written as a table (h11-style), with one checked ``apply``.

A stream is two *halves*: what the local side sends and what the peer sends. Each half is
either the REQUESTER half (the side that opened the stream with REQUEST) or the RESPONDER
half (the side that answers with RESPONSE), and moves through :class:`HalfState` only along
the edges in :data:`TRANSITIONS`. Every change of a half goes through :meth:`Stream.apply`,
which checks the edge and takes it in one step (``Stream.check`` asks the same question
without taking it): a local call the table forbids raises
:class:`~protocol.errors.LocalProtocolError` (``StreamClosedError`` on a closed half), a
received frame it forbids raises a :class:`~protocol.errors.StreamProtocolError`; either way
nothing changes. RESET, from either side, ends both halves at once and removes the stream;
it is not in the table because it is legal in every state.

The one coupling between the halves is the upgrade, and it lives in ``apply`` too: a
REQUEST_UPGRADE marks the stream, a ``101`` RESPONSE is allowed only on a marked stream, and
applying it also takes the requester half's SWITCHED edge (``await-upgrade`` → ``open``).

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

DATA on an OPEN half is the table's self-loop (``open`` → ``open``), so the connection's
per-frame hot path tests ``half is OPEN`` and skips ``apply``; any other DATA goes through it.
"""

from __future__ import annotations

import enum

from protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    StreamClosedError,
    StreamProtocolError,
)
from protocol.flow import ReceiveWindow

__all__ = [
    "TRANSITIONS",
    "Action",
    "HalfState",
    "Party",
    "Side",
    "Stream",
    "status_allowed",
]


class Side(enum.Enum):
    """Which half of the HTTP exchange a sender plays on a stream."""

    REQUESTER = "requester"
    RESPONDER = "responder"


class Party(enum.Enum):
    """Who acts on a stream: the local application (a call) or the peer (a received frame)."""

    LOCAL = "local"
    PEER = "peer"


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
    """The other half sent or received a 101 response (applied to the requester half by
    ``apply`` itself; no party does it)."""


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

_FRAME_OF: dict[Action, str] = {
    Action.REQUEST: "REQUEST",
    Action.REQUEST_UPGRADE: "REQUEST",
    Action.RESPONSE: "RESPONSE",
    Action.DATA: "DATA",
    # A head's END_STREAM always follows its (legal) head, so an END the table refuses is
    # always the END_STREAM flag of a DATA frame.
    Action.END: "DATA",
    Action.SWITCHED: "RESPONSE",
}
"""The frame that carries a peer's action, for the reason of a stream error."""


def status_allowed(status: int, *, upgrade_requested: bool) -> bool:
    """A RESPONSE status is 200..599, or 101 when the request asked for an upgrade."""
    if status == 101:
        return upgrade_requested
    return 200 <= status <= 599


class Stream:
    """Per-stream bookkeeping of a connection: both half states and the receive window.

    Send-side bytes and windows live in the scheduler; this object only knows states, and
    changes them only in :meth:`apply`.
    """

    __slots__ = (
        "end_flushed",
        "local",
        "local_side",
        "recv",
        "remote",
        "remote_side",
        "stream_id",
        "upgrade",
    )

    def __init__(self, stream_id: int, *, opened_locally: bool, recv: ReceiveWindow) -> None:
        self.stream_id = stream_id
        self.local_side = _R if opened_locally else _S
        """The role this side plays on the stream."""
        self.remote_side = _S if opened_locally else _R
        """The role the peer plays on the stream."""
        self.local = _IDLE
        self.remote = _IDLE
        self.upgrade = False
        """The request asked for an upgrade (so a ``101`` answer is allowed)."""
        self.recv = recv
        self.end_flushed = False
        """Our END has left in ``data_to_send`` (only then may the stream be forgotten)."""

    def apply(self, party: Party, action: Action, *, status: int | None = None) -> None:
        """Check ``action`` by ``party`` against the table and take the edge, in one step.

        ``status`` is required for a RESPONSE. Raises, changing nothing, when the table has
        no such edge or the status is not allowed: ``StreamClosedError`` /
        ``LocalProtocolError`` for a LOCAL action, ``StreamProtocolError`` for a PEER one.
        """
        if status is None and action is Action.RESPONSE:
            raise TypeError("a RESPONSE is applied with its status")
        self.local, self.remote, self.upgrade = self._after(party, action, status)

    def check(self, party: Party, action: Action, *, status: int | None = None) -> None:
        """Raise what :meth:`apply` would raise now (judging a RESPONSE's status only when
        given), and change nothing.

        For a caller that validates more before it applies (a head must encode, or decode,
        first) and must report a state the table forbids before anything else.
        """
        self._after(party, action, status)

    def _after(
        self, party: Party, action: Action, status: int | None
    ) -> tuple[HalfState, HalfState, bool]:
        """The (local, remote, upgrade) the action leads to, or the error it is refused with."""
        local, remote, upgrade = self.local, self.remote, self.upgrade
        by_us = party is Party.LOCAL
        side, state = (self.local_side, local) if by_us else (self.remote_side, remote)
        target = TRANSITIONS.get((side, state, action))
        if target is None or action is Action.SWITCHED:
            raise self._illegal(party, side, state, action)
        if action is Action.REQUEST_UPGRADE:
            upgrade = True
        elif status is not None and action is Action.RESPONSE:
            if not status_allowed(status, upgrade_requested=upgrade):
                raise self._status_refused(party, status)
            if status == 101:
                # The upgrade coupling: the answer switches the requester half to a byte pipe.
                if by_us:
                    remote = TRANSITIONS[(_R, remote, Action.SWITCHED)]
                else:
                    local = TRANSITIONS[(_R, local, Action.SWITCHED)]
        if by_us:
            return target, remote, upgrade
        return local, target, upgrade

    @property
    def finished(self) -> bool:
        """Both halves ended and our END was emitted: the stream can be forgotten."""
        return self.local is _CLOSED and self.remote is _CLOSED and self.end_flushed

    def _illegal(self, party: Party, side: Side, state: HalfState, action: Action) -> ProtocolError:
        closed = state is _CLOSED
        if party is Party.LOCAL:
            if closed:
                return StreamClosedError(
                    self.stream_id, f"stream {self.stream_id}: we already sent END"
                )
            return LocalProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"{action.value} not allowed from the {side.value} "
                f"in state {state.value} on stream {self.stream_id}",
            )
        return StreamProtocolError(
            self.stream_id,
            ErrorCode.STREAM_CLOSED if closed else ErrorCode.PROTOCOL_ERROR,
            f"{_FRAME_OF[action]} not allowed from the {side.value} in state {state.value}",
        )

    def _status_refused(self, party: Party, status: int) -> ProtocolError:
        if party is Party.LOCAL:
            return LocalProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"status {status} not allowed on stream {self.stream_id} "
                f"(upgrade requested: {self.upgrade})",
            )
        return StreamProtocolError(
            self.stream_id,
            ErrorCode.PROTOCOL_ERROR,
            f"status {status} not allowed (upgrade requested: {self.upgrade})",
        )
