"""The stream state table, checked exhaustively and through the connection in both directions."""

from __future__ import annotations

import itertools

import pytest

from protocol import (
    Connection,
    ErrorCode,
    LocalProtocolError,
    Role,
    StreamClosedError,
    StreamEnded,
    StreamReset,
)
from protocol.frames import Data, Frame, Request, Response
from protocol.stream import TRANSITIONS, Action, HalfState, Side, next_state, status_allowed
from protocol.testing import frames, message, opened

R, S = Side.REQUESTER, Side.RESPONDER
IDLE, W, OPEN, C = HalfState.IDLE, HalfState.AWAIT_UPGRADE, HalfState.OPEN, HalfState.CLOSED

EXPECTED_LEGAL = {
    (R, IDLE, Action.REQUEST): OPEN,
    (R, IDLE, Action.REQUEST_UPGRADE): W,
    (R, W, Action.SWITCHED): OPEN,
    (R, W, Action.END): C,
    (R, OPEN, Action.DATA): OPEN,
    (R, OPEN, Action.END): C,
    (R, C, Action.SWITCHED): C,
    (S, IDLE, Action.RESPONSE): OPEN,
    (S, OPEN, Action.DATA): OPEN,
    (S, OPEN, Action.END): C,
}


@pytest.mark.parametrize(
    ("side", "state", "action"), list(itertools.product(Side, HalfState, Action))
)
def test_every_combination_is_exactly_as_specified(
    side: Side, state: HalfState, action: Action
) -> None:
    assert next_state(side, state, action) == EXPECTED_LEGAL.get((side, state, action))


def test_table_has_no_extra_entries() -> None:
    assert TRANSITIONS == EXPECTED_LEGAL


def test_nothing_leaves_closed_except_the_101_bookkeeping() -> None:
    for (_, state, action), target in TRANSITIONS.items():
        if state is C:
            assert action is Action.SWITCHED
            assert target is C


@pytest.mark.parametrize(
    ("status", "upgrade", "allowed"),
    [
        (101, True, True),
        (101, False, False),
        (100, True, False),
        (199, False, False),
        (200, False, True),
        (200, True, True),
        (599, False, True),
        (600, False, False),
    ],
)
def test_status_rules(status: int, upgrade: bool, allowed: bool) -> None:
    assert status_allowed(status, upgrade_requested=upgrade) is allowed


# -- through the connection: the local half ------------------------------------------------

LOCAL_ACTIONS = [Action.RESPONSE, Action.DATA, Action.END]


def gateway_with_local_requester_half(state: HalfState) -> tuple[Connection, int]:
    gateway = opened(Role.GATEWAY)
    if state is W:
        sid = gateway.send_request(method=b"GET", path=b"/", upgrade=True)
    elif state is OPEN:
        sid = gateway.send_request(method=b"GET", path=b"/")
    else:
        sid = gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    return gateway, sid


def agent_with_local_responder_half(state: HalfState) -> tuple[Connection, int]:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/")))  # requester half stays open
    if state is OPEN:
        agent.send_response(1, status=200)
    elif state is C:
        agent.send_response(1, status=200, end_stream=True)
    return agent, 1


def act_locally(conn: Connection, sid: int, action: Action) -> None:
    if action is Action.RESPONSE:
        conn.send_response(sid, status=200)
    elif action is Action.DATA:
        conn.send_data(sid, b"x")
    else:
        conn.end_stream(sid)


@pytest.mark.parametrize(
    ("side", "state", "action"),
    [(R, s, a) for s in (W, OPEN, C) for a in LOCAL_ACTIONS]
    + [(S, s, a) for s in (IDLE, OPEN, C) for a in LOCAL_ACTIONS],
)
def test_local_actions_follow_the_table(side: Side, state: HalfState, action: Action) -> None:
    if side is R:
        conn, sid = gateway_with_local_requester_half(state)
    else:
        conn, sid = agent_with_local_responder_half(state)
    conn.data_to_send()
    legal = next_state(side, state, action) is not None
    if legal:
        act_locally(conn, sid, action)
        assert conn.stream_ids() == [sid] or action is Action.END
    else:
        expected = StreamClosedError if state is C else LocalProtocolError
        with pytest.raises(expected) as info:
            act_locally(conn, sid, action)
        assert f"in state {state.value}" in str(info.value) or state is C
        assert conn.data_to_send() == []  # a refused call sends nothing


# -- through the connection: the remote half -----------------------------------------------


def agent_with_remote_requester_half(state: HalfState) -> Connection:
    agent = opened(Role.AGENT)
    head = Request(1, b"GET", b"/", upgrade=state is W, end_stream=state is C)
    agent.receive_data(message(head))
    return agent


def gateway_with_remote_responder_half(state: HalfState) -> Connection:
    gateway = opened(Role.GATEWAY)
    gateway.send_request(method=b"GET", path=b"/")  # our half stays open
    if state is OPEN:
        gateway.receive_data(message(Response(1, 200)))
    elif state is C:
        gateway.receive_data(message(Response(1, 200, end_stream=True)))
    return gateway


REMOTE_FRAMES: dict[Action, Frame] = {
    Action.RESPONSE: Response(1, 200),
    Action.DATA: Data(1, b"x"),
    Action.END: Data(1, b"", end_stream=True),
}


@pytest.mark.parametrize(
    ("side", "state", "action"),
    [(R, s, a) for s in (W, OPEN, C) for a in LOCAL_ACTIONS]
    + [(S, s, a) for s in (IDLE, OPEN, C) for a in LOCAL_ACTIONS],
)
def test_received_frames_follow_the_table(side: Side, state: HalfState, action: Action) -> None:
    conn = (
        agent_with_remote_requester_half(state)
        if side is R
        else gateway_with_remote_responder_half(state)
    )
    conn.events_received()
    conn.data_to_send()
    conn.receive_data(message(REMOTE_FRAMES[action]))
    events = conn.events_received()
    if next_state(side, state, action) is not None:
        assert not any(isinstance(e, StreamReset) for e in events)
        if action is Action.END:
            assert events == [StreamEnded(1)]
    else:
        code = ErrorCode.STREAM_CLOSED if state is C else ErrorCode.PROTOCOL_ERROR
        [reset] = events
        assert isinstance(reset, StreamReset)
        assert reset.error_code is code
        assert f"not allowed from the {side.value} in state {state.value}" in reset.message
        assert [f.stream_id for f in frames(conn.data_to_send())] == [1]  # type: ignore[union-attr]
        assert conn.stream_ids() == []
