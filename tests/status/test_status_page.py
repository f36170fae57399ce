"""The health page on the operator port, rendered by a real headless Chromium."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import aiohttp
import pytest

import certs
from gateway.app import Gateway
from gateway.health_page import HTML
from gateway.interfaces import Replica
from tests.kit.gateway_lab import AgentFactory
from tests.status.conftest import BrowserRunner

PLANE_A = certs.plane_ref("ns-a", "plane-a")
PLANE_B = certs.plane_ref("ns-b", "plane-b")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT_BUDGET = "--virtual-time-budget=5000"  # lets the page's fetch and rendering finish


async def test_page_is_self_contained_and_locked_down(operator_url: str) -> None:
    async with aiohttp.ClientSession(operator_url) as http:
        for path in ("/", "/ui"):
            async with http.get(path) as answer:
                assert answer.status == 200
                assert answer.content_type == "text/html"
                policy = answer.headers["Content-Security-Policy"]
                assert await answer.text() == HTML
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy  # only this page's own script and style, by hash
    assert not re.search(r"(src|href)\s*=", HTML)  # nothing loaded from anywhere
    assert "innerHTML" not in HTML.replace("never innerHTML", "")


def _dom_rows(dom: str) -> dict[str, list[str]]:
    rows = {}
    for row in re.findall(r"<tr class=\"(?:up|down)\">(.*?)</tr>", dom, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows[cells[0]] = cells
    return rows


async def test_page_renders_the_planes_table(
    operator_url: str, connect_agent: AgentFactory, chromium: BrowserRunner
) -> None:
    async with connect_agent(PLANE_A), connect_agent(PLANE_A), connect_agent(PLANE_B):
        ran = await chromium(SCRIPT_BUDGET, "--dump-dom", f"{operator_url}/ui")
    assert ran.returncode == 0, ran.stderr[-2000:]
    rows = _dom_rows(ran.stdout)
    assert list(rows) == ["ns-a/plane-a", "ns-b/plane-b", "ns-c/plane-c"], ran.stdout
    assert rows["ns-a/plane-a"][1:4] == ["agent", "2", "all 1"]
    assert rows["ns-a/plane-a"][6] == "0"  # open streams
    assert rows["ns-a/plane-a"][8] == "-"
    assert rows["ns-b/plane-b"][1:4] == ["agent", "1", "all 1"]
    assert rows["ns-c/plane-c"][2:4] == ["0", "-"]
    assert rows["ns-c/plane-c"][8] == "no agent connected"
    assert "3 planes, 2 connected, 1 without an agent" in ran.stdout
    assert "updated " in ran.stdout


async def test_page_shows_which_replicas_each_agent_holds(
    gateway: Gateway, operator_url: str, connect_agent: AgentFactory, chromium: BrowserRunner
) -> None:
    async with connect_agent(PLANE_A):
        (local,) = gateway.agents.agents(PLANE_A)
        peer = Replica(
            id="zz-peer",
            planes={PLANE_A: frozenset({local.agent_id}), PLANE_B: frozenset({"<b>far</b>"})},
        )
        gateway.peers.replace_peers([peer])
        ran = await chromium(SCRIPT_BUDGET, "--dump-dom", f"{operator_url}/ui")
    assert ran.returncode == 0, ran.stderr[-2000:]
    rows = _dom_rows(ran.stdout)
    assert rows["ns-a/plane-a"][2:4] == ["1", "all 2"]
    assert rows["ns-b/plane-b"][2:4] == ["1", "&lt;b&gt;far&lt;/b&gt;: zz-peer"]
    assert f"replica {gateway.replica_id} of 2 live" in ran.stdout


HOSTILE = "<img src=x id=injected>"


@pytest.mark.parametrize("extra_planes", [[{"plane": "ns-d/plane-d", "clientCA": HOSTILE}]])
async def test_page_shows_text_from_the_json_as_text(
    operator_url: str, chromium: BrowserRunner
) -> None:
    ran = await chromium(SCRIPT_BUDGET, "--dump-dom", operator_url)
    assert ran.returncode == 0, ran.stderr[-2000:]
    error = _dom_rows(ran.stdout)["ns-d/plane-d"][8]
    assert error.startswith("client CA unusable: ")
    assert error.endswith("&lt;img src=x id=injected&gt;'; no agent connected")
    assert 'id="injected"' not in ran.stdout  # no element was made from it


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB or RGBA PNG (stdlib only)."""
    assert data.startswith(PNG_SIGNATURE), "not a PNG"
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    assert depth == 8, depth
    assert color_type in (2, 6), color_type
    channels = 3 if color_type == 2 else 4
    idat, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        if data[offset + 4 : offset + 8] == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, previous = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                nearest = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + nearest) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows


async def test_page_screenshot_is_not_blank(
    operator_url: str, connect_agent: AgentFactory, chromium: BrowserRunner, tmp_path: Path
) -> None:
    screenshot = tmp_path / "health-page.png"
    async with connect_agent(PLANE_A), connect_agent(PLANE_B):
        ran = await chromium(
            SCRIPT_BUDGET, f"--screenshot={screenshot}", "--window-size=1200,600", operator_url
        )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert screenshot.exists(), ran.stderr[-2000:]
    data = screenshot.read_bytes()
    assert struct.unpack(">II", data[16:24]) == (1200, 600)
    width, height, rows = _png_pixels(data)
    pixel = len(rows[0]) // width
    colours = {row[x : x + pixel] for row in rows for x in range(0, len(row), pixel)}
    assert len(colours) > 20, "the screenshot is (nearly) one colour: the page did not render"
    # the table's text is there: many rows of the upper part differ from the background
    background = rows[-1][:pixel]
    busy = sum(1 for row in rows[: height // 3] if row != background * width)
    assert busy > 40, busy
