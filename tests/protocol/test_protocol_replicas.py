"""REPLICAS (0x0A): the gateway's live replicas, told only to an agent that offered `replicas`."""

from __future__ import annotations

import pytest

from protocol import (
    CAPABILITY_REPLICAS,
    Connection,
    ConnectionState,
    ConnectionTerminated,
    ErrorCode,
    LocalProtocolError,
    ReplicasReceived,
    Role,
)
from protocol.frames import (
    MAX_REPLICA_ID_SIZE,
    MAX_REPLICA_IDS,
    Replicas,
    decode_message,
)
from protocol.headers import HeaderBlockError
from protocol.hello import build_hello
from protocol.settings import Settings
from protocol.testing import frames, terminated


def _agent_hello(*capabilities: str, settings: Settings | None = None) -> bytes:
    return build_hello(
        role=Role.AGENT,
        versions=(1,),
        settings=settings or Settings(),
        identity={},
        capabilities=capabilities,
    )


def _gateway_hello() -> bytes:
    return build_hello(
        role=Role.GATEWAY,
        versions=(1,),
        settings=Settings(),
        identity={"gateway-id": "gw-0"},
        capabilities=(),
    )


def _gateway(*agent_capabilities: str, agent_settings: Settings | None = None) -> Connection:
    conn = Connection(Role.GATEWAY, identity={"gateway-id": "gw-0"})
    conn.data_to_send()
    conn.receive_data(_agent_hello(*agent_capabilities, settings=agent_settings))
    conn.events_received()
    return conn


def _agent(*capabilities: str) -> Connection:
    conn = Connection(Role.AGENT, capabilities=capabilities)
    conn.data_to_send()
    conn.receive_data(_gateway_hello())
    conn.events_received()
    return conn


def _failed(conn: Connection) -> ConnectionTerminated:
    [ended] = terminated(conn.events_received())
    assert conn.state is ConnectionState.CLOSED
    return ended


# -- bytes ---------------------------------------------------------------------------------


def test_replicas_frame_bytes_are_u16_length_and_token_entries() -> None:
    encoded = Replicas((b"gw-0", b"gw-1")).encode(1)
    assert encoded == bytes.fromhex(
        "01 0a 00 00 00000000 0000000c  0004 67772d30  0004 67772d31".replace(" ", "")
    )
    [(version, frame)] = decode_message(encoded, max_frame_size=65536)
    assert version == 1
    assert frame == Replicas((b"gw-0", b"gw-1"))


def test_the_largest_replicas_frame_round_trips() -> None:
    ids = tuple(f"{i:03d}".encode() + b"r" * (MAX_REPLICA_ID_SIZE - 3) for i in range(256))
    encoded = Replicas(ids).encode(1)
    assert len(encoded) == 12 + MAX_REPLICA_IDS * (2 + MAX_REPLICA_ID_SIZE)
    [(_, frame)] = decode_message(encoded, max_frame_size=1 << 20)
    assert frame == Replicas(ids)


@pytest.mark.parametrize(
    ("ids", "fault"),
    [
        ((), "0 replica ids"),
        ((b"a b",), "not a non-empty HTTP token"),
        ((b"",), "not a non-empty HTTP token"),
        ((b"x" * (MAX_REPLICA_ID_SIZE + 1),), "longer than 253"),
        ((b"a", b"a"), "appears twice"),
        (tuple(str(i).encode() for i in range(MAX_REPLICA_IDS + 1)), "257 replica ids"),
    ],
)
def test_an_invalid_id_list_is_not_encoded(ids: tuple[bytes, ...], fault: str) -> None:
    with pytest.raises(HeaderBlockError, match=fault):
        Replicas(ids).encode(1)


def _raw(payload_hex: str) -> bytes:
    payload = bytes.fromhex(payload_hex.replace(" ", ""))
    return bytes.fromhex("010a0000 00000000") + len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize(
    ("payload", "fault"),
    [
        ("", "0 replica ids"),
        ("00", "length truncated"),
        ("0005 6777", "id truncated"),
        ("0000", "not a non-empty HTTP token"),
        ("0003 612062", "not a non-empty HTTP token"),
        ("0001 61 0001 61", "appears twice"),
        ("".join(f"0002{i:04x}" for i in range(MAX_REPLICA_IDS + 1)), "more than 256"),
    ],
)
def test_a_malformed_replicas_frame_is_a_connection_protocol_error(
    payload: str, fault: str
) -> None:
    agent = _agent(CAPABILITY_REPLICAS)
    agent.receive_data(_raw(payload))
    ended = _failed(agent)
    assert ended.error_code is ErrorCode.PROTOCOL_ERROR
    assert "malformed REPLICAS" in ended.reason
    assert fault in ended.reason


