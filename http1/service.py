"""A small HTTP/1.1 server for a process's own endpoints: probes, metrics, status pages.

The agent's health port and the gateway's operator port serve a handful of GET paths to the
kubelet, Prometheus and a browser. A web framework for that was a third of a process's resting
memory; this is the few lines they need over `http1`'s parser. A handler turns a request head
into an `Answer`; requests with a body are answered, never read (the connection ends after the
answer), HEAD is answered like GET without the body, and a request sent before the previous
answer (pipelining, which `http1` refuses everywhere) ends the connection unanswered.

Whoever reaches the port is bounded like any peer: connections at once (more are closed at
once), a head's size and fields, the time to send a head and to begin the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from http1.parser import HttpError, RequestHead
from http1.reader import MessageReader
from http1.writer import reason_phrase, response_head_bytes

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole response: status, content type, body and any further header fields."""

    status: int
    content_type: bytes
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler is given: the head, its path (the target without its query), and the
    peer's address (None when the socket does not tell)."""

    head: RequestHead
    path: str
    peer: str | None


Handler = Callable[[Request], Awaitable[Answer]]
INTERNAL_ERROR = Answer(500, TEXT, b"500: Internal Server Error\n")


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """What one client of the port may hold."""

    max_connections: int = 32
    """Connections served at once (probes and scrapes open one or two each)."""
    head_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its head."""
    idle_timeout: float = 30.0
    """Seconds a kept-alive connection may wait for its next request."""
    max_head_bytes: int = 8 * 1024
    max_header_fields: int = 64


class SmallHttpServer:
    """Serves `handler`'s answers on `host:port` (host None: every interface; port 0: any)."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str | None,
        port: int,
        reuse_port: bool = False,
        limits: ServiceLimits | None = None,
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._limits = limits or ServiceLimits()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0
        """The port actually bound, once started."""

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, reuse_port=self._reuse_port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and end every connection (an answer being written is cut short)."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._limits.max_connections:
            writer.close()
            return
        self._connections.add(task)
        limits = self._limits
        http = MessageReader(
            reader,
            "request",
            max_head_bytes=limits.max_head_bytes,
            max_header_fields=limits.max_header_fields,
        )
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else None
        try:
            while await self._answer_next(http, writer, peer):
                pass
        except (HttpError, TimeoutError, ConnectionError):
            pass  # a bad or slow request ends its connection; the next one opens another
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer_next(
        self, http: MessageReader, writer: asyncio.StreamWriter, peer: str | None
    ) -> bool:
        """Answer one request; False when the connection is to end."""
        async with asyncio.timeout(self._limits.idle_timeout):
            if not await http.wait_for_message():
                return False
        async with asyncio.timeout(self._limits.head_timeout):
            head = await http.next_request()
        if head is None:
            return False
        try:
            answer = await self._handler(Request(head, head.target.split("?", 1)[0], peer))
            failed = False
        except Exception as error:  # a bug of the handler: 500, and the loop reports it
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"{head.method} {head.target} failed", "exception": error}
            )
            answer, failed = INTERNAL_ERROR, True
        keep_alive = head.keep_alive and not head.has_body and not head.upgrade and not failed
        headers = [
            (b"Content-Type", answer.content_type),
            (b"Content-Length", b"%d" % len(answer.body)),
            *answer.headers,
        ]
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        writer.write(response_head_bytes(answer.status, reason_phrase(answer.status), headers))
        if head.method != "HEAD":
            writer.write(answer.body)
        await writer.drain()
        return keep_alive
