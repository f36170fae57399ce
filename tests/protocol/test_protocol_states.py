"""The stream state machine: ``Stream.apply`` on its own, then through the connection both ways."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    Connection,
    ConnectionState,
    ConnectionTerminated,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    Role,
    StreamClosedError,
    StreamEnded,
    StreamProtocolError,
    StreamReset,
)
from protocol.flow import ReceiveWindow
from protocol.frames import Data, Frame, GoAway, Request, Response
from protocol.stream import TRANSITIONS, Action, HalfState, Party, Side, Stream, status_allowed
from protocol.testing import Pair, frames, message, opened

R, S = Side.REQUESTER, Side.RESPONDER
IDLE, W, OPEN, C = HalfState.IDLE, HalfState.AWAIT_UPGRADE, HalfState.OPEN, HalfState.CLOSED
LOCAL, PEER = Party.LOCAL, Party.PEER
OTHER = {LOCAL: PEER, PEER: LOCAL}


# -- Stream.apply on its own --------------------------------------------------------------


def new_stream(*, requester: Party) -> Stream:
    """A fresh stream whose REQUEST is (to be) sent by ``requester``."""
    return Stream(1, opened_locally=requester is LOCAL, recv=ReceiveWindow(1000))


def half(stream: Stream, party: Party) -> HalfState:
    return stream.local if party is LOCAL else stream.remote


def snapshot(stream: Stream) -> tuple[HalfState, HalfState, bool]:
    return stream.local, stream.remote, stream.upgrade


def refused(party: Party, *, closed: bool) -> tuple[type[ProtocolError], ErrorCode]:
    """The error ``apply`` raises for an illegal action of ``party``."""
    if party is LOCAL and closed:
        return StreamClosedError, ErrorCode.STREAM_CLOSED
    if party is LOCAL:
        return LocalProtocolError, ErrorCode.PROTOCOL_ERROR
    return StreamProtocolError, ErrorCode.STREAM_CLOSED if closed else ErrorCode.PROTOCOL_ERROR


def assert_refused(
    stream: Stream, party: Party, action: Action, *, closed: bool, status: int | None = None
) -> ProtocolError:
    before = snapshot(stream)
    kind, code = refused(party, closed=closed)
    with pytest.raises(kind) as info:
        stream.apply(party, action, status=status)
    assert info.value.code is code
    assert snapshot(stream) == before  # checked and applied in one step: nothing half-done
    return info.value


@pytest.mark.parametrize("requester", [LOCAL, PEER])
def test_an_exchange_runs_request_data_end_response_data_end(requester: Party) -> None:
    responder = OTHER[requester]
    stream = new_stream(requester=requester)
    assert (stream.local, stream.remote) == (IDLE, IDLE)
    stream.apply(requester, Action.REQUEST)
    assert half(stream, requester) is OPEN
    stream.apply(requester, Action.DATA)
    stream.apply(requester, Action.END)
    assert half(stream, requester) is C
    assert half(stream, responder) is IDLE
    stream.apply(responder, Action.RESPONSE, status=200)
    assert half(stream, responder) is OPEN
    stream.apply(responder, Action.DATA)
    assert not stream.finished
    stream.apply(responder, Action.END)
    assert (stream.local, stream.remote) == (C, C)
    assert not stream.finished  # our END has not left yet
    stream.end_flushed = True
    assert stream.finished


@pytest.mark.parametrize("requester", [LOCAL, PEER])
def test_a_101_answer_switches_the_waiting_requester_to_a_byte_pipe(requester: Party) -> None:
    responder = OTHER[requester]
    stream = new_stream(requester=requester)
    stream.apply(requester, Action.REQUEST_UPGRADE)
    assert half(stream, requester) is W
    assert stream.upgrade
    error = assert_refused(stream, requester, Action.DATA, closed=False)
    assert "in state await-upgrade" in str(error)
    stream.apply(responder, Action.RESPONSE, status=101)
    assert (half(stream, requester), half(stream, responder)) == (OPEN, OPEN)
    for party in (requester, responder, requester):
        stream.apply(party, Action.DATA)
    stream.apply(requester, Action.END)
    stream.apply(responder, Action.END)
    assert (stream.local, stream.remote) == (C, C)


@pytest.mark.parametrize("requester", [LOCAL, PEER])
def test_a_101_after_the_requester_ended_leaves_it_closed(requester: Party) -> None:
    responder = OTHER[requester]
    stream = new_stream(requester=requester)
    stream.apply(requester, Action.REQUEST_UPGRADE)
    stream.apply(requester, Action.END)
    stream.apply(responder, Action.RESPONSE, status=101)
    assert (half(stream, requester), half(stream, responder)) == (C, OPEN)
    stream.apply(responder, Action.DATA)


@pytest.mark.parametrize("requester", [LOCAL, PEER])
def test_after_a_refused_upgrade_the_requester_may_only_end(requester: Party) -> None:
    responder = OTHER[requester]
    stream = new_stream(requester=requester)
    stream.apply(requester, Action.REQUEST_UPGRADE)
    stream.apply(responder, Action.RESPONSE, status=403)
    assert half(stream, requester) is W
    assert_refused(stream, requester, Action.DATA, closed=False)
    stream.apply(requester, Action.END)
    assert half(stream, requester) is C


@pytest.mark.parametrize("responder", [LOCAL, PEER])
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
def test_apply_checks_the_status_of_a_response(
    responder: Party, status: int, upgrade: bool, allowed: bool
) -> None:
    assert status_allowed(status, upgrade_requested=upgrade) is allowed
    requester = OTHER[responder]
    stream = new_stream(requester=requester)
    stream.apply(requester, Action.REQUEST_UPGRADE if upgrade else Action.REQUEST)
    if allowed:
        stream.apply(responder, Action.RESPONSE, status=status)
        assert half(stream, responder) is OPEN
        assert half(stream, requester) is (
            OPEN if upgrade and status == 101 else half(stream, requester)
        )
    else:
        error = assert_refused(stream, responder, Action.RESPONSE, closed=False, status=status)
        assert f"status {status} not allowed" in str(error)
        assert f"(upgrade requested: {upgrade})" in str(error)


def to_state(stream: Stream, party: Party, side: Side, state: HalfState) -> None:
    """Bring ``party``'s half (playing ``side``) to ``state`` with legal actions only."""
    if side is S:
        stream.apply(OTHER[party], Action.REQUEST)
        path = {IDLE: [], OPEN: [Action.RESPONSE], C: [Action.RESPONSE, Action.END]}[state]
    else:
        path = {
            IDLE: [],
            W: [Action.REQUEST_UPGRADE],
            OPEN: [Action.REQUEST],
            C: [Action.REQUEST, Action.END],
        }[state]
    for action in path:
        stream.apply(party, action, status=200 if action is Action.RESPONSE else None)
    assert half(stream, party) is state


