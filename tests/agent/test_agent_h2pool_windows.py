"""The agent's HTTP/2 connection reopens windows in steps, not per piece, and writes the frames
of a loop turn together: with bytes, against a raw h2 server on a local socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import pytest

from kubeproxy.h2pool import H2UpstreamConnection
from tests.kit.waits import eventually, wait_for

PIECE = 1000


def head(path: str) -> list[tuple[bytes, bytes]]:
    """A request head as the pool builds it (`H2Pool._fields`)."""
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"x"),
        (b":path", path.encode()),
    ]


class RawServer:
    """An h2 server that answers every request with `pieces` DATA frames of PIECE bytes, and
    notes each WINDOW_UPDATE it gets (stream id, increment)."""

    def __init__(self, pieces: int) -> None:
        self.pieces = pieces
        self.updates: list[tuple[int, int]] = []
        self.reads = 0
        self.done = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        server.initiate_connection()
        writer.write(server.data_to_send())
        try:
            await self._answer(server, reader, writer)
        finally:
            writer.close()
            self.done.set()

    async def _answer(
        self,
        server: h2.connection.H2Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        while data := await reader.read(65536):
            self.reads += 1
            for event in server.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    assert event.stream_id is not None
                    server.send_headers(event.stream_id, [(b":status", b"200")])
                    for _ in range(self.pieces):
                        server.send_data(event.stream_id, b"x" * PIECE)
                elif isinstance(event, h2.events.WindowUpdated):
                    self.updates.append((event.stream_id or 0, event.delta or 0))
            writer.write(server.data_to_send())


@pytest.fixture
async def served() -> AsyncIterator[tuple[RawServer, H2UpstreamConnection]]:
    raw = RawServer(pieces=60)
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = H2UpstreamConnection(
        reader,
        writer,
        stream_window=65_535,
        connection_window=16 * 1024 * 1024,
        on_stream_closed=lambda _: None,
    )
    await wait_for(connection.settled.wait())
    yield raw, connection
    connection.abort()
    await wait_for(raw.done.wait())
    server.close()
    await server.wait_closed()


async def test_a_streams_window_reopens_once_half_of_it_was_taken(
    served: tuple[RawServer, H2UpstreamConnection],
) -> None:
    raw, connection = served
    exchange = connection.start("GET", "/watch", head("/watch"), end=True)
    await wait_for(exchange.response_head())
    taken = 0
    while taken < 40 * PIECE:
        taken += len(await wait_for(exchange.body_piece()))
        stream_updates = [delta for stream, delta in raw.updates if stream == exchange.stream_id]
        if taken < 65_535 // 2:
            assert stream_updates == [], f"a WINDOW_UPDATE after {taken} bytes"
    await eventually(
        lambda: [d for s, d in raw.updates if s == exchange.stream_id] == [33_000],
        within=10,
        message="one WINDOW_UPDATE for the first half window taken",
    )


async def test_the_heads_of_one_loop_turn_leave_in_one_write(
    served: tuple[RawServer, H2UpstreamConnection],
) -> None:
    raw, connection = served
    reads = raw.reads
    exchanges = [connection.start("GET", f"/{n}", head(f"/{n}"), end=True) for n in range(20)]
    for exchange in exchanges:
        await wait_for(exchange.response_head())
    assert raw.reads - reads <= 2  # 20 HEADERS frames, one write (a split read at most)
