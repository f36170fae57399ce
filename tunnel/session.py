"""A tunnel session: a `protocol.Connection` driven over a `MessageChannel` with asyncio.

Two tasks and a timer serve one session: the reader feeds received messages to the protocol
and hands its events to streams; the writer sends what the protocol has to send, waiting on
the transport (so a slow socket slows the senders, never grows a buffer); the heartbeat timer
pings at an interval, measures the round trip and ends a session that has been silent, or
has left a PING unanswered, for longer than its timeout (a half-open connection is found
within that time, even if TCP never notices, and so is a peer that talks but does not read).

A peer that stops reading is found by the write deadline: a message the transport cannot take
within `Heartbeat.write_timeout` ends the session at once, without a goodbye (nobody would
read it). A peer that floods is cut off by the protocol's `FloodLimits`. Either way
`dropped_for` names the bound that was passed, for the operator's metric and log line.

The session implements `tunnel.stream.StreamOwner`, the only way a stream reaches it, and
drives each stream through that stream's public `deliver_*` methods.

For the responding side (the agent), each request the peer opens runs `request_handler` in a
task of its own; the session owns those tasks and cancels them when their stream is reset or
the session ends. When the session ends, every open stream fails at once with
`StreamResetError(CONNECTION_LOST)`: nothing waits for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from protocol import (
    Connection,
    ConnectionTerminated,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    HelloReceived,
    LocalProtocolError,
    PeerInfo,
    PingAcknowledged,
    ReplicasReceived,
    RequestReceived,
    ResponseReceived,
    SendCapacityAvailable,
    StreamEnded,
    StreamReset,
)
from protocol.headers import Headers
from tunnel.channel import ChannelClosed, MessageChannel
from tunnel.deadline import Deadline
from tunnel.stream import StreamResetError, TunnelStream, local_error

RequestHandler = Callable[[TunnelStream, RequestReceived], Awaitable[None]]
ReplicasHandler = Callable[[frozenset[str]], None]
"""(Agent side.) Called with the gateway's live replica ids each time a REPLICAS arrives."""

_WRITE_BUDGET = 1 << 20  # bytes pulled from the protocol per send round


@dataclass(frozen=True)
class Heartbeat:
    """The peer's liveness deadlines: how often to ping, how long silence may last, and how long
    the peer may leave what we send unread, before the session is declared dead."""

    interval: float = 10.0
    timeout: float = 30.0
    write_timeout: float = 30.0
    """Longest wait for the transport to take one message (it waits while the transport's
    buffer is above its high-water mark, i.e. while the peer does not read). A peer must read
    at least one message (at most its MAX_MESSAGE_SIZE) per write_timeout."""

    def __post_init__(self) -> None:
        if not 0 < self.interval < self.timeout:
            raise ValueError("heartbeat needs 0 < interval < timeout")
        if not self.write_timeout > 0:
            raise ValueError("heartbeat needs write_timeout > 0")


class SessionClosed(Exception):
    """The session has ended; no stream can be opened on it."""


