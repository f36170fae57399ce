"""The streams of one connection: which ids exist, which are idle or closed, who opened what.

Stream ids are role-based: the gateway opens odd ids, the agent even ids, each side's ids
strictly increase. From that alone an id not in the table is either *idle* (could still be
opened) or *closed* (was used, or skipped). The registry also counts open streams per
initiator (for MAX_CONCURRENT_STREAMS), remembers the last :data:`RESET_MEMORY` ids this side
reset (frames the peer had in flight on them are dropped silently), and keeps the
delivered-but-unconsumed byte counts of streams that closed normally ("lingering"), so the
connection window is only credited when the application really consumed them.

It never sends or emits anything; the connection decides what each answer means.
"""

from __future__ import annotations

from collections import OrderedDict

from protocol.errors import (
    ConnectionProtocolError,
    ErrorCode,
    LocalProtocolError,
    StreamProtocolError,
)
from protocol.frames import MAX_STREAM_ID, Role
from protocol.stream import Side, Stream

__all__ = ["RESET_MEMORY", "StreamRegistry"]

RESET_MEMORY = 1024
"""How many streams this side reset are remembered, so the peer's in-flight frames on them are
dropped silently instead of answered with RESET(STREAM_CLOSED)."""


class StreamRegistry:
    """Stream table, id allocation and validation, concurrency counts, reset memory."""

    __slots__ = (
        "_peer_parity",
        "last_peer_id",
        "lingering",
        "local_open",
        "next_local_id",
        "peer_open",
        "reset_ids",
        "streams",
    )

    def __init__(self, role: Role) -> None:
        self.streams: dict[int, Stream] = {}
        self.next_local_id = 1 if role is Role.GATEWAY else 2
        self._peer_parity = 0 if role is Role.GATEWAY else 1
        self.last_peer_id = 0
        """Highest id the peer opened (what our GOAWAY reports)."""
        self.local_open = 0
        self.peer_open = 0
        self.reset_ids: OrderedDict[int, None] = OrderedDict()
        self.lingering: dict[int, int] = {}

    def is_peer_id(self, stream_id: int) -> bool:
        """Whether ``stream_id`` has the parity of streams the peer opens."""
        return stream_id & 1 == self._peer_parity

    def is_idle(self, stream_id: int) -> bool:
        """Never opened, and could still be (by whichever side owns its parity)."""
        if self.is_peer_id(stream_id):
            return stream_id > self.last_peer_id
        return stream_id >= self.next_local_id

    def was_reset(self, stream_id: int) -> bool:
        """We reset this stream recently: the peer's late frames on it are expected."""
        return stream_id in self.reset_ids

    def remember_reset(self, stream_id: int) -> None:
        """Note that we reset ``stream_id`` (bounded memory, oldest forgotten first)."""
        ids = self.reset_ids
        ids[stream_id] = None
        if len(ids) > RESET_MEMORY:
            ids.popitem(last=False)

    def claim_local_id(self) -> int:
        """The next id for a stream we open; raises once the id space is used up."""
        stream_id = self.next_local_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError(
                ErrorCode.REFUSED_STREAM, "stream ids exhausted; open a new connection"
            )
        self.next_local_id += 2
        return stream_id

    def claim_peer_id(self, stream_id: int, role: Role) -> None:
        """Validate the id of a received REQUEST and record it as the peer's latest."""
        if not self.is_peer_id(stream_id):
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"REQUEST on stream {stream_id}: {role.name} streams are ours to open",
            )
        if stream_id <= self.last_peer_id:
            if stream_id in self.streams:
                raise StreamProtocolError(
                    stream_id, ErrorCode.PROTOCOL_ERROR, "second REQUEST head on a stream"
                )
            raise ConnectionProtocolError(
                ErrorCode.PROTOCOL_ERROR,
                f"REQUEST reuses stream id {stream_id} (last opened {self.last_peer_id})",
            )
        self.last_peer_id = stream_id

    def add(self, stream: Stream) -> None:
        """Start tracking an opened stream."""
        self.streams[stream.stream_id] = stream
        if stream.local_side is Side.REQUESTER:
            self.local_open += 1
        else:
            self.peer_open += 1

    def remove(self, stream: Stream, *, reset: bool) -> int:
        """Forget a stream; returns its delivered-unconsumed bytes to credit back now.

        After a reset those bytes will never be consumed, so the caller credits them to the
        connection at once (0 is returned otherwise: they linger until consumed).
        """
        del self.streams[stream.stream_id]
        if stream.local_side is Side.REQUESTER:
            self.local_open -= 1
        else:
            self.peer_open -= 1
        buffered = stream.recv.buffered
        if reset or not buffered:
            return buffered
        self.lingering[stream.stream_id] = buffered
        return 0

    def release_lingering(self, stream_id: int) -> int:
        """Forget a closed stream's unconsumed bytes (the application gave it up); returns them."""
        return self.lingering.pop(stream_id, 0)

    def consume_lingering(self, stream_id: int, n: int) -> bool:
        """Account ``n`` consumed bytes of a closed stream; ``False`` if it is not tracked."""
        held = self.lingering.get(stream_id)
        if held is None:
            return False
        if n > held:
            raise LocalProtocolError(
                ErrorCode.FLOW_CONTROL_ERROR,
                f"consumed {n} bytes on closed stream {stream_id}, only {held} were outstanding",
            )
        if n == held:
            del self.lingering[stream_id]
        else:
            self.lingering[stream_id] = held - n
        return True
