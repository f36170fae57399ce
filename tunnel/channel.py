"""The one seam between a tunnel session and its transport: a channel of binary messages.

`WebSocketChannel` adapts a `websockets` connection (client or server side); tests use
`memory_channel_pair`. Errors of the transport are translated here, once, into
`ChannelClosed`; nothing above this module catches a websockets exception.

The WebSocket library answers the peer's WebSocket PINGs by itself, writing each PONG to the
transport without waiting for it to drain: a peer that sends PINGs and never reads would grow
our write buffer without bound. `GuardedServerConnection` and `GuardedClientConnection` (the
connection classes the gateway and the agent use) abort a transport whose write buffer passes
`MAX_WRITE_BUFFER`, which our own writes, waiting for the buffer to drain, never reach.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import structlog
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection as WebSocketConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

RECEIVE_QUEUE = 2
"""Messages the WebSocket library may read ahead of the session's reader (its ``max_queue``).
The reader takes each message as soon as it arrives, so a little slack is enough; times the
MAX_MESSAGE_SIZE it bounds what a peer can park in our memory before the protocol judges it
(2 MiB with the defaults, where the library's own default of 16 allowed 16 MiB)."""

MAX_WRITE_BUFFER = 8 << 20
"""Bytes a WebSocket transport may hold unsent before its peer is dropped. The session's writes
wait below the library's high-water mark (32 KiB) and pull at most about 1 MiB at a time, so
only answers the library writes on its own (PONGs to WebSocket PINGs) can get here: a peer
that pings without reading."""

log = structlog.get_logger("tunnel.channel")


def _check_write_buffer(connection: WebSocketConnection) -> None:
    try:
        transport = connection.transport
    except AttributeError:  # bytes before `connection_made` (the gateway starts TLS itself)
        return
    buffered = transport.get_write_buffer_size()
    if buffered > MAX_WRITE_BUFFER and not transport.is_closing():
        log.warning(
            "websocket peer does not read, dropping it",
            buffered=buffered,
            max_write_buffer=MAX_WRITE_BUFFER,
        )
        transport.abort()


class GuardedServerConnection(ServerConnection):
    """A server-side websockets connection that drops a peer it cannot write to (see above)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        _check_write_buffer(self)


class GuardedClientConnection(ClientConnection):
    """A client-side websockets connection that drops a peer it cannot write to (see above)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        _check_write_buffer(self)


class ChannelClosed(Exception):
    """The transport is gone; `reason` says how it ended, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageChannel(Protocol):
    async def send(self, message: bytes) -> None:
        """Send one binary message; waits while the transport's buffer is full."""

    async def recv(self) -> bytes:
        """The next binary message; raises ChannelClosed when the transport ended."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the transport with a closing handshake (idempotent)."""

    def abort(self) -> None:
        """Drop the transport at once, without a handshake (idempotent)."""


class WebSocketChannel:
    """A websockets connection as a MessageChannel: binary messages only."""

    def __init__(self, websocket: WebSocketConnection) -> None:
        self._websocket = websocket

    async def send(self, message: bytes) -> None:
        try:
            await self._websocket.send(message)
        except ConnectionClosed as closed:
            raise ChannelClosed(_describe(closed)) from closed

    async def recv(self) -> bytes:
        try:
            message = await self._websocket.recv()
        except ConnectionClosed as closed:
            raise ChannelClosed(_describe(closed)) from closed
        if isinstance(message, str):
            await self.close(1003, "text messages are not part of the tunnel protocol")
            raise ChannelClosed("the peer sent a text message")
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._websocket.close(code, reason[:120])

    def abort(self) -> None:
        transport = self._websocket.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


def _describe(closed: ConnectionClosed) -> str:
    frame = closed.rcvd or closed.sent
    if frame is None:
        return "connection lost without a close frame"
    return f"closed with code {frame.code}" + (f": {frame.reason}" if frame.reason else "")


class _Pipe:
    """One direction of an in-memory channel: a bounded buffer of messages, closable."""

    def __init__(self, max_messages: int) -> None:
        self.messages: deque[bytes] = deque()
        self.max_messages = max_messages
        self.closed = False
        self.changed = asyncio.Event()

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class _MemoryChannel:
    """One end of an in-memory channel pair; sending waits while the peer's buffer is full."""

    def __init__(self, inbox: _Pipe, outbox: _Pipe) -> None:
        self._inbox = inbox
        self._outbox = outbox

    async def send(self, message: bytes) -> None:
        while len(self._outbox.messages) >= self._outbox.max_messages:
            if self._outbox.closed:
                break
            await self._outbox.changed.wait()
        if self._outbox.closed:
            raise ChannelClosed("closed")
        self._outbox.messages.append(message)
        self._outbox.notify()

    async def recv(self) -> bytes:
        while not self._inbox.messages:
            if self._inbox.closed:
                raise ChannelClosed("closed by the peer")
            await self._inbox.changed.wait()
        message = self._inbox.messages.popleft()
        self._inbox.notify()
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.abort()

    def abort(self) -> None:
        for pipe in (self._inbox, self._outbox):
            pipe.closed = True
            pipe.notify()


def memory_channel_pair(max_messages: int = 64) -> tuple[MessageChannel, MessageChannel]:
    """Two connected in-memory channels, for tests of the layers above."""
    one, two = _Pipe(max_messages), _Pipe(max_messages)
    return _MemoryChannel(one, two), _MemoryChannel(two, one)
