"""Header block codec: exact layout, order and duplicates, validation, truncation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.headers import HeaderBlockError, decode_header_block, encode_header_block

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=40).map(str.encode)
values = st.binary(max_size=200).filter(lambda v: not any(c in v for c in b"\x00\r\n"))
header_lists = st.lists(st.tuples(names, values), max_size=20)


def test_exact_layout() -> None:
    assert encode_header_block([(b"Accept", b"*/*"), (b"x", b"")]) == bytes.fromhex(
        "0006 416363657074 00000003 2a2f2a  0001 78 00000000".replace(" ", "")
    )


def test_empty_block_is_empty() -> None:
    assert encode_header_block([]) == b""
    assert decode_header_block(b"", 0, 0) == ()


@given(header_lists)
def test_round_trip_preserves_order_duplicates_and_case(headers: list[tuple[bytes, bytes]]) -> None:
    block = encode_header_block(headers)
    framed = b"junk" + block + b"tail"
    assert decode_header_block(framed, 4, 4 + len(block)) == tuple(headers)


@given(header_lists.filter(bool), st.data())
def test_any_truncation_is_detected(
    headers: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    block = encode_header_block(headers)
    cut = data.draw(st.integers(1, len(block) - 1))
    # A cut exactly at an entry boundary is a shorter, valid block.
    try:
        decoded = decode_header_block(block, 0, cut)
    except HeaderBlockError:
        return
    assert list(decoded) == headers[: len(decoded)]
    assert encode_header_block(decoded) == block[:cut]


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"", b"v"), (b"a b", b"v"), (b"a:", b"v"), (b"\xff", b"v"), (b"n", b"a\nb"), (b"n", b"\0")],
)
def test_invalid_entries_rejected_both_ways(name: bytes, value: bytes) -> None:
    with pytest.raises(HeaderBlockError):
        encode_header_block([(name, value)])
    raw = len(name).to_bytes(2, "big") + name + len(value).to_bytes(4, "big") + value
    with pytest.raises(HeaderBlockError):
        decode_header_block(raw, 0, len(raw))


def test_non_bytes_and_non_pairs_rejected() -> None:
    with pytest.raises(HeaderBlockError, match="pair of bytes"):
        encode_header_block([("a", "b")])  # type: ignore[list-item]  # wrong on purpose
    with pytest.raises(HeaderBlockError, match="not a"):
        encode_header_block([(b"a", b"b", b"c")])  # type: ignore[list-item]  # wrong on purpose


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [(b"", b"v", "b''"), (b"a b", b"v", "b'a b'"), (b"n", b"a\rb", "b'a\\\\rb'")],
)
@pytest.mark.parametrize("at", [0, 3, 7])
def test_a_bad_field_among_good_ones_is_named_both_ways(
    name: bytes, value: bytes, named: str, at: int
) -> None:
    # Fields are checked a block at a time; a refusal still names the field at fault.
    headers = [(b"Accept", b"*/*"), (b"X-Id", b"1"), (b"Host", b"h")] * 3
    headers.insert(at, (name, value))
    with pytest.raises(HeaderBlockError, match=named):
        encode_header_block(headers)
    raw = b"".join(
        len(n).to_bytes(2, "big") + n + len(v).to_bytes(4, "big") + v for n, v in headers
    )
    with pytest.raises(HeaderBlockError, match=named):
        decode_header_block(raw, 0, len(raw))