def test_replicas_on_a_stream_is_a_connection_protocol_error() -> None:
    agent = _agent(CAPABILITY_REPLICAS)
    agent.receive_data(bytes.fromhex("010a0000 00000001 00000003 000161".replace(" ", "")))
    ended = _failed(agent)
    assert ended.error_code is ErrorCode.PROTOCOL_ERROR
    assert "REPLICAS frame on stream 1" in ended.reason


# -- who may send it ---------------------------------------------------------------------


def test_an_agent_that_offered_replicas_receives_the_set() -> None:
    gateway = _gateway("upgrade", CAPABILITY_REPLICAS)
    agent = _agent("upgrade", CAPABILITY_REPLICAS)
    gateway.send_replicas(["gw-0", "gw-1", "gw-2"])
    for message in gateway.data_to_send():
        agent.receive_data(message)
    assert agent.events_received() == [ReplicasReceived(("gw-0", "gw-1", "gw-2"))]
    assert agent.state is ConnectionState.OPEN


def test_the_gateway_never_sends_replicas_to_an_agent_that_did_not_offer_it() -> None:
    gateway = _gateway("upgrade")
    with pytest.raises(LocalProtocolError, match="did not offer 'replicas'") as raised:
        gateway.send_replicas(["gw-0", "gw-1"])
    assert raised.value.code is ErrorCode.PROTOCOL_ERROR
    assert gateway.data_to_send() == []


def test_replicas_is_not_sent_before_the_agents_hello() -> None:
    gateway = Connection(Role.GATEWAY)
    gateway.data_to_send()
    with pytest.raises(LocalProtocolError, match="HELLO not received"):
        gateway.send_replicas(["gw-0"])
    assert gateway.data_to_send() == []


def test_an_agent_does_not_send_replicas() -> None:
    agent = _agent(CAPABILITY_REPLICAS)
    with pytest.raises(LocalProtocolError, match="only a gateway"):
        agent.send_replicas(["gw-0"])


def test_an_invalid_or_oversized_set_is_refused_locally() -> None:
    gateway = _gateway(CAPABILITY_REPLICAS)
    with pytest.raises(LocalProtocolError, match="appears twice") as raised:
        gateway.send_replicas(["gw-0", "gw-0"])
    assert raised.value.code is ErrorCode.FRAME_SIZE_ERROR
    with pytest.raises(LocalProtocolError, match="not a non-empty HTTP token"):
        gateway.send_replicas(["gé"])
    assert gateway.data_to_send() == []
    # 256 ids of 253 bytes are 65 kB: above the smallest MAX_FRAME_SIZE an agent may set.
    small = _gateway(
        CAPABILITY_REPLICAS,
        agent_settings=Settings(max_frame_size=16384, max_header_block_size=16384),
    )
    big = [f"{i:03d}" + "r" * 250 for i in range(MAX_REPLICA_IDS)]
    with pytest.raises(LocalProtocolError, match="exceeds the peer's MAX_FRAME_SIZE"):
        small.send_replicas(big)
    assert small.data_to_send() == []


def test_an_agent_that_did_not_offer_replicas_fails_on_receiving_one() -> None:
    agent = _agent("upgrade")
    agent.receive_data(Replicas((b"gw-0", b"gw-1")).encode(1))
    ended = _failed(agent)
    assert ended.error_code is ErrorCode.PROTOCOL_ERROR
    assert "'replicas' was not offered" in ended.reason
    [goaway] = frames(agent.data_to_send())
    assert getattr(goaway, "error_code", None) is ErrorCode.PROTOCOL_ERROR


def test_a_gateway_fails_on_receiving_replicas() -> None:
    gateway = _gateway(CAPABILITY_REPLICAS)
    gateway.receive_data(Replicas((b"gw-0",)).encode(1))
    ended = _failed(gateway)
    assert ended.error_code is ErrorCode.PROTOCOL_ERROR
    assert "only a gateway sends it" in ended.reason


def test_replicas_before_the_gateways_hello_is_a_protocol_error() -> None:
    agent = Connection(Role.AGENT, capabilities=[CAPABILITY_REPLICAS])
    agent.data_to_send()
    agent.receive_data(Replicas((b"gw-0",)).encode(1))
    ended = _failed(agent)
    assert ended.error_code is ErrorCode.PROTOCOL_ERROR
    assert "REPLICAS frame before the peer's HELLO" in ended.reason


def test_a_flood_of_replicas_frames_is_cut_off() -> None:
    agent = _agent(CAPABILITY_REPLICAS)
    one = Replicas((b"gw-0",)).encode(1)
    agent.receive_data(one * 1001, now=0.0)
    ended = _failed(agent)
    assert ended.error_code is ErrorCode.ENHANCE_YOUR_CALM
    assert agent.flood_limit == "idle_frame"
