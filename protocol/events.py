"""Events the connection hands to the application: small immutable values.

The application reads them with ``Connection.events_received()`` after every call that
feeds bytes in or pulls bytes out. Events of one stream arrive in wire order:
``RequestReceived``/``ResponseReceived``, ``DataReceived``..., ``StreamEnded`` (or a
``StreamReset`` at any point, after which nothing more comes for that stream).
"""

from __future__ import annotations

import dataclasses

from protocol.errors import ErrorCode
from protocol.headers import Headers
from protocol.hello import PeerInfo

__all__ = [
    "ConnectionTerminated",
    "DataReceived",
    "Event",
    "GoAwayReceived",
    "HelloReceived",
    "PingAcknowledged",
    "ReplicasReceived",
    "RequestReceived",
    "ResponseReceived",
    "SendCapacityAvailable",
    "StreamEnded",
    "StreamReset",
]


@dataclasses.dataclass(frozen=True, slots=True)
class HelloReceived:
    """The peer's HELLO was accepted: version negotiated, peer settings now in force."""

    peer: PeerInfo


@dataclasses.dataclass(frozen=True, slots=True)
class RequestReceived:
    """The peer opened ``stream_id`` with a request head (we are the responder)."""

    stream_id: int
    method: bytes
    path: bytes
    headers: Headers
    target: bytes
    upgrade: bool
    """The request asks for a protocol upgrade; answer 101 to turn the stream into a pipe."""
    end_stream: bool = False
    """The REQUEST frame carried END_STREAM: the request has no body, and a ``StreamEnded``
    for this stream follows right after this event. ``False`` means a body may follow (read
    until ``StreamEnded``). Defaults to ``False`` so events built by hand without it (tests,
    adapters) keep working; the connection always sets it."""


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseReceived:
    """The response head for a stream we opened."""

    stream_id: int
    status: int
    headers: Headers

    @property
    def upgraded(self) -> bool:
        """A 101: the stream is now a raw byte pipe in both directions."""
        return self.status == 101


@dataclasses.dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes (or upgraded-stream bytes).

    ``data`` is a read-only ``memoryview`` into the received message (no copy). Call
    ``Connection.consumed(stream_id, len(data))`` once the bytes are handed on, so the
    peer gets credit back; copy with ``bytes(data)`` to keep them longer than that.
    """

    stream_id: int
    data: memoryview


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed ``stream_id``: it sends nothing more on it."""

    stream_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class StreamReset:
    """``stream_id`` is gone in both directions; nothing more comes for it.

    ``remote`` is true when the peer announced it: its RESET, its GOAWAY (streams it never
    processed are reported with ``REFUSED_STREAM``: safe to retry elsewhere), or the transport
    closing (``CONNECTION_LOST``). It is false when this side reset the stream because the peer
    broke the rules on it, or because this side closed the connection. A stream the
    application resets itself with ``reset_stream`` produces no event.
    """

    stream_id: int
    error_code: ErrorCode
    message: str
    remote: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SendCapacityAvailable:
    """``send_data`` on ``stream_id`` would now accept ``capacity`` bytes again.

    Only sent for a stream whose earlier ``send_data`` accepted less than offered.
    """

    stream_id: int
    capacity: int


@dataclasses.dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """The PONG for one of our PINGs arrived; ``payload`` is the 8 bytes we sent."""

    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer is draining (``NO_ERROR``) or closing (any other code).

    Streams we opened with ids above ``last_stream_id`` were not processed and are reported
    as ``StreamReset(REFUSED_STREAM)``; the others may finish when draining.
    """

    last_stream_id: int
    error_code: ErrorCode
    debug: str


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicasReceived:
    """(Agent only.) The gateway's live replicas now: ``ids``, distinct, its own included.

    Each frame replaces the previous set; before the first one the set is the gateway's own
    ``gateway-id`` from its HELLO.
    """

    ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is finished; flush ``data_to_send()`` once more and close the socket.

    ``error_code`` is ``NO_ERROR`` after a completed drain. ``remote`` is true when the end
    came from the peer (its GOAWAY, a drain it started, the transport closing) and false when
    this side ended it (``close()``, ``drain()``, or a peer violation it detected, named in
    ``reason`` and sent to the peer in a GOAWAY).
    """

    error_code: ErrorCode
    reason: str
    remote: bool


Event = (
    HelloReceived
    | RequestReceived
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | SendCapacityAvailable
    | PingAcknowledged
    | GoAwayReceived
    | ReplicasReceived
    | ConnectionTerminated
)
"""Any event."""
