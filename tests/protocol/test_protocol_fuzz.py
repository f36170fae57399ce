"""Fuzzing: random and mutated traffic only ever produces protocol-error outcomes.

Bad peer input must end as events (``StreamReset`` / ``ConnectionTerminated`` with a specific
code) and never as an exception out of ``receive_data``. ``INTERNAL_ERROR`` is what the
connection reports when its last-resort guard caught an unexpected exception, so seeing it here
means a bug, and fails the test.

The number of examples per test comes from ``PLANELINK_FUZZ_EXAMPLES`` (default 1500, about
6 s for the file on one core); CI can raise it for a longer run, e.g.
``PLANELINK_FUZZ_EXAMPLES=20000 pytest tests/protocol/test_protocol_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    Connection,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    LocalProtocolError,
    RequestReceived,
    ResponseReceived,
    Role,
    SendLimits,
    Settings,
    StreamReset,
)
from protocol.frames import HEADER
from protocol.testing import assert_invariants, opened

EXAMPLES = int(os.environ.get("PLANELINK_FUZZ_EXAMPLES", "1500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SMALL = Settings(
    max_frame_size=16_384,
    max_message_size=40_000,
    initial_stream_window=3000,
    connection_window=8000,
    max_concurrent_streams=4,
    max_header_block_size=4096,
)


def check_outcome_in_flight(conn: Connection, events: list[Event]) -> None:
    for event in events:
        if isinstance(event, ConnectionTerminated):
            # A peer may send INTERNAL_ERROR (or an unknown code, read as INTERNAL_ERROR);
            # our own last-resort guard is the only local source of it.
            assert event.remote or event.error_code is not ErrorCode.INTERNAL_ERROR, event
            assert "internal error on received data" not in event.reason, event
    assert_invariants(conn)


def check_outcome(conn: Connection, events: list[Event]) -> None:
    check_outcome_in_flight(conn, events)
    for msg in conn.data_to_send():
        assert isinstance(msg, bytes)
        assert len(msg) >= HEADER.size


# -- random bytes --------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5), st.booleans())
def test_random_messages_never_raise(messages: list[bytes], after_hello: bool) -> None:
    conn = opened(Role.AGENT, settings=SMALL) if after_hello else Connection(Role.AGENT)
    for msg in messages:
        conn.receive_data(msg)
        check_outcome(conn, conn.events_received())


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 255),
            st.integers(0, 12),
            st.integers(0, 3),
            st.integers(0, 9),
            st.integers(0, 1),
            st.binary(max_size=64),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_well_framed_frames_never_raise(
    items: list[tuple[int, int, int, int, int, bytes]],
) -> None:
    """Random header fields over correct lengths reach the handlers instead of the framer."""
    conn = opened(Role.AGENT, settings=SMALL)
    raw = b"".join(
        HEADER.pack(1 if version else 2, ftype, flags, 0, stream_id, len(payload)) + payload
        for _, ftype, flags, stream_id, version, payload in items
    )
    conn.receive_data(raw)
    check_outcome(conn, conn.events_received())


# -- mutated valid traffic -----------------------------------------------------------------

Mutator = Callable[[str, int, bytes], bytes]


def conversation(mutate: Mutator) -> tuple[Connection, Connection, list[Event]]:
    """A scripted exchange covering every frame type; ``mutate`` rewrites messages in transit.

    Local calls may legitimately fail once the peer's state diverged (a mutated frame reset a
    stream or ended the connection): those raise ``LocalProtocolError`` and are skipped.
    """
    gateway = Connection(Role.GATEWAY, settings=SMALL, limits=SendLimits(max_stream_buffer=5000))
    agent = Connection(
        Role.AGENT, settings=SMALL, identity={"agent-id": "a"}, capabilities=("exec",)
    )
    counters = {"gateway": 0, "agent": 0}
    events: list[Event] = []

    def pump() -> None:
        for _ in range(50):
            moved = False
            for name, src, dst in (("gateway", gateway, agent), ("agent", agent, gateway)):
                for msg in src.data_to_send():
                    counters[name] += 1
                    dst.receive_data(mutate(name, counters[name], msg))
                    moved = True
                    new = dst.events_received()
                    check_outcome_in_flight(dst, new)
                    events.extend(new)
                    consume(dst, new)
            if not moved:
                return

    def attempt(call: Callable[[], object]) -> None:
        with contextlib.suppress(LocalProtocolError):
            call()

    pump()
    get, post, exec_ = 1, 3, 5  # the ids the gateway allocates, even if a call fails
    attempt(
        lambda: gateway.send_request(
            method=b"GET",
            path=b"/api/v1/pods?watch=1",
            headers=[(b"accept", b"application/json")],
            end_stream=True,
        )
    )
    attempt(
        lambda: gateway.send_request(
            method=b"POST",
            path=b"/api/v1/namespaces/x/configmaps",
            headers=[(b"content-type", b"application/json")],
        )
    )
    attempt(
        lambda: gateway.send_request(
            method=b"GET", path=b"/exec", upgrade=True, headers=[(b"upgrade", b"SPDY/3.1")]
        )
    )
    attempt(lambda: gateway.send_data(post, b"p" * 4000))
    attempt(lambda: gateway.end_stream(post))
    attempt(lambda: gateway.ping(b"pingpong"))
    pump()
    attempt(lambda: agent.send_response(get, status=200, headers=[(b"x", b"y")]))
    attempt(lambda: agent.send_data(get, b"g" * 7000))
    attempt(lambda: agent.send_response(exec_, status=101))
    attempt(lambda: agent.send_response(post, status=201, end_stream=True))
    attempt(lambda: agent.ping(b"12345678"))
    pump()
    attempt(lambda: gateway.send_data(exec_, b"stdin"))
    attempt(lambda: agent.send_data(exec_, b"stdout" * 100))
    attempt(lambda: agent.end_stream(get))
    pump()
    attempt(lambda: gateway.reset_stream(exec_, ErrorCode.CANCEL, "caller went away"))
    attempt(lambda: agent.drain("bye"))
    pump()
    return gateway, agent, events


def consume(conn: Connection, events: list[Event]) -> None:
    for event in events:
        if isinstance(event, DataReceived):
            conn.consumed(event.stream_id, len(event.data))


def test_unmutated_conversation_is_clean() -> None:
    """The baseline the mutations start from really exercises the protocol."""
    _, _, events = conversation(lambda _side, _i, msg: msg)
    kinds = {type(e).__name__ for e in events}
    assert {
        "RequestReceived",
        "ResponseReceived",
        "DataReceived",
        "StreamEnded",
        "PingAcknowledged",
        "StreamReset",
        "GoAwayReceived",
        "ConnectionTerminated",
    } <= kinds
    assert sum(1 for e in events if isinstance(e, RequestReceived)) == 3
    assert sum(1 for e in events if isinstance(e, ResponseReceived)) == 3
    ends = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert ends
    assert all(e.error_code is ErrorCode.NO_ERROR for e in ends)


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 16)),
    st.tuples(st.just("header"), st.integers(0, 11), st.integers(0, 255)),
    st.tuples(st.just("duplicate"), st.just(0), st.just(0)),
)


def apply(msg: bytes, kind: str, where: int, value: int) -> bytes:  # noqa: PLR0911
    if not msg:
        return msg
    pos = where % len(msg)
    if kind == "flip":
        return msg[:pos] + bytes([msg[pos] ^ value]) + msg[pos + 1 :]
    if kind == "truncate":
        return msg[:pos]
    if kind == "insert":
        return msg[:pos] + bytes([value]) + msg[pos:]
    if kind == "delete":
        return msg[:pos] + msg[pos + value :]
    if kind == "header":  # rewrite one byte of the first frame header
        return msg[:where] + bytes([value]) + msg[where + 1 :]
    return msg + msg  # duplicate every frame of the message


@FUZZ
@given(
    st.dictionaries(
        st.tuples(st.sampled_from(["gateway", "agent"]), st.integers(1, 8)),
        mutations,
        min_size=1,
        max_size=3,
    )
)
def test_mutated_conversations_only_produce_protocol_errors(
    plan: dict[tuple[str, int], tuple[str, int, int]],
) -> None:
    def mutate(side: str, index: int, msg: bytes) -> bytes:
        step = plan.get((side, index))
        return msg if step is None else apply(msg, *step)

    gateway, agent, events = conversation(mutate)
    for conn in (gateway, agent):
        check_outcome(conn, conn.events_received())
    outcomes = sorted(
        {
            f"{type(e).__name__}:{e.error_code.name}"
            for e in events
            if isinstance(e, ConnectionTerminated | StreamReset)
        }
    )
    for outcome in outcomes:
        hypothesis.event(outcome)
