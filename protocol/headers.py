"""Header block codec: an ordered list of ``(name, value)`` byte pairs, no compression.

Encoding of one entry (all integers big-endian)::

    name_length u16 | name | value_length u32 | value

A block is entries back to back; its end is given by the enclosing frame. Order and duplicate
names are preserved exactly; names are case-preserved (HTTP/1.1 semantics, the receiver
compares case-insensitively if it cares). Validation is done with compiled regular
expressions, so no Python loop ever runs per byte.

This module knows nothing about streams or connections: it raises :class:`HeaderBlockError`
and the caller decides whether that is a local misuse or a stream error of the peer.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

__all__ = [
    "Header",
    "HeaderBlockError",
    "Headers",
    "check_token",
    "check_value",
    "decode_header_block",
    "encode_header_block",
]

Header = tuple[bytes, bytes]
"""One header field: ``(name, value)``, the name as received (compare it lower-cased)."""
Headers = Sequence[Header]
"""Header fields in order, duplicates kept: what a REQUEST or RESPONSE head carries. A sender
may pass any sequence; events deliver tuples."""

_NAME_LEN = struct.Struct("!H")
_VALUE_LEN = struct.Struct("!I")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_MAX_NAME = 0xFFFF
_MAX_VALUE = 0xFFFF_FFFF


class HeaderBlockError(ValueError):
    """A header block (or one of its names or values) is malformed."""


def check_token(what: str, name: bytes) -> None:
    """Raise :class:`HeaderBlockError` unless ``name`` is a non-empty HTTP token."""
    if _TOKEN.fullmatch(name) is None:
        raise HeaderBlockError(f"{what} {bytes(name)[:64]!r} is not a non-empty HTTP token")


def check_value(what: str, value: bytes) -> None:
    """Raise :class:`HeaderBlockError` if ``value`` contains NUL, CR or LF."""
    if _BAD_VALUE.search(value) is not None:
        raise HeaderBlockError(f"{what} {bytes(value)[:64]!r} contains NUL, CR or LF")


def encode_header_block(headers: Headers) -> bytes:
    """Encode and validate ``headers``; raises :class:`HeaderBlockError` on a bad entry."""
    parts: list[bytes] = []
    append = parts.append
    names: list[bytes] = []
    values: list[bytes] = []
    name_len = _NAME_LEN.pack
    value_len = _VALUE_LEN.pack
    for entry in headers:
        try:
            name, value = entry
        except (TypeError, ValueError):
            return _encode_checked(headers)  # raises, naming the entry
        if (
            type(name) is not bytes
            or type(value) is not bytes
            or not name
            or len(name) > _MAX_NAME
            or len(value) > _MAX_VALUE
        ):
            return _encode_checked(headers)
        append(name_len(len(name)))
        append(name)
        append(value_len(len(value)))
        append(value)
        names.append(name)
        values.append(value)
    if not _names_and_values_valid(names, values):
        return _encode_checked(headers)
    return b"".join(parts)


def _names_and_values_valid(names: list[bytes], values: list[bytes]) -> bool:
    """All of ``names`` (each non-empty) are tokens and no value holds NUL, CR or LF: checked
    on the names and the values joined, two regex runs a block instead of two a field (a
    concatenation of tokens is a token; a forbidden byte is one byte wherever it is)."""
    if names and _TOKEN.fullmatch(b"".join(names)) is None:
        return False
    return _BAD_VALUE.search(b"".join(values)) is None


def _encode_checked(headers: Headers) -> bytes:
    """`encode_header_block` field by field: the first bad entry raises, saying what it is."""
    parts: list[bytes] = []
    append = parts.append
    for entry in headers:
        if len(entry) != 2:
            raise HeaderBlockError(f"header entry {entry!r} is not a (name, value) pair")
        name, value = entry
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise HeaderBlockError(f"header entry {entry!r} must be a pair of bytes")
        check_token("header name", name)
        check_value("header value", value)
        if len(name) > _MAX_NAME or len(value) > _MAX_VALUE:
            raise HeaderBlockError(f"header {name[:64]!r} is too long to encode")
        append(_NAME_LEN.pack(len(name)))
        append(name)
        append(_VALUE_LEN.pack(len(value)))
        append(value)
    return b"".join(parts)


def decode_header_block(buf: bytes | memoryview, start: int, end: int) -> tuple[Header, ...]:
    """Decode the entries in ``buf[start:end]``; raises :class:`HeaderBlockError` if malformed."""
    names: list[bytes] = []
    values: list[bytes] = []
    name_len = _NAME_LEN.unpack_from
    value_len = _VALUE_LEN.unpack_from
    pos = start
    while pos < end:
        if pos + 2 > end:
            raise HeaderBlockError("header block truncated inside a name length")
        (n,) = name_len(buf, pos)
        pos += 2
        if not n:
            check_token("header name", b"")  # raises
        names.append(bytes(buf[pos : pos + n]))
        pos += n
        if pos + 4 > end:
            raise HeaderBlockError("header block truncated inside a name or value length")
        (v,) = value_len(buf, pos)
        pos += 4
        if pos + v > end:
            raise HeaderBlockError("header block truncated inside a value")
        values.append(bytes(buf[pos : pos + v]))
        pos += v
    if not _names_and_values_valid(names, values):
        for name, value in zip(names, values, strict=True):  # the first bad field raises
            check_token("header name", name)
            check_value("header value", value)
    return tuple(zip(names, values, strict=True))