ILLEGAL = [
    # (side, state, action, why)
    (R, OPEN, Action.REQUEST, "no second head"),
    (R, W, Action.REQUEST, "no second head"),
    (R, OPEN, Action.RESPONSE, "no RESPONSE from the requester"),
    (R, IDLE, Action.DATA, "no DATA before the head"),
    (R, W, Action.DATA, "no DATA before the 101"),
    (R, C, Action.DATA, "no DATA after END"),
    (R, C, Action.END, "no second END"),
    (R, C, Action.REQUEST, "nothing after END"),
    (S, IDLE, Action.DATA, "no DATA from the responder before its RESPONSE"),
    (S, IDLE, Action.END, "no END from the responder before its RESPONSE"),
    (S, IDLE, Action.REQUEST, "no REQUEST from the responder"),
    (S, OPEN, Action.RESPONSE, "no second head"),
    (S, C, Action.RESPONSE, "no head after END"),
    (S, C, Action.DATA, "no DATA after END"),
    (S, C, Action.END, "no second END"),
]


@pytest.mark.parametrize("party", [LOCAL, PEER])
@pytest.mark.parametrize(("side", "state", "action", "why"), ILLEGAL)
def test_illegal_actions_raise_the_right_error_and_change_nothing(
    party: Party, side: Side, state: HalfState, action: Action, why: str
) -> None:
    stream = new_stream(requester=party if side is R else OTHER[party])
    to_state(stream, party, side, state)
    status = 200 if action is Action.RESPONSE else None
    error = assert_refused(stream, party, action, closed=state is C, status=status)
    if party is PEER:
        assert f"not allowed from the {side.value} in state {state.value}" in str(error), why
    elif state is not C:
        assert f"{action.value} not allowed from the {side.value} in state {state.value}" in str(
            error
        ), why


@pytest.mark.parametrize("party", [LOCAL, PEER])
@pytest.mark.parametrize("side", [R, S])
def test_no_party_applies_switched_itself(party: Party, side: Side) -> None:
    stream = new_stream(requester=party if side is R else OTHER[party])
    to_state(stream, party, side, IDLE if side is S else W)
    assert_refused(stream, party, Action.SWITCHED, closed=False)


@pytest.mark.parametrize("party", [LOCAL, PEER])
def test_check_gives_the_verdict_of_apply_without_taking_the_edge(party: Party) -> None:
    stream = new_stream(requester=OTHER[party])
    stream.apply(OTHER[party], Action.REQUEST)
    stream.check(party, Action.RESPONSE)  # without a status: the table's verdict alone
    stream.check(party, Action.RESPONSE, status=200)
    assert half(stream, party) is IDLE
    kind, _ = refused(party, closed=False)
    with pytest.raises(kind, match="status 101 not allowed"):
        stream.check(party, Action.RESPONSE, status=101)
    with pytest.raises(kind, match="not allowed from the responder in state idle"):
        stream.check(party, Action.DATA)
    with pytest.raises(TypeError):
        stream.apply(party, Action.RESPONSE)
    assert snapshot(stream) == new_snapshot_after_request(party)


