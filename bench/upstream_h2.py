"""The bench upstream's HTTP/2 side: the endpoints of `bench.upstream`, over raw h2.

`bench.upstream` hands a TLS connection whose handshake picked h2 to `H2UpstreamProtocol`
(one per connection, an asyncio `Protocol`: no task per stream). It is the server every HTTP/2
figure is measured against, so it is lean: a small GET is answered from the event that carried
its head, a watch is a timer handle, a bulk body is pumped as the client's windows and the
transport's buffer allow. Memory per connection is bounded by the windows: nothing is queued
beyond what h2 may send now (a watch whose window is shut skips its events until it opens).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

SMALL_PATH = b"/api/v1/namespaces/bench/configmaps/small"
WATCH_PATH = b"/api/v1/namespaces/bench/configmaps"
DEFAULT_MAX_STREAMS = 100
"""SETTINGS_MAX_CONCURRENT_STREAMS: what kube-apiserver v1.32 advertises when its
`--http2-max-streams-per-connection` is unset (read off envtest's)."""

_JSON = [(b":status", b"200"), (b"content-type", b"application/json")]
_CHUNK = memoryview(bytes(256 * 1024))


class H2UpstreamProtocol(asyncio.Protocol):
    """One client's HTTP/2 connection to the bench upstream."""

    def __init__(self, small: bytes, *, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams},
        )
        self._small_head = [*_JSON, (b"content-length", str(len(small)).encode())]
        self._small = small
        self._transport: asyncio.Transport | None = None
        self._bulk: dict[int, int] = {}
        """Bulk streams: bytes still to send."""
        self._watches: dict[int, _Watch] = {}
        self._paused = False
        self._flush_scheduled = False

    # -- asyncio -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event.stream_id, event.headers)
            elif isinstance(event, h2.events.WindowUpdated):
                if self._bulk:
                    self._pump()
            elif isinstance(event, h2.events.StreamReset):
                self._forget(event.stream_id)
            elif isinstance(event, h2.events.DataReceived):
                self._h2.acknowledge_received_data(
                    event.flow_controlled_length,
                    event.stream_id,
                )
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self._close()
                return
        self._flush()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._bulk:
            self._pump()
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
        self._bulk.clear()

    # -- requests ------------------------------------------------------------------------------

    def _request(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        path = b""
        for name, value in fields:
            if name == b":path":
                path = value
                break
        route, _, query = path.partition(b"?")
        if route in (SMALL_PATH, b"/healthz"):
            self._h2.send_headers(stream_id, self._small_head)
            self._h2.send_data(stream_id, self._small, end_stream=True)
        elif route.startswith(b"/bytes/"):
            size = int(route[len(b"/bytes/") :])
            head = [(b":status", b"200"), (b"content-type", b"application/octet-stream")]
            self._h2.send_headers(stream_id, [*head, (b"content-length", str(size).encode())])
            self._bulk[stream_id] = size
            self._pump()
        elif route == WATCH_PATH:
            params = parse_qs(query.decode())
            if params.get("watch", [""])[0] not in ("true", "1"):
                body = b'{"kind": "ConfigMapList", "items": []}'
                self._h2.send_headers(stream_id, _JSON)
                self._h2.send_data(stream_id, body, end_stream=True)
                return
            self._h2.send_headers(stream_id, _JSON)
            watch = _Watch(
                self,
                stream_id,
                events=int(params.get("events", ["0"])[0]),
                interval=float(params.get("interval", ["1"])[0]),
            )
            self._watches[stream_id] = watch
            watch.tick()
        else:
            self._h2.send_headers(stream_id, [(b":status", b"404")], end_stream=True)

    def _pump(self) -> None:
        """Send bulk bodies as far as the windows and the transport's buffer allow."""
        frame = self._h2.max_outbound_frame_size
        for stream_id in list(self._bulk):
            if self._paused:
                return
            left = self._bulk[stream_id]
            frames = 0
            try:
                while left > 0 and not self._paused:
                    window = self._h2.local_flow_control_window(stream_id)
                    step = min(left, frame, window, len(_CHUNK))
                    if step <= 0:
                        break
                    left -= step
                    self._h2.send_data(stream_id, _CHUNK[:step], end_stream=left == 0)
                    frames += 1
                    if frames % 16 == 0:
                        # Written as it goes: the transport's high-water mark (pause_writing)
                        # is what stops a fast window from filling memory.
                        self._flush()
            except h2.exceptions.ProtocolError:
                left = 0
            if left == 0:
                del self._bulk[stream_id]
            else:
                self._bulk[stream_id] = left

    def _send_event(self, stream_id: int, data: bytes, *, end: bool) -> bool:
        """One watch event if its window takes it now; False when the stream is gone."""
        try:
            if self._h2.local_flow_control_window(stream_id) >= len(data):
                self._h2.send_data(stream_id, data, end_stream=end)
            elif end:
                self._h2.end_stream(stream_id)
        except (h2.exceptions.ProtocolError, KeyError):
            return False
        self._flush_soon()
        return True

    def _forget(self, stream_id: int) -> None:
        self._bulk.pop(stream_id, None)
        watch = self._watches.pop(stream_id, None)
        if watch is not None:
            watch.cancel()

    # -- writing -------------------------------------------------------------------------------

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Watch:
    """A watch stream: one JSON event line every `interval` seconds, `events` of them (0: forever);
    a timer handle, not a task."""

    __slots__ = ("events", "handle", "interval", "owner", "sent", "stream_id")

    def __init__(
        self, owner: H2UpstreamProtocol, stream_id: int, *, events: int, interval: float
    ) -> None:
        self.owner = owner
        self.stream_id = stream_id
        self.events = events
        self.interval = interval
        self.sent = 0
        self.handle: asyncio.TimerHandle | None = None

    def tick(self) -> None:
        event = {"type": "MODIFIED", "object": {"kind": "ConfigMap", "n": self.sent}}
        self.sent += 1
        last = self.events != 0 and self.sent >= self.events
        line = json.dumps(event).encode() + b"\n"
        if not self.owner._send_event(self.stream_id, line, end=last) or last:
            self.owner._watches.pop(self.stream_id, None)
            return
        self.handle = asyncio.get_running_loop().call_later(self.interval, self.tick)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