class TunnelSession:
    """One end of a tunnel over one channel. `run()` serves it until it ends."""

    def __init__(
        self,
        channel: MessageChannel,
        connection: Connection,
        *,
        heartbeat: Heartbeat | None = None,
        request_handler: RequestHandler | None = None,
        replicas_handler: ReplicasHandler | None = None,
        logger: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self._channel = channel
        self._conn = connection
        self._heartbeat = heartbeat or Heartbeat()
        self._request_handler = request_handler
        self._replicas_handler = replicas_handler
        self.replicas: frozenset[str] | None = None
        """(Agent side.) The gateway's live replica ids from its latest REPLICAS frame, None
        before the first (until then the set is the gateway's own id, from its HELLO)."""
        self._log = logger or structlog.get_logger()
        self._streams: dict[int, TunnelStream] = {}
        self._handlers: dict[int, asyncio.Task[None]] = {}
        self._wake_writer = asyncio.Event()
        self._hello: asyncio.Future[PeerInfo] = asyncio.get_running_loop().create_future()
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the session has ended (`closed`, `wait_closed`, and what `run` waits on)."""
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._heartbeat_due = 0.0
        self._forgave_stall = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.close_reason = ""
        self._peer_dead = False
        self._pings: deque[int] = deque()
        """Payloads (monotonic ns) of our PINGs not yet answered, oldest first; at most
        timeout / interval + 1 of them, since the session ends when the oldest is too old."""
        self.dropped_for: str | None = None
        """The local bound the peer passed, when that is why the session ended:
        ``write_timeout``, ``heartbeat_timeout``, or a `FloodLimits` name (``idle_frame``,
        ``stream_churn``, ``max_queued_answers``)."""
        self.draining = False
        self.connected_at = time.time()
        self.last_received = time.monotonic()
        self.rtt: float | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.streams_opened = 0

    # -- life cycle ---------------------------------------------------------------------------

    async def run(self) -> str:
        """Serve the session until it ends; returns why it ended. Never raises for the peer."""
        self._wake_writer.set()  # our HELLO is queued already
        # Two tasks and a timer per session: a gateway holds thousands of idle sessions, and
        # a task with its coroutine costs kilobytes where a timer handle costs a hundred bytes.
        tasks = [
            asyncio.create_task(self._read_loop(), name="tunnel-reader"),
            asyncio.create_task(self._write_loop(), name="tunnel-writer"),
        ]
        self._schedule_heartbeat()
        try:
            done, _ = await asyncio.wait([self._ended, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not self._ended and not task.cancelled() and task.exception():
                    # A bug, not the peer: say so loudly and end the session cleanly.
                    self._log.error("tunnel task failed", exc_info=task.exception())
                    name = task.get_name() if isinstance(task, asyncio.Task) else "?"
                    self.close(f"internal error in {name}", ErrorCode.INTERNAL_ERROR)
        finally:
            if self._heartbeat_timer is not None:
                self._heartbeat_timer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown()
        return self.close_reason

    async def wait_ready(self) -> PeerInfo:
        """The peer's HELLO: who it is, its settings. Raises SessionClosed if it never came."""
        return await self._hello

    async def wait_idle(self) -> None:
        """Returns once no stream is open and no request handler runs (at once if so now)."""
        await self._idle.wait()

    def _update_idle(self) -> None:
        if self._streams or self._handlers:
            self._idle.clear()
        else:
            self._idle.set()

    async def wait_closed(self) -> None:
        """Returns once the session has ended."""
        await asyncio.shield(self._ended)  # a cancelled waiter must not end the session

    @property
    def peer(self) -> PeerInfo | None:
        return self._hello.result() if self._hello.done() and not self._hello.exception() else None

    @property
    def closed(self) -> bool:
        return self._ended.done()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def running_handlers(self) -> int:
        return len(self._handlers)

    @property
    def available_streams(self) -> int:
        return self._conn.available_streams if not self.closed else 0

    def bind_log(self, **fields: object) -> None:
        """Add `fields` to every later log line of this session (e.g. the peer's id, known
        only once its HELLO arrived)."""
        self._log = self._log.bind(**fields)

    def send_replicas(self, ids: frozenset[str]) -> None:
        """(Gateway side.) Tell the agent the live replicas' ids (this one's included).

        Raises LocalProtocolError unless the agent's HELLO offered `replicas` and the ids
        fit the frame (at most 256 tokens of at most 253 bytes); SessionClosed if ended."""
        if self.closed:
            raise SessionClosed(self.close_reason)
        self._conn.send_replicas(sorted(ids))
        self._wake_writer.set()

    def drain(self, reason: str = "") -> None:
        """Stop new streams both ways (GOAWAY); the session ends once open ones finish."""
        self.draining = True
        self._conn.drain(reason)
        self._process(self._conn.events_received())
        self._wake_writer.set()

    def close(self, reason: str, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        """End now: open streams fail, the peer is told why."""
        self._conn.close(code, reason)
        self._process(self._conn.events_received())
        self._end(reason)

    # -- opening streams (the requesting side) -------------------------------------------------

    def open_stream(
        self,
        *,
        method: str,
        path: str,
        headers: Headers = (),
        end_stream: bool = False,
        upgrade: bool = False,
    ) -> TunnelStream:
        """Open a stream with a request head. Raises StreamResetError(REFUSED_STREAM) when the
        peer cannot take another stream now (safe to retry elsewhere), SessionClosed if ended."""
        if self.closed:
            raise SessionClosed(self.close_reason)
        if not self._hello.done():
            raise StreamResetError(
                ErrorCode.REFUSED_STREAM, "the peer's HELLO has not arrived yet", remote=False
            )
        try:
            stream_id = self._conn.send_request(
                method=method.encode("ascii"),
                path=path.encode("latin-1"),
                headers=headers,
                end_stream=end_stream,
                upgrade=upgrade,
            )
        except LocalProtocolError as error:
            raise local_error(error) from error
        stream = TunnelStream(self, stream_id, ended_locally=end_stream)
        self._streams[stream_id] = stream
        self._idle.clear()
        self.streams_opened += 1
        self._wake_writer.set()
        return stream

    # -- what streams call (the StreamOwner interface) -------------------------------------------
    # The application calls the stream's methods, never these: they skip the stream's own
    # bookkeeping (its byte counts, its ended and reset flags, its waiters).

    def send_response(
        self, stream_id: int, status: int, headers: Headers, *, end_stream: bool
    ) -> None:
        try:
            self._conn.send_response(
                stream_id, status=status, headers=headers, end_stream=end_stream
            )
        except LocalProtocolError as error:
            # Nothing was sent: the handler may still answer with another head (a 502).
            raise local_error(error) from error
        self._wake_writer.set()

    def send_data(self, stream_id: int, data: memoryview) -> int:
        try:
            accepted = self._conn.send_data(stream_id, data)
        except LocalProtocolError as error:
            raise local_error(error) from error
        if accepted:
            self._wake_writer.set()
        return accepted

    def end_stream(self, stream_id: int) -> None:
        try:
            self._conn.end_stream(stream_id)
        except LocalProtocolError as error:
            raise local_error(error) from error
        self._wake_writer.set()

    def reset_stream(self, stream_id: int, code: ErrorCode, message: str) -> None:
        self._conn.reset_stream(stream_id, code, message)
        self._wake_writer.set()

    def consumed(self, stream_id: int, size: int) -> None:
        with contextlib.suppress(LocalProtocolError):  # the stream was reset meanwhile
            self._conn.consumed(stream_id, size)
        if self._conn.has_data_to_send:
            self._wake_writer.set()

    def forget_if_done(self, stream: TunnelStream) -> None:
        if stream.done and self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            self._update_idle()

    # -- the three tasks ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                message = await self._channel.recv()
                self.last_received = now = time.monotonic()
                self.bytes_in += len(message)
                self._conn.receive_data(message, now)
                self._process(self._conn.events_received())
                if self._conn.has_data_to_send:
                    self._wake_writer.set()
        except ChannelClosed as closed:
            self._peer_dead = True
            self._conn.connection_lost()
            self._process(self._conn.events_received())
            self._end(closed.reason)

    async def _write_loop(self) -> None:
        deadline = Deadline(asyncio.current_task())  # each write's, on one timer for all
        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer.clear()
                while True:
                    messages = self._conn.data_to_send(_WRITE_BUDGET)
                    # Pulling frees send capacity: streams waiting for it may go on.
                    self._process(self._conn.events_received())
                    if not messages:
                        break
                    for message in messages:
                        self.bytes_out += len(message)
                        async with deadline.within(self._heartbeat.write_timeout):
                            await self._channel.send(message)
        except ChannelClosed as closed:
            self._conn.connection_lost()
            self._process(self._conn.events_received())
            self._end(closed.reason)
        except TimeoutError:
            timeout = self._heartbeat.write_timeout
            self._drop(
                "write_timeout",
                f"the peer read nothing for {timeout:g} s (write_timeout)",
                "tunnel peer not reading, closing",
                write_timeout=timeout,
            )
        finally:
            deadline.close()

    def _schedule_heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        self._heartbeat_due = loop.time() + self._heartbeat.interval
        self._heartbeat_timer = loop.call_at(self._heartbeat_due, self._beat)

    def _beat(self) -> None:
        """Every interval: end a session silent for longer than the timeout, else ping."""
        self._heartbeat_timer = None
        if self.closed:
            return
        try:
            self._check_and_ping()
        except Exception:
            # A bug, not the peer (a timer has no task to report it): end the session.
            self._log.exception("tunnel heartbeat failed")
            self.close("internal error in the heartbeat", ErrorCode.INTERNAL_ERROR)

    def _check_and_ping(self) -> None:
        now_ns = time.monotonic_ns()
        # A timer more than an interval late means this process's loop was held (a long
        # callback, a starved CPU): what the peer sent meanwhile may still wait, unread, in
        # buffers, and this timer runs before the reader does. Silence is not judged on that
        # round; once only, so a loop that is always late still drops a dead peer.
        late = asyncio.get_running_loop().time() - self._heartbeat_due
        stalled = late > self._heartbeat.interval and not self._forgave_stall
        self._forgave_stall = stalled
        if stalled:
            self._log.info("tunnel heartbeat late, judging next round", late_seconds=round(late, 1))
        elif self._dropped_as_dead(now_ns):
            return
        if self._hello.done():  # PING is only allowed once HELLOs were exchanged
            self._conn.ping(now_ns.to_bytes(8, "big"))
            self._pings.append(now_ns)
            self._wake_writer.set()
        self._schedule_heartbeat()

    def _dropped_as_dead(self, now_ns: int) -> bool:
        """End the session if the peer was silent, or left our oldest PING unanswered, for
        longer than the timeout; whether it did."""
        silent_for = now_ns / 1e9 - self.last_received
        if silent_for > self._heartbeat.timeout:
            self._drop(
                "heartbeat_timeout",
                f"no message from the peer for {silent_for:.0f} s",
                "tunnel silent, closing",
                silent_seconds=round(silent_for, 1),
            )
            return True
        unanswered_for = (now_ns - self._pings[0]) / 1e9 if self._pings else 0.0
        if unanswered_for > self._heartbeat.timeout:
            # It talks but does not read (or cannot): what we send it is lost on the way.
            self._drop(
                "heartbeat_timeout",
                f"no answer to a PING for {unanswered_for:.0f} s",
                "tunnel peer not answering, closing",
                unanswered_seconds=round(unanswered_for, 1),
            )
            return True
        return False

    # -- events ---------------------------------------------------------------------------------

    def _process(self, events: list[Event]) -> None:
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: Event) -> None:  # noqa: PLR0912 - one branch per event type
        match event:
            case DataReceived(stream_id, data):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream.deliver_data(data)
                else:  # nobody reads it any more: give the credit back at once
                    self.consumed(stream_id, len(data))
            case SendCapacityAvailable(stream_id):
                if (stream := self._streams.get(stream_id)) is not None:
                    stream.capacity_available()
            case ResponseReceived(stream_id):
                if (stream := self._streams.get(stream_id)) is not None:
                    stream.deliver_response(event)
            case StreamEnded(stream_id):
                if (stream := self._streams.get(stream_id)) is not None:
                    stream.deliver_end()
            case StreamReset(stream_id, code, message, remote):
                self._on_stream_reset(stream_id, StreamResetError(code, message, remote=remote))
            case RequestReceived():
                self._on_request(event)
            case PingAcknowledged(payload):
                sent = int.from_bytes(payload, "big")
                if sent in self._pings:  # answers are merged: it answers every earlier PING too
                    while self._pings.popleft() != sent:
                        pass
                    self.rtt = (time.monotonic_ns() - sent) / 1e9
            case HelloReceived(peer):
                if not self._hello.done():
                    self._hello.set_result(peer)
            case ReplicasReceived(ids):
                self.replicas = frozenset(ids)
                if self._replicas_handler is not None:
                    self._replicas_handler(self.replicas)
            case GoAwayReceived(_, code, debug):
                self.draining = True
                self._log.info("peer is going away", code=code.name, debug=debug)
            case ConnectionTerminated(code, reason, remote):
                if code is ErrorCode.ENHANCE_YOUR_CALM and not remote:
                    self.dropped_for = self._conn.flood_limit
                    self._log.warning(
                        "tunnel peer flooded, closing", limit=self.dropped_for, reason=reason
                    )
                else:
                    self._log.info(
                        "tunnel terminated", code=code.name, reason=reason, by_peer=remote
                    )
                self._wake_writer.set()  # the GOAWAY still has to go out
                self._end(reason or code.name)

    def _on_request(self, event: RequestReceived) -> None:
        stream = TunnelStream(self, event.stream_id)
        self._streams[event.stream_id] = stream
        self._idle.clear()
        self.streams_opened += 1
        if self._request_handler is None:
            stream.reset(ErrorCode.REFUSED_STREAM, "this side serves no requests")
            return
        task = asyncio.create_task(self._serve(stream, event), name=f"stream-{event.stream_id}")
        self._handlers[event.stream_id] = task

    async def _serve(self, stream: TunnelStream, event: RequestReceived) -> None:
        assert self._request_handler is not None
        try:
            await self._request_handler(stream, event)
        except StreamResetError as error:
            # Usually the stream ended under the handler (no-op here); if the handler gave up
            # on a refusal of its own, the peer must still hear that the exchange is over.
            stream.reset(error.code, error.message)
        except Exception:
            self._log.exception("request handler failed", stream_id=stream.stream_id)
            stream.reset(ErrorCode.INTERNAL_ERROR, "the agent failed to handle the request")
        else:
            if stream.answered:
                # Answered without reading all of the request: let the answer flow out and
                # drop whatever else of the request arrives.
                stream.discard_input()
            elif not stream.done:
                stream.reset(ErrorCode.INTERNAL_ERROR, "the handler returned without answering")
        finally:
            self._handlers.pop(stream.stream_id, None)
            self._update_idle()

    def _on_stream_reset(self, stream_id: int, error: StreamResetError) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.deliver_reset(error)
        handler = self._handlers.get(stream_id)
        if handler is not None and error.remote:
            handler.cancel()  # the caller is gone: stop the upstream work too

    def _drop(self, limit: str, reason: str, event: str, **fields: object) -> None:
        """End a session whose peer passed a liveness deadline: no goodbye, nobody reads it."""
        if self.closed:
            return
        self.dropped_for = limit
        self._log.warning(event, limit=limit, **fields)
        self._peer_dead = True
        self.close(reason, ErrorCode.CONNECTION_LOST)

    def _end(self, reason: str) -> None:
        if self._ended.done():
            return
        self.close_reason = reason
        if not self._hello.done():
            self._hello.set_exception(SessionClosed(reason))
            self._hello.exception()  # a session may end before anyone asked
        lost = StreamResetError(ErrorCode.CONNECTION_LOST, reason, remote=False)
        for stream in list(self._streams.values()):
            stream.deliver_reset(lost)
        self._ended.set_result(None)

    async def _shutdown(self) -> None:
        if self._peer_dead:  # gone, or not reading: a goodbye would only wait for nothing
            self._channel.abort()
        else:
            # One last flush: a GOAWAY or RESET queued by the end may still reach the peer;
            # then a closing handshake, bounded, since the peer may be gone after all. A peer
            # cut off for a flood is told why, but not waited for: it has shown it does not
            # play along, and its connection holds memory until it is gone.
            with contextlib.suppress(ChannelClosed, OSError, TimeoutError):
                for message in self._conn.data_to_send():
                    await asyncio.wait_for(self._channel.send(message), timeout=1.0)
                if self.dropped_for is None:
                    await asyncio.wait_for(
                        self._channel.close(1000, self.close_reason), timeout=2.0
                    )
            self._channel.abort()
        handlers = list(self._handlers.values())
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        self._streams.clear()
        self._update_idle()
