"""Which error a call or frame that is wrong in two ways gets: the stream state's comes first.

The state table judges before the head is encoded or decoded, so a head on a stream that may
not send one is refused for that (and the reason names the state), whatever the head holds.
"""

from __future__ import annotations

import pytest

from protocol import ErrorCode, LocalProtocolError, Role, Settings, StreamClosedError, StreamReset
from protocol.frames import Request, Response
from protocol.testing import message, opened


def test_a_second_head_with_a_bad_header_is_refused_for_the_state() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/")))
    agent.send_response(1, status=200)
    with pytest.raises(LocalProtocolError, match="response not allowed") as info:
        agent.send_response(1, status=200, headers=[(b"bad name", b"v")])
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_a_head_after_end_with_a_bad_header_is_refused_as_closed() -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/")))
    agent.send_response(1, status=200, end_stream=True)
    agent.receive_data(message(Request(3, b"GET", b"/")))  # keeps the connection busy
    with pytest.raises(StreamClosedError):
        agent.send_response(1, status=200, headers=[(b"bad name", b"v")])


@pytest.mark.parametrize("status", [0, 42, 99, 1000])
def test_a_status_outside_the_allowed_range_is_a_protocol_error(status: int) -> None:
    agent = opened(Role.AGENT)
    agent.receive_data(message(Request(1, b"GET", b"/")))
    with pytest.raises(LocalProtocolError, match=f"status {status} not allowed") as info:
        agent.send_response(1, status=status)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    agent.send_response(1, status=502)  # nothing changed: another head may still go out


def test_an_oversized_second_response_is_reset_for_the_state() -> None:
    gateway = opened(Role.GATEWAY, settings=Settings(max_header_block_size=1024))
    sid = gateway.send_request(method=b"GET", path=b"/")
    gateway.data_to_send()
    big = Response(sid, 200, ((b"big", b"v" * 2000),))
    gateway.receive_data(message(Response(sid, 200)) + big.encode(1))
    resets = [e for e in gateway.events_received() if isinstance(e, StreamReset)]
    assert resets == [
        StreamReset(
            sid,
            ErrorCode.PROTOCOL_ERROR,
            "RESPONSE not allowed from the responder in state open",
            False,
        )
    ]
