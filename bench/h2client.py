"""A lean HTTP/2 client for the benchmarks: many concurrent streams on one TLS connection.

It measures, so its own CPU per request counts against every ratio: one asyncio `Protocol`
over h2 (no streams, no tasks of its own), writes coalesced into one per event-loop turn.

    client = await H2Client.connect("127.0.0.1", port, ssl_context)   # ALPN h2, client cert
    status, headers, body = await client.get("/path", [(b"authorization", b"Bearer t")])
    async with client.stream("/watch?watch=true") as response:       # a watch
        async for chunk in response:                                 # window reopened per chunk
            ...
    # leaving the block before the body ended resets the stream (RST_STREAM CANCEL)
    await client.close()

Flow control: the connection window is large (`CONNECTION_WINDOW`), so it is never what an
unread stream exhausts; each stream's window (`stream_window`) is given back as its body is
consumed: at once by `get()`, chunk by chunk by a `stream()`'s reader. So an unread watch holds
at most one stream window here, and stops at its server.

A request beyond the server's SETTINGS_MAX_CONCURRENT_STREAMS waits for a stream to end
(`max_concurrent_streams` says the limit; open another client for more at once, as client-go
does). Errors become `H2ClientError`: a refused ALPN, a reset stream, a GOAWAY, a lost
connection; no h2 exception leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

Header = tuple[bytes, bytes]

CONNECTION_WINDOW = 16 * 1024 * 1024
DEFAULT_STREAM_WINDOW = 1024 * 1024
_DEFAULT_WINDOW = 65_535  # RFC 9113 §6.9.2: every window starts here until SETTINGS change it


class H2ClientError(Exception):
    """The server refused h2, reset the stream, went away, or the connection failed."""


class _Stream:
    """One request's response as it arrives; `waiter` is woken on anything new."""

    __slots__ = ("chunks", "collect", "ended", "error", "head", "sizes", "waiter")

    def __init__(self, *, collect: bool) -> None:
        self.collect = collect
        """The whole body is wanted (`get`): its bytes are given back as they arrive."""
        self.head: tuple[int, list[Header]] | None = None
        self.chunks: deque[bytes] = deque()
        self.sizes: deque[int] = deque()
        """Flow-controlled length of each chunk (padding included), given back when taken."""
        self.ended = False
        self.error: H2ClientError | None = None
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class _Protocol(asyncio.Protocol):
    """Moves bytes between the TLS transport and the `H2Client`."""

    def __init__(self, client: H2Client) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(H2ClientError(f"connection lost: {exc or 'closed by the server'}"))


