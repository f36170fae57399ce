"""One stream of a tunnel session, as the application sees it: async read, write, end, reset.

Received bytes wait here only until `read()` takes them; the peer cannot send more than the
window the protocol granted, so a stream's buffer is bounded by that window. `write()` waits
for send capacity (the protocol's bounded outbound buffer and the peer's window), so a slow
peer slows the writer down instead of filling memory.

A stream never raises a transport's exception: a reset or a lost connection surfaces as
`StreamResetError` with the protocol's error code.

The seam to the session is public both ways and narrow: a stream reaches its session only
through `StreamOwner` (the session implements it), and the session drives a stream only through
its `deliver_*` methods and `capacity_available`. Neither touches the other's private state,
and this module never imports `tunnel.session` (a contract in pyproject.toml says so).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from protocol import ErrorCode, LocalProtocolError, ResponseReceived
from protocol.headers import Headers


class StreamResetError(Exception):
    """The stream was reset (by the peer, by this side, or because the connection ended)."""

    def __init__(self, code: ErrorCode, message: str, *, remote: bool) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.remote = remote


class StreamOwner(Protocol):
    """What a stream needs from the session that carries it: the protocol's stream calls, with
    a protocol refusal raised as `StreamResetError`, and the release of a finished stream."""

    def send_response(
        self, stream_id: int, status: int, headers: Headers, *, end_stream: bool
    ) -> None:
        """Send the response head; on a refusal nothing was sent (another head may follow)."""

    def send_data(self, stream_id: int, data: memoryview) -> int:
        """Queue body bytes; returns how many were accepted (0 when there is no room now)."""

    def end_stream(self, stream_id: int) -> None:
        """Half-close: END goes out after the queued bytes."""

    def reset_stream(self, stream_id: int, code: ErrorCode, message: str) -> None:
        """Abort both directions; the peer is told with `code`."""

    def consumed(self, stream_id: int, size: int) -> None:
        """The application has taken `size` received bytes: credit them to the peer."""

    def forget_if_done(self, stream: TunnelStream) -> None:
        """Drop the stream from the session once `stream.done`."""


class TunnelStream:
    """A request/response exchange (or, after a 101, a byte pipe) inside a tunnel."""

    __slots__ = (
        "_chunks",
        "_discarding",
        "_local_ended",
        "_owner",
        "_read_waiter",
        "_remote_ended",
        "_reset",
        "_response",
        "_write_waiter",
        "bytes_received",
        "bytes_sent",
        "stream_id",
    )

    def __init__(self, owner: StreamOwner, stream_id: int, *, ended_locally: bool = False) -> None:
        """`ended_locally`: the head that opened the stream also ended this side's half."""
        self._owner = owner
        self.stream_id = stream_id
        self._chunks: deque[memoryview] = deque()
        self._discarding = False
        self._remote_ended = False
        self._local_ended = ended_locally
        self._reset: StreamResetError | None = None
        self._response: asyncio.Future[ResponseReceived] | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self.bytes_received = 0
        self.bytes_sent = 0

    # -- what the application calls -----------------------------------------------------------

    @property
    def readable_now(self) -> bool:
        """`read()` would return without waiting (bytes, the end, or a reset are here)."""
        return bool(self._chunks) or self._remote_ended or self._reset is not None

    @property
    def at_end(self) -> bool:
        """Every received byte was read and the peer ended its side: `read()` would return
        b"" now (a relay can end its own side with the last bytes it passes on)."""
        return self._remote_ended and not self._chunks

    @property
    def answered(self) -> bool:
        """This side has ended its half (its response, or its request, is complete)."""
        return self._local_ended

    @property
    def done(self) -> bool:
        """Nothing more will happen on the stream, and every received byte was read."""
        if self._chunks:
            return False
        return self._reset is not None or (self._local_ended and self._remote_ended)

    async def response(self) -> ResponseReceived:
        """The response head (for a stream this side opened)."""
        if self._response is None:
            self._response = asyncio.get_running_loop().create_future()
            if self._reset is not None:
                self._response.set_exception(self._reset)
        return await self._response

    async def read(self) -> bytes | memoryview:
        """The next received bytes; b"" once the peer has ended its side.

        Bytes the peer sent before it ended its side stay readable even if the stream is
        reset afterwards (a responder may reset an upload it no longer needs).
        """
        while not self._chunks:
            if self._remote_ended:
                return b""
            if self._reset is not None:
                raise self._reset
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        chunk = self._chunks.popleft()
        # Credit returns to the peer as the application takes bytes, not as they arrive.
        self._owner.consumed(self.stream_id, len(chunk))
        if not self._chunks and self._remote_ended:
            self._owner.forget_if_done(self)
        return chunk

    def respond(self, status: int, headers: Headers = (), *, end_stream: bool = False) -> None:
        """Send the response head (for a stream the peer opened)."""
        self._raise_if_reset()
        self._owner.send_response(self.stream_id, status, headers, end_stream=end_stream)
        if end_stream:
            self._end_locally()

    async def write(self, data: bytes | memoryview) -> None:
        """Send body bytes, waiting while the peer's window or our send buffer is full."""
        view = memoryview(data)
        while view:
            self._raise_if_reset()
            accepted = self._owner.send_data(self.stream_id, view)
            self.bytes_sent += accepted
            view = view[accepted:]
            if view:
                self._write_waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._write_waiter
                finally:
                    self._write_waiter = None

    def end(self) -> None:
        """Half-close: nothing more will be written; queued bytes still go out."""
        if self._local_ended or self._reset is not None:
            return
        self._owner.end_stream(self.stream_id)
        self._end_locally()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        """Abort both directions now (idempotent); the peer is told with `code`."""
        if self._reset is not None:
            return
        # The application gives the stream up: what it did not read goes too (the protocol
        # returns the credit with the reset), so the stream leaves the table now.
        self._chunks.clear()
        self._owner.reset_stream(self.stream_id, code, message)
        self.deliver_reset(StreamResetError(code, message, remote=False))

    def discard_input(self) -> None:
        """Nobody will read this stream any more: what arrives is dropped and its credit given
        back at once, while what this side wrote still goes out (a response is complete, the
        rest of the upload is not needed)."""
        self._discarding = True
        while self._chunks:
            self._owner.consumed(self.stream_id, len(self._chunks.popleft()))
        self._owner.forget_if_done(self)

    # -- what the session calls (the application never does) ----------------------------------

    def deliver_response(self, event: ResponseReceived) -> None:
        """The response head arrived (on a stream this side opened)."""
        if self._response is None:
            self._response = asyncio.get_running_loop().create_future()
        if not self._response.done():
            self._response.set_result(event)

    def deliver_data(self, data: memoryview) -> None:
        """Received body bytes; they wait here until `read()` takes them."""
        self.bytes_received += len(data)
        if self._discarding:
            self._owner.consumed(self.stream_id, len(data))
            return
        self._chunks.append(data)
        _wake(self._read_waiter)

    def deliver_end(self) -> None:
        """The peer ended its half: `read()` returns b"" once the bytes before are taken."""
        self._remote_ended = True
        _wake(self._read_waiter)
        self._owner.forget_if_done(self)

    def capacity_available(self) -> None:
        """Send capacity freed up: a waiting `write()` goes on."""
        _wake(self._write_waiter)

    def deliver_reset(self, error: StreamResetError) -> None:
        """The stream ended abnormally (reset by either side, or the connection was lost)."""
        if self._reset is not None:
            return
        self._reset = error
        if not self._remote_ended:
            # An incomplete message is worthless: drop it (the protocol returned its credit).
            self._chunks.clear()
        for waiter in (self._read_waiter, self._write_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
        if self._response is not None and not self._response.done():
            self._response.set_exception(error)
            # Nobody may await it any more; mark the exception as seen.
            self._response.exception()
        self._owner.forget_if_done(self)

    def _end_locally(self) -> None:
        self._local_ended = True
        self._owner.forget_if_done(self)

    def _raise_if_reset(self) -> None:
        if self._reset is not None:
            raise self._reset


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def local_error(error: LocalProtocolError) -> StreamResetError:
    """A local misuse reported by the protocol, as the stream error the application sees."""
    return StreamResetError(error.code, str(error), remote=False)
