"""Test support: a gateway and an agent wired back to back, and small frame helpers.

Pure and deterministic like the rest of the package (no I/O, no clocks); the protocol tests
use it, and adapter tests may use :class:`Pair` to drive one side by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from protocol import (
    Connection,
    ConnectionTerminated,
    DataReceived,
    Event,
    FloodLimits,
    Role,
    SendLimits,
    Settings,
)
from protocol.frames import Frame, decode_message, encode_frames
from protocol.hello import build_hello

__all__ = [
    "Pair",
    "assert_invariants",
    "body_of",
    "frames",
    "hello",
    "message",
    "opened",
    "terminated",
]

V1 = 1


def hello(role: Role, settings: Settings | None = None, versions: Iterable[int] = (1,)) -> bytes:
    """An encoded HELLO frame as a peer would send it."""
    return build_hello(
        role=role,
        versions=versions,
        settings=settings or Settings(),
        identity={},
        capabilities=(),
    )


def frames(messages: Iterable[bytes], max_frame_size: int = 16_777_215) -> list[Frame]:
    """Decode every frame of every message."""
    out: list[Frame] = []
    for message in messages:
        out.extend(frame for _, frame in decode_message(message, max_frame_size=max_frame_size))
    return out


def message(*items: Frame) -> bytes:
    """Encode frames into one message (negotiated version 1)."""
    return encode_frames(items, V1)


def opened(
    role: Role,
    *,
    settings: Settings | None = None,
    peer: Settings | None = None,
    limits: SendLimits | None = None,
    flood: FloodLimits | None = None,
) -> Connection:
    """A connection of ``role`` that has sent its HELLO and received the peer's."""
    conn = Connection(role, settings=settings, limits=limits, flood=flood)
    conn.data_to_send()
    other = Role.AGENT if role is Role.GATEWAY else Role.GATEWAY
    conn.receive_data(hello(other, peer))
    conn.events_received()
    return conn


@dataclasses.dataclass
class Pair:
    """A gateway and an agent connected back to back, with their events collected."""

    gateway: Connection
    agent: Connection
    gateway_events: list[Event] = dataclasses.field(default_factory=list)
    agent_events: list[Event] = dataclasses.field(default_factory=list)

    @classmethod
    def create(
        cls,
        *,
        gateway_settings: Settings | None = None,
        agent_settings: Settings | None = None,
        gateway_limits: SendLimits | None = None,
        agent_limits: SendLimits | None = None,
    ) -> Pair:
        pair = cls(
            Connection(Role.GATEWAY, settings=gateway_settings, limits=gateway_limits),
            Connection(
                Role.AGENT,
                settings=agent_settings,
                limits=agent_limits,
                identity={"agent-id": "a-1", "plane-name": "p"},
                capabilities=("exec",),
            ),
        )
        pair.pump()
        return pair

    def collect(self) -> None:
        self.gateway_events += self.gateway.events_received()
        self.agent_events += self.agent.events_received()

    def pump(self, budget: int | None = None, *, max_rounds: int = 10_000) -> int:
        """Move messages both ways until neither side has anything to send."""
        moved = 0
        for _ in range(max_rounds):
            progress = False
            for src, dst in ((self.gateway, self.agent), (self.agent, self.gateway)):
                for msg in src.data_to_send(budget):
                    dst.receive_data(msg)
                    moved += len(msg)
                    progress = True
            self.collect()
            if not progress:
                return moved
        raise AssertionError("pump did not settle")

    def take(self, side: str) -> list[Event]:
        events = self.gateway_events if side == "gateway" else self.agent_events
        out = list(events)
        events.clear()
        return out


def body_of(events: Iterable[Event], stream_id: int) -> bytes:
    """Concatenated DATA of one stream."""
    return b"".join(
        bytes(e.data) for e in events if isinstance(e, DataReceived) and e.stream_id == stream_id
    )


def terminated(events: Iterable[Event]) -> list[ConnectionTerminated]:
    return [e for e in events if isinstance(e, ConnectionTerminated)]


def assert_invariants(conn: Connection) -> None:
    """Buffering and flow-control bounds that must hold after any call, whatever the peer did."""
    limits = conn.send_limits
    assert 0 <= conn.outbound_buffered <= limits.max_connection_buffer
    assert conn.connection_send_window >= 0
    assert 0 <= conn.inbound_buffered <= conn.local_settings.connection_window
    assert conn.connection_receive_window >= 0
    stream_window = conn.local_settings.initial_stream_window
    for sid in conn.stream_ids():
        assert 0 <= conn.stream_outbound_buffered(sid) <= limits.max_stream_buffer
        assert conn.stream_send_window(sid) >= 0
        assert conn.stream_receive_window(sid) >= 0
        assert 0 <= conn.stream_inbound_buffered(sid) <= stream_window
