"""A round-robin TCP load balancer for tests of several gateway replicas behind one address.

A unit-level stand-in (the real HAProxy kit is elsewhere): each accepted connection is piped to
one backend, chosen in turn or by the test's `plan`, and `landed` records the choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools


class RoundRobin:
    """A load balancer in front of gateway replicas: a TCP forwarder whose every connection
    goes to the next backend in turn, or to the ones `plan` names first (indexes, used up in
    order). TLS passes through untouched, as with a TCP-mode load balancer."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        """(host, port) of each replica's agent port."""
        self.plan: list[int] = []
        self.landed: list[int] = []
        """The backend index of every connection forwarded so far."""
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"wss://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):  # the pipes end by themselves, nothing is cancelled
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.plan.pop(0) if self.plan else next(self._turn) % len(self.backends)
        self.landed.append(index)
        host, port = self.backends[index]
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.transport.abort()
            writer.transport.abort()
            self._writers.difference_update({writer, up_writer})
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.write_eof()
