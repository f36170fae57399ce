"""One stream of a tunnel session, as the application sees it: async read, write, end, reset.

Received bytes wait here only until `read()` takes them; the peer cannot send more than the
window the protocol granted, so a stream's buffer is bounded by that window. `write()` waits
for send capacity (the protocol's bounded outbound buffer and the peer's window), so a slow
peer slows the writer down instead of filling memory.

A stream never raises a transport's exception: a reset or a lost connection surfaces as
`StreamResetError` with the protocol's error code.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from protocol import ErrorCode, LocalProtocolError, ResponseReceived
from protocol.headers import Headers

if TYPE_CHECKING:
    from tunnel.session import TunnelSession


class StreamResetError(Exception):
    """The stream was reset (by the peer, by this side, or because the connection ended)."""

    def __init__(self, code: ErrorCode, message: str, *, remote: bool) -> None:
        super().__init__(f"{code.name}: {message}" if message else code.name)
        self.code = code
        self.message = message
        self.remote = remote


class TunnelStream:
    """A request/response exchange (or, after a 101, a byte pipe) inside a tunnel."""

    __slots__ = (
        "_chunks",
        "_discarding",
        "_local_ended",
        "_read_waiter",
        "_remote_ended",
        "_reset",
        "_response",
        "_session",
        "_write_waiter",
        "bytes_received",
        "bytes_sent",
        "stream_id",
    )

    def __init__(self, session: TunnelSession, stream_id: int) -> None:
        self._session = session
        self.stream_id = stream_id
        self._chunks: deque[memoryview] = deque()
        self._discarding = False
        self._remote_ended = False
        self._local_ended = False
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
        self._session._consumed(self.stream_id, len(chunk))
        if not self._chunks and self._remote_ended:
            self._session._forget_if_done(self)
        return chunk

    def respond(self, status: int, headers: Headers = (), *, end_stream: bool = False) -> None:
        """Send the response head (for a stream the peer opened)."""
        self._raise_if_reset()
        self._session._respond(self, status, headers, end_stream=end_stream)
        if end_stream:
            self._end_locally()

    async def write(self, data: bytes | memoryview) -> None:
        """Send body bytes, waiting while the peer's window or our send buffer is full."""
        view = memoryview(data)
        while view:
            self._raise_if_reset()
            accepted = self._session._send_data(self.stream_id, view)
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
        self._session._end_stream(self.stream_id)
        self._end_locally()

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, message: str = "") -> None:
        """Abort both directions now (idempotent); the peer is told with `code`."""
        if self._reset is not None:
            return
        # The application gives the stream up: what it did not read goes too (the protocol
        # returns the credit with the reset), so the stream leaves the table now.
        self._chunks.clear()
        self._session._reset_stream(self.stream_id, code, message)
        self._on_reset(StreamResetError(code, message, remote=False))

    # -- what the session calls ---------------------------------------------------------------

    def _on_response(self, event: ResponseReceived) -> None:
        if self._response is None:
            self._response = asyncio.get_running_loop().create_future()
        if not self._response.done():
            self._response.set_result(event)

    def discard_input(self) -> None:
        """Nobody will read this stream any more: what arrives is dropped and its credit given
        back at once, while what this side wrote still goes out (a response is complete, the
        rest of the upload is not needed)."""
        self._discarding = True
        while self._chunks:
            self._session._consumed(self.stream_id, len(self._chunks.popleft()))
        self._session._forget_if_done(self)

    def _on_data(self, data: memoryview) -> None:
        self.bytes_received += len(data)
        if self._discarding:
            self._session._consumed(self.stream_id, len(data))
            return
        self._chunks.append(data)
        _wake(self._read_waiter)

    def _on_end(self) -> None:
        self._remote_ended = True
        _wake(self._read_waiter)
        self._session._forget_if_done(self)

    def _on_capacity(self) -> None:
        _wake(self._write_waiter)

    def _on_reset(self, error: StreamResetError) -> None:
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
        self._session._forget_if_done(self)

    def _end_locally(self) -> None:
        self._local_ended = True
        self._session._forget_if_done(self)

    def _raise_if_reset(self) -> None:
        if self._reset is not None:
            raise self._reset


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def local_error(error: LocalProtocolError) -> StreamResetError:
    """A local misuse reported by the protocol, as the stream error the application sees."""
    return StreamResetError(error.code, str(error), remote=False)
