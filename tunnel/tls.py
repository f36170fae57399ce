"""How the TLS connections of this process read: into one buffer that all of them share.

asyncio's TLS transport (CPython 3.11 to 3.13) gives every connection a zero-filled read buffer
of `asyncio.sslproto.SSLProtocol.max_size` bytes (256 KiB), and decrypts each TLS record into a
new bytes object of that size, joined with the others before it is handed to the protocol
above. A gateway holds a TLS connection per agent and per caller request in flight (HTTP/1.1: a
watch is a connection), the agent one per upstream request: at 256 KiB each, 10,000 watches
cost 2.5 GiB of buffers that small messages never fill — while a bulk transfer wants the
opposite, few large reads, since every read and every piece handed up costs Python work
whatever its size.

Both are had at once because a read buffer's content lives only for one call: the transport
`recv_into`s it and `buffer_updated` copies it into the connection's incoming BIO at once, and
the records decrypted from that BIO are copied out before the protocol sees them. The event
loop runs one callback at a time, so every connection of a thread can read into the same
buffer, and decrypt into the same second buffer. `set_tls_read_buffer` installs that
(`SharedBufferSSLProtocol`, in place of the stdlib's class) with the size of a read; a
connection then holds no read buffer at all, and a read takes up to that many bytes.

This is process-wide (the stdlib's transport has no per-connection knob); the `planelink`
command applies it once, before any connection exists. Where the stdlib's class is not the one
this was written against, only its buffer size is set, as before. uvloop's TLS transport is
its own and is left alone.
"""

from __future__ import annotations

import asyncio.sslproto
import ssl
import threading
from typing import Any

DEFAULT_TLS_READ_BUFFER = 64 * 1024
"""Larger reads cost a bulk body less CPU per MiB, but every read is one callback of the event
loop, and small requests beside a bulk stream wait for it: 256 KiB reads made their p99 about a
sixth longer than 64 KiB reads in `bench.bulk_ab`'s fairness part, for no clear gain in bulk."""
MIN_TLS_READ_BUFFER = 16 * 1024 + 512  # one full TLS record with its header and tag
MAX_TLS_READ_BUFFER = 1 << 20

_StdlibProtocol = asyncio.sslproto.SSLProtocol
_AGAIN = (ssl.SSLWantReadError, ssl.SSLSyscallError)  # what the stdlib's reader stops on


def tls_read_buffer_problem(size: int) -> str | None:
    """Why `size` cannot be the TLS read buffer, or None if it can."""
    if MIN_TLS_READ_BUFFER <= size <= MAX_TLS_READ_BUFFER:
        return None
    return (
        f"the TLS read buffer must be between {MIN_TLS_READ_BUFFER} and "
        f"{MAX_TLS_READ_BUFFER} bytes, not {size}"
    )


class _Buffers(threading.local):
    """This thread's two buffers: for what a socket read returns, and for its plaintext."""

    size = 0
    encrypted = memoryview(b"")
    plain = memoryview(b"")


_buffers = _Buffers()
_read_size = DEFAULT_TLS_READ_BUFFER


def _this_threads_buffers() -> _Buffers:
    buffers = _buffers
    if buffers.size != _read_size:
        buffers.encrypted = memoryview(bytearray(_read_size))
        buffers.plain = memoryview(bytearray(_read_size))
        buffers.size = _read_size
    return buffers


class SharedBufferSSLProtocol(_StdlibProtocol):
    """The stdlib's TLS protocol, reading and decrypting into its thread's shared buffers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # An instance's own size, 0: the stdlib's __init__ allocates no buffer.
        self.max_size = 0  # type: ignore[misc]
        super().__init__(*args, **kwargs)
        self._shared = _this_threads_buffers()
        self._ssl_buffer_view = self._shared.encrypted  # what `buffer_updated` copies from

    def get_buffer(self, n: int) -> memoryview:
        return self._shared.encrypted

    def _do_read__copied(self) -> None:
        """Every record the incoming BIO holds, to the protocol in as few pieces as the buffer
        allows (one, unless the protocol's reading was paused for a while)."""
        # The stdlib's private parts this reader uses, which typeshed does not declare.
        tls: ssl.SSLObject = self._sslobj  # type: ignore[attr-defined]
        plain = self._shared.plain
        size = len(plain)
        count = 1
        while count:
            filled = 0
            try:
                while filled < size:
                    # Given a buffer, it returns a count (typeshed says bytes).
                    count = tls.read(size - filled, plain[filled:])  # type: ignore[assignment]
                    if not count:
                        break
                    filled += count
            except _AGAIN:
                count = -1
            if filled:  # to the protocol of this moment (data_received may replace it)
                protocol: asyncio.Protocol = self._app_protocol  # type: ignore[assignment]
                protocol.data_received(bytes(plain[:filled]))
            if count < 0 or filled < size:
                break
        if not count:  # close_notify
            self._call_eof_received()  # type: ignore[attr-defined]
            self._start_shutdown()


def _fits_the_stdlib() -> bool:
    needed = ("_do_read__copied", "get_buffer", "buffer_updated", "_call_eof_received")
    return all(hasattr(_StdlibProtocol, name) for name in needed)


def set_tls_read_buffer(size: int) -> None:
    """Read at most `size` bytes per TLS read, into one buffer per thread (see above)."""
    global _read_size  # noqa: PLW0603 - the one process-wide setting this module keeps
    problem = tls_read_buffer_problem(size)
    if problem is not None:
        raise ValueError(problem)
    _read_size = size
    if _fits_the_stdlib():
        asyncio.sslproto.SSLProtocol = SharedBufferSSLProtocol  # type: ignore[misc]
    else:
        _StdlibProtocol.max_size = size


def tls_read_buffer() -> int:
    """Bytes a TLS read takes at most."""
    return _read_size
