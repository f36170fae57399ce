"""Outbound side of a connection: bounded send buffers, send windows and fair scheduling.

Frames leave in this order:

1. control frames the local side decided to send (HELLO, REQUEST/RESPONSE heads, RESET,
   WINDOW_UPDATE, PING, GOAWAY), first in first out, already encoded;
2. answers the peer provoked: the one pending PONG (a newer PING replaces the payload of a
   PONG not yet sent: answers to PINGs are merged, so a PING flood queues one frame), then
   RESETs that refuse or fault the peer's streams, first in first out. They are counted
   (:attr:`Scheduler.answers_queued`) so the connection can cut off a peer that provokes
   them faster than it reads them; they never overtake our HELLO;
3. DATA, round-robin over the streams that have something sendable: each turn a stream
   emits at most one frame of ``min(queued, stream window, connection window,
   peer MAX_FRAME_SIZE)`` bytes and goes to the back of the ring. A 200-byte response
   therefore waits for at most one frame of each other ready stream, never for a whole
   download.

Frames are packed into messages no larger than the peer's MAX_MESSAGE_SIZE. Payload bytes
are never copied here except by the final ``b"".join`` that builds each message.

Invariants this module keeps: a stream's bytes in flight never exceed the credit the peer
granted (windows never go negative); queued bytes never exceed :class:`SendLimits`; at most
one PONG is ever queued; a
stream's END is emitted only after all its queued bytes. It never decides whether a call is
legal: the connection checks states before calling in.
"""

from __future__ import annotations

from collections import deque

from protocol.frames import HEADER, FrameType
from protocol.settings import (
    FRAME_HEADER_SIZE,
    MIN_MAX_FRAME_SIZE,
    MIN_MAX_MESSAGE_SIZE,
    SendLimits,
)

__all__ = ["Pulled", "Scheduler"]

_DATA = int(FrameType.DATA)
_pack_header = HEADER.pack


class _Outbound:
    """Send state of one stream."""

    __slots__ = ("chunks", "end_pending", "in_ring", "queued", "stream_id", "window")

    def __init__(self, stream_id: int, window: int) -> None:
        self.stream_id = stream_id
        self.window = window
        self.chunks: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.end_pending = False
        self.in_ring = False

    def sendable(self, connection_window: int) -> bool:
        if self.queued:
            return self.window > 0 and connection_window > 0
        return self.end_pending


class Pulled:
    """Result of :meth:`Scheduler.pull`."""

    __slots__ = ("ended", "messages", "unblocked")

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.ended: list[int] = []
        """Streams whose END frame was emitted by this pull."""
        self.unblocked: list[tuple[int, int]] = []
        """``(stream_id, capacity)`` for streams whose send buffer has room again."""


class _Batch:
    """Packs whole frames into messages no larger than the peer's MAX_MESSAGE_SIZE."""

    __slots__ = ("limit", "messages", "parts", "size")

    def __init__(self, limit: int, messages: list[bytes]) -> None:
        self.limit = limit
        self.messages = messages
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def add(self, first_part: bytes, frame_size: int) -> None:
        """Start a frame of ``frame_size`` bytes; its payload parts follow in ``parts``."""
        if self.size + frame_size > self.limit:
            self.flush()
        self.parts.append(first_part)
        self.size += frame_size

    def flush(self) -> None:
        if self.parts:
            self.messages.append(b"".join(self.parts))
            self.parts = []
            self.size = 0


