"""A small HTTP/2 caller for tests: one TLS connection (ALPN h2), many streams, driven by hand.

Received body bytes are given back to the gateway (WINDOW_UPDATE) only when the test `read`s
them, so a stream the test does not read stops at its window, as an idle kubectl watch does.
Every wait is bounded by `tests.kit.waits.scaled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from tests.kit.waits import scaled

Header = tuple[bytes, bytes]


@dataclass
class _Stream:
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    status: int | None = None
    headers: list[Header] = field(default_factory=list)
    body: deque[bytes] = field(default_factory=deque)
    ended: bool = False
    reset_code: int | None = None


class StreamWasReset(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"the gateway reset the stream (code {code})")
        self.code = code


class H2Caller:
    """`await H2Caller.connect(port, context)`; `async with` closes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.ENABLE_PUSH: 0}
        )
        self.h2.initiate_connection()
        # As Go's client: a large connection window, so an unread stream stops only itself.
        self.h2.increment_flow_control_window(1 << 30)
        self._streams: dict[int, _Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.settings_acked = asyncio.Event()
        self._window = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._flush()
        self._reading = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext) -> H2Caller:
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        tls = writer.get_extra_info("ssl_object")
        assert tls.selected_alpn_protocol() == "h2", tls.selected_alpn_protocol()
        return cls(reader, writer)

    async def __aenter__(self) -> H2Caller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for sending in self._sending:
            sending.cancel()
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()

    @property
    def peer_max_streams(self) -> int:
        return int(self.h2.remote_settings.max_concurrent_streams)

    # -- requests ------------------------------------------------------------------------

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: list[Header] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Send a request head (and `body`, if any); returns its stream id. `end=False` leaves
        the body open for `send`."""
        stream_id = self.h2.get_next_available_stream_id()
        self._streams[stream_id] = _Stream()
        fields = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":path", path.encode()),
            (b":authority", b"gateway"),
            *(headers or []),
        ]
        self.h2.send_headers(stream_id, fields, end_stream=end and body is None)
        self._flush()
        if body is not None:
            sending = asyncio.create_task(self.send(stream_id, body, end=end))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
        return stream_id

    async def send(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """Send body bytes in frames, as the gateway's windows allow."""
        view = memoryview(data)
        async with asyncio.timeout(scaled(30)):
            while True:
                step = min(
                    len(view),
                    self.h2.local_flow_control_window(stream_id),
                    self.h2.max_outbound_frame_size,
                )
                if step or not view:
                    last = step == len(view)
                    self.h2.send_data(stream_id, bytes(view[:step]), end_stream=end and last)
                    self._flush()
                    view = view[step:]
                    if last:
                        return
                    continue
                self._window.clear()
                await self._window.wait()

    def reset(self, stream_id: int, code: int = 8) -> None:
        self.h2.reset_stream(stream_id, code)
        self._flush()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def response(self, stream_id: int) -> tuple[int, dict[bytes, bytes]]:
        stream = self._streams[stream_id]
        await self._until(stream, lambda: stream.status is not None)
        assert stream.status is not None
        return stream.status, dict(stream.headers)

    async def read(self, stream_id: int) -> bytes:
        """The next body piece (given back to the gateway's window), b"" at the end."""
        stream = self._streams[stream_id]
        await self._until(stream, lambda: bool(stream.body) or stream.ended)
        if not stream.body:
            return b""
        piece = stream.body.popleft()
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.h2.acknowledge_received_data(len(piece), stream_id)
        self._flush()
        return piece

    async def body(self, stream_id: int) -> bytes:
        pieces = []
        while piece := await self.read(stream_id):
            pieces.append(piece)
        return b"".join(pieces)

    async def get(self, path: str, **kwargs: object) -> tuple[int, dict[bytes, bytes], bytes]:
        stream_id = self.request(path, **kwargs)  # type: ignore[arg-type]
        status, headers = await self.response(stream_id)
        return status, headers, await self.body(stream_id)

    def buffered(self, stream_id: int) -> int:
        """Body bytes received and not yet read on the stream."""
        return sum(len(piece) for piece in self._streams[stream_id].body)

    async def wait_reset(self, stream_id: int) -> int:
        stream = self._streams[stream_id]
        with contextlib.suppress(StreamWasReset):
            await self._until(stream, lambda: False)
        assert stream.reset_code is not None
        return stream.reset_code

    async def wait_goaway(self) -> h2.events.ConnectionTerminated:
        async with asyncio.timeout(scaled(10)):
            while self.goaway is None:
                await asyncio.wait({asyncio.ensure_future(self.closed.wait())}, timeout=0.05)
        return self.goaway

    # -- the connection --------------------------------------------------------------------

    async def _until(self, stream: _Stream, ready: object) -> None:
        assert callable(ready)
        async with asyncio.timeout(scaled(10)):
            while not ready():
                if stream.reset_code is not None:
                    raise StreamWasReset(stream.reset_code)
                if self.closed.is_set():
                    raise ConnectionError("the gateway closed the connection")
                stream.arrived.clear()
                await stream.arrived.wait()

    def _flush(self) -> None:
        if data := self.h2.data_to_send():
            self.writer.write(data)

    async def _read_loop(self) -> None:
        try:
            while data := await self._reader.read(65536):
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._handle(event)
                self._flush()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed.set()
            for stream in self._streams.values():
                stream.arrived.set()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            if event.error_code == 0:
                # h2 would refuse to send anything more; Go's client (kubectl's) finishes the
                # streams a graceful GOAWAY left open, and so does this one.
                self.h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            return
        if isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acked.set()
            return
        if isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._window.set()
        stream_id = getattr(event, "stream_id", None)
        stream = self._streams.get(stream_id) if stream_id else None
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            fields = [(bytes(k), bytes(v)) for k, v in event.headers or []]
            stream.status = int(dict(fields)[b":status"])
            stream.headers = [(k, v) for k, v in fields if not k.startswith(b":")]
        elif isinstance(event, h2.events.DataReceived):
            assert event.data is not None
            stream.body.append(bytes(event.data))
            padding = (event.flow_controlled_length or 0) - len(event.data)
            if padding and stream_id is not None:
                self.h2.acknowledge_received_data(padding, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset_code = int(event.error_code or 0)
        stream.arrived.set()
