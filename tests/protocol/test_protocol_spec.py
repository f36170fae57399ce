"""SPEC.md and the code cannot drift: every table in the spec is compared with the constants."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import protocol
from protocol import ErrorCode, FloodLimits, SendLimits, SettingId, Settings
from protocol.connection import CONNECTION_TRANSITIONS, ConnectionInput, ConnectionState
from protocol.frames import (
    _CONNECTION_ONLY,
    _STREAM_ONLY,
    ALLOWED_FLAGS,
    HEADER,
    MAGIC,
    MAX_REPLICA_ID_SIZE,
    MAX_REPLICA_IDS,
    MAX_TEXT_SIZE,
    Data,
    Flag,
    FrameType,
    Request,
    Response,
)
from protocol.hello import IDENTITY_KEYS, build_hello
from protocol.registry import RESET_MEMORY
from protocol.settings import (
    _RANGES,
    FRAME_HEADER_SIZE,
    MIN_MAX_FRAME_SIZE,
    MIN_MAX_MESSAGE_SIZE,
    SETTING_FIELDS,
)
from protocol.stream import TRANSITIONS, Action, HalfState, Side

SPEC = (Path(protocol.__file__).parent / "SPEC.md").read_text(encoding="utf-8")

Row = dict[str, str]


def tables() -> list[list[Row]]:
    """Every markdown table of the spec, as rows keyed by the header cells."""
    found: list[list[Row]] = []
    lines = SPEC.splitlines()
    i = 0
    while i < len(lines):
        if (
            lines[i].startswith("|")
            and i + 1 < len(lines)
            and re.match(r"^\|[-| ]+\|$", lines[i + 1])
        ):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                rows.append(dict(zip(header, cells, strict=True)))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def table(*columns: str) -> list[Row]:
    matches = [t for t in tables() if t and all(c in t[0] for c in columns)]
    assert len(matches) == 1, f"expected one table with columns {columns}, got {len(matches)}"
    return matches[0]


def number(text: str) -> int:
    return int(text, 0)


def test_frame_types_match() -> None:
    rows = table("Type", "Code", "Stream id", "Payload")
    assert {r["Type"]: number(r["Code"]) for r in rows} == {t.name: int(t) for t in FrameType}
    for row in rows:
        kind = FrameType[row["Type"]]
        expected = "0" if kind in _CONNECTION_ONLY else ("≠ 0" if kind in _STREAM_ONLY else "any")
        assert row["Stream id"] == expected, kind


def test_flags_match() -> None:
    rows = table("Flag", "Bit", "Allowed on")
    assert {r["Flag"]: number(r["Bit"]) for r in rows} == {f.name: int(f) for f in Flag}
    for row in rows:
        bit = Flag[row["Flag"]]
        allowed = {FrameType[name.strip()] for name in row["Allowed on"].split(",")}
        assert allowed == {t for t, mask in ALLOWED_FLAGS.items() if mask & bit}


def test_error_codes_match() -> None:
    rows = table("Code", "Value", "Meaning")
    assert {r["Code"]: number(r["Value"]) for r in rows} == {c.name: int(c) for c in ErrorCode}


def test_settings_match() -> None:
    rows = table("Setting", "Id", "Default", "Min", "Max")
    defaults = Settings()
    assert {r["Setting"]: number(r["Id"]) for r in rows} == {s.name: int(s) for s in SettingId}
    for row in rows:
        field = SETTING_FIELDS[SettingId[row["Setting"]]]
        assert number(row["Default"]) == getattr(defaults, field), field
        assert (number(row["Min"]), number(row["Max"])) == _RANGES[field], field


def test_frame_header_layout_matches_struct() -> None:
    rows = table("Offset", "Size", "Field")
    sizes = {"u8": 1, "u16": 2, "u32": 4}
    offset = 0
    for row in rows:
        assert number(row["Offset"]) == offset, row
        offset += sizes[row["Size"]]
    assert offset == HEADER.size == FRAME_HEADER_SIZE == 12
    assert "`!BBBBII`" in SPEC
    assert [r["Field"] for r in rows] == [
        "version",
        "type",
        "flags",
        "reserved",
        "stream_id",
        "length",
    ]


def test_state_table_matches_transitions() -> None:
    rows = table("Half", "From", "Action", "To")
    spec = {
        (Side(r["Half"]), HalfState(r["From"]), Action(r["Action"])): HalfState(r["To"])
        for r in rows
    }
    assert spec == TRANSITIONS
    states = table("State", "Meaning")
    assert {r["State"] for r in states} == {s.value for s in HalfState}


def test_connection_table_matches_connection_transitions() -> None:
    rows = table("Connection from", "Input", "To")
    spec = {
        (ConnectionState(r["Connection from"]), ConnectionInput(r["Input"])): ConnectionState(
            r["To"]
        )
        for r in rows
    }
    assert spec == CONNECTION_TRANSITIONS
    states = table("Connection state", "Meaning")
    assert {r["Connection state"] for r in states} == {s.value for s in ConnectionState}


@pytest.mark.parametrize(
    "fact",
    [
        f"`{MAGIC.decode()}`",
        f"{MIN_MAX_MESSAGE_SIZE} bytes",
        f"exceed {MIN_MAX_FRAME_SIZE} bytes",
        f"last {RESET_MEMORY} reset stream ids",
        f"under {MAX_TEXT_SIZE} bytes",
        f"per stream (default {SendLimits().max_stream_buffer} bytes)",
        f"per connection (default {SendLimits().max_connection_buffer} bytes)",
        "defines version **1** only",
        f"HTTP token of 1 to {MAX_REPLICA_ID_SIZE} bytes",
        f"are distinct, at most {MAX_REPLICA_IDS},",
    ],
)
def test_constants_quoted_in_prose_match(fact: str) -> None:
    assert fact in SPEC


def test_well_known_identity_keys_are_documented() -> None:
    for key in IDENTITY_KEYS:
        assert f"`{key}`" in SPEC


def test_flood_limits_match() -> None:
    rows = table("Limit", "Field", "Default", "Counts")
    defaults = {f.name: f.default for f in dataclasses.fields(FloodLimits)}
    assert {r["Field"]: number(r["Default"]) for r in rows} == defaults


def test_settings_fields_are_all_on_the_wire() -> None:
    assert set(SETTING_FIELDS.values()) == {f.name for f in dataclasses.fields(Settings)}


def examples() -> list[bytes]:
    section = SPEC.split("## 10. Example", 1)[1]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    out = []
    for block in blocks:
        hexes = []
        for line in block.splitlines():
            # hex groups come first on each line; the rest is commentary
            for token in line.split():
                if not re.fullmatch(r"[0-9a-f]+", token) or len(token) % 2:
                    break
                hexes.append(token)
        out.append(bytes.fromhex("".join(hexes)))
    return out


def test_examples_are_byte_exact() -> None:
    hello_example, exchange = examples()
    assert hello_example == build_hello(
        role=protocol.Role.GATEWAY,
        versions=(1,),
        settings=Settings(),
        identity={},
        capabilities=(),
    )
    assert exchange == (
        Request(1, b"GET", b"/a", end_stream=True).encode(1)
        + Response(1, 200).encode(1)
        + Data(1, b"ok", end_stream=True).encode(1)
    )