class Scheduler:
    """Queues, windows and round-robin for everything a connection sends."""

    def __init__(self, *, limits: SendLimits, version: int) -> None:
        self.limits = limits
        self.version = version
        self.max_frame_size = MIN_MAX_FRAME_SIZE
        """Peer's MAX_FRAME_SIZE (the minimum until its HELLO arrives)."""
        self.max_message_size = MIN_MAX_MESSAGE_SIZE
        """Peer's MAX_MESSAGE_SIZE (the minimum until its HELLO arrives)."""
        self.connection_window = 0
        self.initial_stream_window = 0
        self.queued_total = 0
        self._control: deque[bytes] = deque()
        self._pong: bytes | None = None
        self._answers: deque[bytes] = deque()
        self._streams: dict[int, _Outbound] = {}
        self._ring: deque[_Outbound] = deque()
        self._blocked: set[int] = set()

    # -- configuration ---------------------------------------------------------------------

    def configure(
        self,
        *,
        max_frame_size: int,
        max_message_size: int,
        connection_window: int,
        initial_stream_window: int,
        version: int,
    ) -> None:
        """Apply the peer's settings once its HELLO arrived."""
        self.max_frame_size = max_frame_size
        self.max_message_size = max_message_size
        self.connection_window = connection_window
        self.initial_stream_window = initial_stream_window
        self.version = version

    # -- queries -------------------------------------------------------------------------

    def capacity(self, stream_id: int) -> int:
        """Bytes ``enqueue`` would accept for ``stream_id`` right now."""
        out = self._streams.get(stream_id)
        if out is None:
            return 0
        return min(
            self.limits.max_stream_buffer - out.queued,
            self.limits.max_connection_buffer - self.queued_total,
        )

    def queued(self, stream_id: int) -> int:
        """DATA bytes queued for ``stream_id`` and not yet emitted."""
        out = self._streams.get(stream_id)
        return 0 if out is None else out.queued

    def window(self, stream_id: int) -> int:
        """Send credit left on ``stream_id`` (0 for an unknown stream)."""
        out = self._streams.get(stream_id)
        return 0 if out is None else out.window

    @property
    def answers_queued(self) -> int:
        """Answers to the peer (RESETs) queued and not yet emitted; the PONG is not counted."""
        return len(self._answers)

    @property
    def has_pending(self) -> bool:
        """Whether :meth:`pull` would return at least one message."""
        if self._control or self._answers or self._pong is not None:
            return True
        return any(out.sendable(self.connection_window) for out in self._ring)

    # -- mutation ------------------------------------------------------------------------

    def control(self, frame: bytes) -> None:
        """Queue an encoded control frame (emitted before any DATA)."""
        self._control.append(frame)

    def pong(self, frame: bytes) -> None:
        """Queue the PONG answering the peer's latest PING, replacing one not yet emitted."""
        self._pong = frame

    def answer(self, frame: bytes) -> None:
        """Queue an encoded frame that answers the peer (emitted after local control frames)."""
        self._answers.append(frame)

    def add_stream(self, stream_id: int) -> None:
        """Start tracking ``stream_id`` with the peer's initial stream window."""
        self._streams[stream_id] = _Outbound(stream_id, self.initial_stream_window)

    def enqueue(self, stream_id: int, data: bytes | memoryview) -> int:
        """Queue as much of ``data`` as the buffer limits allow; returns the count taken.

        ``bytes`` and read-only views are kept by reference; writable views are copied.
        """
        out = self._streams[stream_id]
        room = min(
            self.limits.max_stream_buffer - out.queued,
            self.limits.max_connection_buffer - self.queued_total,
        )
        size = len(data)
        if size > room:
            self._blocked.add(stream_id)
            if room <= 0:
                return 0
            data = memoryview(data)[:room]
            size = room
        if size:
            if type(data) is not bytes and not memoryview(data).readonly:
                data = bytes(data)  # the caller may reuse a writable buffer: copy what we took
            out.chunks.append(data)
            out.queued += size
            self.queued_total += size
            self._wake(out)
        return size

    def end(self, stream_id: int) -> None:
        """Queue END after the stream's data."""
        out = self._streams[stream_id]
        out.end_pending = True
        self._wake(out)

    def grow_window(self, stream_id: int, window: int) -> None:
        """Set a stream's send window (already checked for overflow) and wake it."""
        out = self._streams.get(stream_id)
        if out is not None:
            out.window = window
            self._wake(out)

    def grow_connection_window(self, window: int) -> None:
        """Set the connection send window (already checked for overflow)."""
        was_zero = self.connection_window <= 0
        self.connection_window = window
        if was_zero:
            for out in self._streams.values():
                self._wake(out)

    def discard(self, stream_id: int) -> None:
        """Forget a stream and drop what it had queued (after RESET)."""
        out = self._streams.pop(stream_id, None)
        if out is not None:
            self.queued_total -= out.queued
            out.chunks.clear()
            out.queued = 0
            out.end_pending = False
            self._blocked.discard(stream_id)

    def discard_all_data(self) -> None:
        """Drop every stream's queued data and every answer (connection closing); local
        control frames (the GOAWAY saying why) stay."""
        for sid in list(self._streams):
            self.discard(sid)
        self._ring.clear()
        self._answers.clear()
        self._pong = None

    def _wake(self, out: _Outbound) -> None:
        if not out.in_ring and out.sendable(self.connection_window):
            out.in_ring = True
            self._ring.append(out)

    # -- pulling -------------------------------------------------------------------------

    def pull(self, budget: int | None = None) -> Pulled:
        """Emit frames as messages: all control frames first, then DATA round-robin.

        ``budget`` bounds the total bytes returned; it may be exceeded by at most one
        control frame, or a 12-byte DATA header, so a small budget still makes progress.
        """
        result = Pulled()
        if self._control or self._ring or self._answers or self._pong is not None:
            batch = _Batch(self.max_message_size, result.messages)
            left = budget if budget is not None else 1 << 62
            if self._control:
                left = _pull_frames(self._control, batch, left)
            if left > 0 and not self._control:
                left = self._pull_answers(batch, left)
            if left > 0 and self._ring:
                self._pull_data(batch, left, result.ended)
            batch.flush()
        if self._blocked:
            self._unblock(result.unblocked)
        return result

    def _pull_answers(self, batch: _Batch, left: int) -> int:
        pong = self._pong
        if pong is not None:
            self._pong = None
            batch.add(pong, len(pong))
            left -= len(pong)
        return _pull_frames(self._answers, batch, left)

    def _pull_data(self, batch: _Batch, left: int, ended: list[int]) -> None:
        ring = self._ring
        max_frame = self.max_frame_size
        version = self.version
        while ring and left > 0:
            out = ring.popleft()
            conn_window = self.connection_window
            if not out.sendable(conn_window):
                out.in_ring = False
                continue
            n = out.queued
            if n:
                n = min(n, out.window, conn_window, max_frame, max(1, left - FRAME_HEADER_SIZE))
            end = out.end_pending and n == out.queued
            header = _pack_header(version, _DATA, 1 if end else 0, 0, out.stream_id, n)
            batch.add(header, FRAME_HEADER_SIZE + n)
            if n:
                self._take(out, n, batch.parts)
            left -= FRAME_HEADER_SIZE + n
            if end:
                out.in_ring = False
                del self._streams[out.stream_id]
                ended.append(out.stream_id)
            elif out.sendable(self.connection_window):
                ring.append(out)
            else:
                out.in_ring = False

    def _take(self, out: _Outbound, n: int, parts: list[bytes | memoryview]) -> None:
        out.queued -= n
        out.window -= n
        self.connection_window -= n
        self.queued_total -= n
        chunks = out.chunks
        while n:
            chunk = chunks[0]
            size = len(chunk)
            if size <= n:
                chunks.popleft()
                parts.append(chunk)
                n -= size
            else:
                view = memoryview(chunk)
                parts.append(view[:n])
                chunks[0] = view[n:]
                n = 0

    def _unblock(self, unblocked: list[tuple[int, int]]) -> None:
        half = self.limits.max_stream_buffer // 2
        for sid in list(self._blocked):
            out = self._streams.get(sid)
            if out is None:
                self._blocked.discard(sid)
                continue
            room = self.capacity(sid)
            if room > 0 and (room >= half or out.queued == 0):
                self._blocked.discard(sid)
                unblocked.append((sid, room))


def _pull_frames(frames: deque[bytes], batch: _Batch, left: int) -> int:
    """Move encoded frames into ``batch`` until ``left`` bytes are spent; returns what is left."""
    while frames and left > 0:
        frame = frames.popleft()
        batch.add(frame, len(frame))
        left -= len(frame)
    return left
