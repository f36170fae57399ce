"""How much memory each TLS connection of this process may hold for reading.

asyncio's TLS transport gives every connection a zero-filled read buffer of
`asyncio.sslproto.SSLProtocol.max_size` bytes — 256 KiB in CPython 3.11 to 3.13 — and decrypts
into chunks of up to that size. The gateway holds one TLS connection per caller request in
flight (HTTP/1.1: a watch is a connection) and per agent; the agent holds one per upstream
request. At 256 KiB each, 10,000 watches cost 2.5 GiB of buffers that small messages never
fill. A TLS record carries at most 16 KiB, so a buffer of a few records loses little: bulk
transfers take more, smaller reads.

This is a process-wide setting of the stdlib's transport (it has no per-connection knob); the
`planelink` command applies it once, before any connection exists.
"""

from __future__ import annotations

import asyncio.sslproto

DEFAULT_TLS_READ_BUFFER = 32 * 1024
MIN_TLS_READ_BUFFER = 16 * 1024 + 512  # one full TLS record with its header and tag
MAX_TLS_READ_BUFFER = 1 << 20


def tls_read_buffer_problem(size: int) -> str | None:
    """Why `size` cannot be the TLS read buffer, or None if it can."""
    if MIN_TLS_READ_BUFFER <= size <= MAX_TLS_READ_BUFFER:
        return None
    return (
        f"the TLS read buffer must be between {MIN_TLS_READ_BUFFER} and "
        f"{MAX_TLS_READ_BUFFER} bytes, not {size}"
    )


def set_tls_read_buffer(size: int) -> None:
    """Read at most `size` bytes per TLS read (and keep a buffer of that size per connection)."""
    problem = tls_read_buffer_problem(size)
    if problem is not None:
        raise ValueError(problem)
    asyncio.sslproto.SSLProtocol.max_size = size


def tls_read_buffer() -> int:
    size: int = asyncio.sslproto.SSLProtocol.max_size
    return size