def new_snapshot_after_request(responder: Party) -> tuple[HalfState, HalfState, bool]:
    return (IDLE, OPEN, False) if responder is LOCAL else (OPEN, IDLE, False)


OPS = st.tuples(
    st.sampled_from([LOCAL, PEER]),
    st.sampled_from([a for a in Action if a is not Action.SWITCHED]),
    st.sampled_from([101, 200, 100, 404, 600]),
)


@hypothesis.settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(OPS, max_size=12))
def test_any_sequence_of_actions_either_applies_or_changes_nothing(
    opened_locally: bool, ops: list[tuple[Party, Action, int]]
) -> None:
    stream = Stream(1, opened_locally=opened_locally, recv=ReceiveWindow(1000))
    for party, action, status in ops:
        before = snapshot(stream)
        given = status if action is Action.RESPONSE else None
        try:
            stream.check(party, action, status=given)
        except (LocalProtocolError, StreamProtocolError) as error:
            verdict: str | None = str(error)
        else:
            verdict = None
        assert snapshot(stream) == before
        if verdict is not None:  # check foretold it: apply raises the same, changes nothing
            with pytest.raises((LocalProtocolError, StreamProtocolError)) as info:
                stream.apply(party, action, status=given)
            assert str(info.value) == verdict
            assert snapshot(stream) == before
            continue
        stream.apply(party, action, status=given)
        side = stream.local_side if party is LOCAL else stream.remote_side
        old = before[0] if party is LOCAL else before[1]
        assert (side, old, action) in TRANSITIONS
        assert half(stream, party) is TRANSITIONS[(side, old, action)]
        assert old is not C  # nothing leaves a closed half
        if action is Action.RESPONSE and status == 101:
            assert before[2]  # only an upgrade request allows a 101
            requester_before = before[1] if party is LOCAL else before[0]
            assert half(stream, OTHER[party]) is (OPEN if requester_before is W else C)
        else:
            assert half(stream, OTHER[party]) is (before[1] if party is LOCAL else before[0])


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
    legal = (side, state, action) in TRANSITIONS
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
    if (side, state, action) in TRANSITIONS:
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


# -- the connection's own states ------------------------------------------------------------


def states(pair: Pair) -> tuple[ConnectionState, ConnectionState]:
    return pair.gateway.state, pair.agent.state


def test_a_connection_waits_for_hello_then_opens_drains_and_closes() -> None:
    pair = Pair(Connection(Role.GATEWAY), Connection(Role.AGENT))
    assert states(pair) == (ConnectionState.AWAIT_HELLO, ConnectionState.AWAIT_HELLO)
    pair.pump()
    assert states(pair) == (ConnectionState.OPEN, ConnectionState.OPEN)
    sid = pair.gateway.send_request(method=b"GET", path=b"/", end_stream=True)
    pair.pump()
    pair.gateway.drain("bye")
    assert states(pair) == (ConnectionState.DRAINING, ConnectionState.OPEN)
    pair.pump()
    assert states(pair) == (ConnectionState.DRAINING, ConnectionState.DRAINING)
    pair.agent.send_response(sid, status=200, end_stream=True)
    pair.pump()
    assert states(pair) == (ConnectionState.CLOSED, ConnectionState.CLOSED)


def test_drain_before_the_peers_hello_closes_at_once() -> None:
    conn = Connection(Role.GATEWAY)
    conn.drain("not today")
    assert conn.state is ConnectionState.CLOSED
    assert conn.events_received() == [ConnectionTerminated(ErrorCode.NO_ERROR, "drained", False)]


def test_the_peers_goaway_while_draining_keeps_draining_until_an_error_code() -> None:
    gateway = opened(Role.GATEWAY)
    gateway.send_request(method=b"GET", path=b"/")
    gateway.drain()
    gateway.receive_data(message(GoAway(1, ErrorCode.NO_ERROR, "me too")))
    draining = gateway.state
    gateway.receive_data(message(GoAway(1, ErrorCode.INTERNAL_ERROR, "now")))
    assert (draining, gateway.state) == (ConnectionState.DRAINING, ConnectionState.CLOSED)


def test_nothing_leaves_closed() -> None:
    gateway = opened(Role.GATEWAY)
    gateway.close(ErrorCode.NO_ERROR, "done")
    gateway.events_received()
    gateway.drain("again")
    gateway.close(ErrorCode.INTERNAL_ERROR, "again")
    gateway.connection_lost()
    gateway.receive_data(message(GoAway(0, ErrorCode.NO_ERROR, "")))
    assert gateway.state is ConnectionState.CLOSED
    assert gateway.events_received() == []


def test_the_state_changes_only_through_the_connection() -> None:
    conn = Connection(Role.AGENT)
    with pytest.raises(AttributeError):
        conn.state = ConnectionState.OPEN  # type: ignore[misc]
