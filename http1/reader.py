"""HTTP/1.1 messages read from an asyncio stream, for a reverse proxy that must stream and upgrade.

The gateway reads callers' requests with it and the agent reads the API server's responses.
A thin layer over the pure `http1.parser`: it moves bytes from the stream into the parser and
gives a pull API (`next_request`, `next_response`, `read_body`), so that a body is read only as
fast as its consumer takes it — memory per message is one socket read, whatever the body's size.

It never decides what is forwarded (that is `http1.forwarding`) and never writes
(`http1.writer`).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from http1.parser import MAX_HEADER_FIELDS, HttpError, MessageParser, RequestHead, ResponseHead

__all__ = ["READ_SIZE", "MessageReader"]

READ_SIZE = 64 * 1024


class MessageReader:
    """Reads HTTP/1.1 messages of one kind from a stream, one head and body at a time.

    The parser's bounds hold (`http1.parser`): a head by `max_head_bytes` and
    `max_header_fields`, the framing of a chunked body by the same, no pipelining; a body piece
    is one socket read at most.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        kind: Literal["request", "response"],
        *,
        max_head_bytes: int = 64 * 1024,
        max_header_fields: int = MAX_HEADER_FIELDS,
    ) -> None:
        self._reader = reader
        self._max_head_bytes = max_head_bytes
        self._messages = MessageParser(
            kind, max_head_bytes=max_head_bytes, max_header_fields=max_header_fields
        )
        self._eof = False
        self._unread = b""  # bytes read by `watch_for_close` that belong to a later message

    @property
    def upgraded(self) -> bool:
        return self._messages.upgraded

    def take_upgrade_tail(self) -> bytes:
        """Bytes read past the head of an upgrade: the start of the raw byte stream."""
        return self._messages.take_upgrade_tail()

    async def wait_for_message(self) -> bool:
        """Wait, between messages, for the first bytes of the next one (kept for
        `next_request`); False if the peer closed instead. Lets a server time the idle wait
        apart from the head."""
        if self._unread:
            return True
        if self._eof:
            return False
        data = await self._reader.read(READ_SIZE)
        if not data:
            self._eof = True
            return False
        self._unread = data
        return True

    async def next_request(self) -> RequestHead | None:
        """The next request's head, or None when the peer closed between requests."""
        if not await self._read_head():
            return None
        return self._messages.request_head()

    async def next_response(self, *, head_request: bool = False) -> ResponseHead:
        """The next response's head; `head_request` says it answers a HEAD (so has no body)."""
        if not await self._read_head():
            raise HttpError(502, "the upstream closed the connection before responding")
        return self._messages.response_head(head_request=head_request)

    async def read_body(self) -> bytes:
        """The next piece of the current message's body; b"" once the body is complete."""
        while (piece := self._messages.body_piece(eof=self._eof)) is None:
            await self._feed_more()
        return piece

    async def _read_head(self) -> bool:
        messages = self._messages
        messages.begin()
        fed = 0
        while not messages.head_done:
            if self._eof and not self._unread:
                if fed == 0:
                    return False
                raise HttpError(400, "the connection closed in the middle of a message head")
            fed += await self._feed_more()
        return True

    async def discard_until_close(self) -> None:
        """Read and drop what the peer sends, unparsed, until it closes (the caller bounds the
        time); memory stays one socket read."""
        self._unread = b""
        while not self._eof:
            self._eof = not await self._reader.read(READ_SIZE)

    async def read_raw(self) -> bytes:
        """After an upgrade: the next bytes of the raw stream (b"" at its end)."""
        if not self.upgraded:
            raise RuntimeError("read_raw() is only for upgraded connections")
        tail = self.take_upgrade_tail()
        return tail or await self._reader.read(READ_SIZE)

    async def watch_for_close(self) -> None:
        """Return when the peer closes its side; for a caller that has sent its whole request
        and waits for a long response (a watch), this is how its departure is noticed.

        Bytes that arrive meanwhile (the next request, sent early) are kept for `next_request`.
        """
        while not self._eof:
            if len(self._unread) >= self._max_head_bytes:
                # The peer sent a whole head's worth without waiting: stop reading, and let
                # TCP push back on it until this response is done.
                await asyncio.Event().wait()
            data = await self._reader.read(READ_SIZE)
            if not data:
                self._eof = True
            self._unread += data

    async def _feed_more(self) -> int:
        if self._unread:
            data, self._unread = self._unread, b""
        else:
            data = await self._reader.read(READ_SIZE)
        if not data:
            self._eof = True
            return 0
        self._messages.feed(data)
        return len(data)