class H2Client:
    """One HTTP/2 connection (client side); make it with `H2Client.connect`."""

    def __init__(self, authority: bytes, *, stream_window: int) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
            },
        )
        self._authority = authority
        self._streams: dict[int, _Stream] = {}
        self._slots: deque[asyncio.Future[None]] = deque()
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._error: H2ClientError | None = None
        self._settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.requests = 0
        """Streams opened on this connection."""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: str | None = None,
        stream_window: int = DEFAULT_STREAM_WINDOW,
    ) -> H2Client:
        """A connection to `host`:`port` whose TLS handshake picked h2 (`ssl_context` must offer
        it: `h2_context()`), once the server's SETTINGS arrived."""
        client = cls(f"{host}:{port}".encode(), stream_window=stream_window)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(
            lambda: _Protocol(client), host, port, ssl=ssl_context, server_hostname=server_hostname
        )
        tls = transport.get_extra_info("ssl_object")
        picked = tls.selected_alpn_protocol() if tls is not None else None
        if picked != "h2":
            transport.close()
            raise H2ClientError(f"{host}:{port} did not pick h2 in ALPN (it picked {picked})")
        client._transport = transport
        client._h2.initiate_connection()
        client._h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        client._flush()
        await client._settled
        if client._error is not None:
            raise client._error
        return client

    @property
    def max_concurrent_streams(self) -> int:
        """The server's SETTINGS_MAX_CONCURRENT_STREAMS (streams open at once on this client)."""
        return int(self._h2.remote_settings.max_concurrent_streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def usable(self) -> bool:
        """Neither failed nor told to go away: new streams may be opened."""
        return self._error is None

    async def get(
        self, path: str, headers: Sequence[Header] = ()
    ) -> tuple[int, list[Header], bytes]:
        """GET `path`: the status, the response's headers (no pseudo-headers) and its whole body."""
        stream_id, stream = await self._open(path, headers, collect=True)
        try:
            while not stream.ended:
                if stream.error is not None:
                    raise stream.error
                await stream.wait()
        except asyncio.CancelledError:
            self._cancel(stream_id, stream)
            raise
        if stream.head is None:
            raise H2ClientError(f"stream {stream_id} ended without a response head")
        status, fields = stream.head
        return status, fields, b"".join(stream.chunks)

    def stream(self, path: str, headers: Sequence[Header] = ()) -> H2Response:
        """GET `path` as a stream: `async with client.stream(path) as response`, then iterate its
        body chunks; leaving before the body ended resets the stream."""
        return H2Response(self, path, headers)

    async def close(self) -> None:
        """GOAWAY, then close the connection; open streams fail."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._h2.close_connection()
        self._flush()
        self._fail(H2ClientError("client closed"))
        transport.close()

    # -- streams -------------------------------------------------------------------------------

    async def _open(
        self, path: str, headers: Sequence[Header], *, collect: bool
    ) -> tuple[int, _Stream]:
        while len(self._streams) >= self.max_concurrent_streams and self._error is None:
            slot = asyncio.get_running_loop().create_future()
            self._slots.append(slot)
            await slot
        if self._error is not None:
            raise self._error
        stream_id = self._h2.get_next_available_stream_id()
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", self._authority),
            (b":path", path.encode()),
            *headers,
        ]
        try:
            self._h2.send_headers(stream_id, fields, end_stream=True)
        except h2.exceptions.ProtocolError as error:
            raise H2ClientError(f"cannot open a stream: {error}") from None
        stream = self._streams[stream_id] = _Stream(collect=collect)
        self.requests += 1
        self._flush_soon()
        return stream_id, stream

    def _take(self, stream_id: int, stream: _Stream) -> bytes:
        """The stream's next chunk; its bytes are given back to the server's windows."""
        chunk = stream.chunks.popleft()
        size = stream.sizes.popleft()
        if size and self._error is None:
            try:
                self._h2.acknowledge_received_data(size, stream_id)
            except (h2.exceptions.ProtocolError, KeyError):
                return chunk  # the stream or connection is closed: no window to reopen
            self._flush_soon()
        return chunk

    def _cancel(self, stream_id: int, stream: _Stream) -> None:
        """Reset the stream unless it is over already."""
        if stream.ended or stream.error is not None or self._error is not None:
            return
        stream.error = H2ClientError(f"stream {stream_id} cancelled")
        self._release(stream_id)
        try:
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        except h2.exceptions.ProtocolError:
            return  # closed meanwhile
        self._flush_soon()

    def _release(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None:
            while self._slots:
                slot = self._slots.popleft()
                if not slot.done():
                    slot.set_result(None)
                    break

    # -- the connection ------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self._fail(H2ClientError(f"HTTP/2 protocol error: {error}"))
            self._flush()
            if self._transport is not None:
                self._transport.close()
            return
        for event in events:
            handle = self._handlers.get(type(event))
            if handle is not None:
                handle(self, event)
        self._flush()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        size = event.flow_controlled_length or 0
        if stream is None:  # cancelled: only the connection's window is given back
            self._h2.acknowledge_received_data(size, event.stream_id)
            return
        stream.chunks.append(event.data)
        if stream.collect:
            if size:
                self._h2.acknowledge_received_data(size, event.stream_id)
        else:
            stream.sizes.append(size)
            stream.wake()

    def _on_head(self, event: h2.events.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.head = _head(event.headers)
            stream.wake()

    def _on_end(self, event: h2.events.StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.ended = True
            self._release(event.stream_id)
            stream.wake()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.error = H2ClientError(
                f"stream {event.stream_id} reset by the server: {event.error_code!r}"
            )
            self._release(event.stream_id)
            stream.wake()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        if not self._settled.done():
            self._settled.set_result(None)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self._fail(H2ClientError(f"GOAWAY from the server: {event.error_code!r}"))

    _handlers: ClassVar[dict[type, Callable[[H2Client, Any], None]]] = {
        h2.events.DataReceived: _on_data,
        h2.events.ResponseReceived: _on_head,
        h2.events.StreamEnded: _on_end,
        h2.events.StreamReset: _on_reset,
        h2.events.RemoteSettingsChanged: _on_settings,
        h2.events.ConnectionTerminated: _on_goaway,
    }

    def _lost(self, error: H2ClientError) -> None:
        self._fail(error)

    def _fail(self, error: H2ClientError) -> None:
        if self._error is None:
            self._error = error
        if not self._settled.done():
            self._settled.set_result(None)  # `connect` reads `_error`
        for stream in self._streams.values():
            if stream.error is None and not stream.ended:
                stream.error = error
            stream.wake()
        self._streams.clear()
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)

    def _flush_soon(self) -> None:
        """Write what h2 queued once this turn of the loop is over (one write per turn)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        transport = self._transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)


class H2Response:
    """A streamed response: `status` and `headers` inside `async with`, then its body chunks by
    `async for`."""

    def __init__(self, client: H2Client, path: str, headers: Sequence[Header]) -> None:
        self._client = client
        self._path = path
        self._headers = headers
        self._stream_id = 0
        self._stream: _Stream | None = None
        self.status = 0
        self.headers: list[Header] = []

    async def __aenter__(self) -> H2Response:
        self._stream_id, stream = await self._client._open(self._path, self._headers, collect=False)
        self._stream = stream
        try:
            while stream.head is None:
                if stream.error is not None:
                    raise stream.error
                if stream.ended:
                    raise H2ClientError(f"stream {self._stream_id} ended without a head")
                await stream.wait()
        except BaseException:
            self._client._cancel(self._stream_id, stream)
            raise
        self.status, self.headers = stream.head
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            self._client._cancel(self._stream_id, self._stream)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        stream = self._stream
        assert stream is not None, "iterate inside `async with`"
        while True:
            if stream.chunks:
                yield self._client._take(self._stream_id, stream)
            elif stream.ended:
                return
            elif stream.error is not None:
                raise stream.error
            else:
                await stream.wait()


def h2_context(context: ssl.SSLContext) -> ssl.SSLContext:
    """`context`, now offering only h2 in ALPN (changed in place: give each protocol its own)."""
    context.set_alpn_protocols(["h2"])
    return context


def _head(fields: list[Header]) -> tuple[int, list[Header]]:
    status = 0
    regular: list[Header] = []
    for name, value in fields:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            regular.append((name, value))
    return status, regular
