"""The console on the operator port, served by a real gateway and looked at by a real headless
Chromium: without JavaScript, live with it, and in screenshots whose pixels are checked."""

from __future__ import annotations

import math
import os
import re
import struct
import time
import zlib
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import InvalidStatus

import certs
from gateway.app import Gateway
from gateway.console.history import History, HistorySampler, Totals
from gateway.console.page import SCRIPT, STYLE
from gateway.interfaces import PlaneCondition, Replica
from tests.kit.gateway_lab import AgentFactory, Pki, agent_session, default_handler
from tests.kit.waits import eventually, wait_for
from tests.status.cdp import Page

PLANE_A = certs.plane_ref("ns-a", "plane-a")
PLANE_B = certs.plane_ref("ns-b", "plane-b")
PLANE_C = certs.plane_ref("ns-c", "plane-c")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHOTS = os.environ.get("PLANELINK_CONSOLE_SHOTS")
"""A folder to leave copies of the screenshots in (for people to look at), if set."""
GREEN, RED, GREY = (0x1A, 0x7F, 0x37), (0xCF, 0x22, 0x2E), (0x8C, 0x95, 0x9F)
CHART_BLUE = (0x09, 0x69, 0xDA)
"""The console's colours in light mode (headless Chromium's)."""
LIVE = 30.0  # seconds for the page's script to notice a change (it refreshes every 5 s)

NOT_READY = [
    PlaneCondition("Ready", "False", "NoAgentConnected", "no agent is connected"),
    PlaneCondition("Connected", "False", "NoAgentConnected", "no agent is connected"),
    PlaneCondition("GatewayProvisioned", "True", "Provisioned", "the gateway holds it"),
]


def card(plane: certs.PlaneRef) -> str:
    return f'[data-plane="{plane}"]'


async def test_page_is_self_contained_and_locked_down(operator_url: str) -> None:
    async with aiohttp.ClientSession(operator_url) as http:
        for path in ("/", "/ui"):
            async with http.get(path) as answer:
                assert answer.status == 200
                assert answer.content_type == "text/html"
                policy = answer.headers["Content-Security-Policy"]
                html = await answer.text()
            assert f"<script>{SCRIPT}</script>" in html
            assert f"<style>{STYLE}</style>" in html
            assert 'data-plane="ns-a/plane-a"' in html  # rendered on the server
            assert not re.search(r"(src|href)\s*=", html)  # nothing loaded from anywhere
            assert "innerHTML" not in html
        async with http.get("/console/view") as answer:
            assert answer.status == 200
            view = await answer.json()
            assert answer.headers["Content-Security-Policy"] == policy
    assert view[0] == "div"
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy  # only this page's own script and style, by hash


async def test_without_javascript_the_page_shows_planes_conditions_and_agents(
    gateway: Gateway, operator_url: str, connect_agent: AgentFactory, page: Page
) -> None:
    gateway.console.conditions.set_conditions(PLANE_B, NOT_READY)
    async with connect_agent(PLANE_A), connect_agent(PLANE_A):
        await page.open(operator_url, scripts=False)
        (one, two) = gateway.agents.agents(PLANE_A)
    assert await page.text("#live") == "static: reload to update"  # its script did not run
    summary = await page.text(".summary")
    assert "3 planes \u00b7 1 ready \u00b7 2 not ready \u00b7 2 agents connected" in summary
    assert await page.evaluate(
        "[...document.querySelectorAll('[data-plane]')].map(e => e.dataset.plane + '=' + "
        "e.dataset.state)"
    ) == ["ns-a/plane-a=ready", "ns-b/plane-b=down", "ns-c/plane-c=down"]
    rows = await page.evaluate(
        f"[...document.querySelectorAll('{card(PLANE_A)} tr[data-agent]')]"
        ".map(r => [...r.cells].map(c => c.innerText))"
    )
    assert sorted(row[1] for row in rows) == sorted([one.agent_id, two.agent_id])
    for row in rows:
        assert row[2].startswith("127.0.0.1:")  # address
        assert re.fullmatch(r"\d+s", row[3]), row  # connected since
        assert row[5] == "0"  # open streams
        assert re.fullmatch(r"in \d+(d|h)", row[7]), row  # certificate expiry
    chips = await page.evaluate(
        f"[...document.querySelectorAll('{card(PLANE_B)} .chip')].map(c => c.innerText)"
    )
    assert chips == [
        "Ready NoAgentConnected",
        "Connected NoAgentConnected",
        "GatewayProvisioned Provisioned",
    ]
    assert await page.text(f"{card(PLANE_B)} .problems") == "Ready: no agent is connected"
    plane_c = await page.text(card(PLANE_C))
    assert "planes file" in plane_c  # no DataPlane, no conditions
    assert "no agent connected" in plane_c
    assert await page.evaluate("document.querySelectorAll('svg.spark').length") == 9


async def test_with_javascript_the_page_follows_agents_as_they_come_and_go(
    operator_url: str, connect_agent: AgentFactory, page: Page, tmp_path: Path
) -> None:
    await page.open(operator_url)
    assert await _state(page, PLANE_C) == "down"
    async with connect_agent(PLANE_C):
        await page.until(
            f"document.querySelector('{card(PLANE_C)} tr[data-agent]') && "
            f"document.querySelector('{card(PLANE_C)}').dataset.state === 'ready'",
            within=LIVE,
        )
        assert (await page.text("#live")).startswith("live \u00b7 updated ")
        assert await _dot_colour(page, PLANE_C, "console-live.png", tmp_path) == "green"
    await page.until(
        f"!document.querySelector('{card(PLANE_C)} tr[data-agent]') && "
        f"document.querySelector('{card(PLANE_C)}').dataset.state === 'down'",
        within=LIVE,
    )
    assert await _dot_colour(page, PLANE_C, "console-live-gone.png", tmp_path) == "red"


async def _state(page: Page, plane: certs.PlaneRef) -> str:
    return str(await page.evaluate(f"document.querySelector('{card(plane)}').dataset.state"))


async def _dot_colour(page: Page, plane: certs.PlaneRef, name: str, tmp_path: Path) -> str:
    """The colour of the plane's state dot in a screenshot of the page as it is now."""
    dot = await page.rect(f"{card(plane)} .plane-head svg.dot")
    shot = await page.screenshot()
    _keep(shot, name, tmp_path)
    _, _, pixels = _png_pixels(shot)
    colour = pixels(*_centre(dot))
    for word, wanted in (("green", GREEN), ("red", RED), ("grey", GREY)):
        if _near(colour, wanted):
            return word
    return f"rgb{colour}"


HOSTILE = "<img src=x id=injected>"


@pytest.mark.parametrize("extra_planes", [[{"plane": "ns-d/plane-d", "clientCA": HOSTILE}]])
async def test_text_from_elsewhere_stays_text_when_the_script_redraws_it(
    operator_url: str, page: Page
) -> None:
    await page.open(operator_url)
    await page.until("document.getElementById('live').innerText.includes('updated')", within=LIVE)
    problems = await page.text('[data-plane="ns-d/plane-d"] .problems')
    assert problems.startswith("client CA unusable: ")
    assert HOSTILE in problems
    assert await page.evaluate("document.getElementById('injected')") is None


async def test_screenshot_shows_state_colours_and_charts(
    gateway: Gateway,
    connect_agent: AgentFactory,
    caller: aiohttp.ClientSession,
    page: Page,
    tmp_path: Path,
) -> None:
    _an_hour_of_traffic(gateway, PLANE_A)
    async with caller.get("/planes/ns-x/nowhere/k8s/api") as answer:
        assert answer.status == 404  # a refusal to show
    gateway.console.conditions.set_conditions(PLANE_C, NOT_READY)
    await page.call(
        "Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "light"}]
    )
    async with connect_agent(PLANE_A), connect_agent(PLANE_B):
        url = f"http://127.0.0.1:{gateway.operator_port}"
        await page.open(url, scripts=False, size=(1280, 860))
        shot = await page.screenshot()
        ready_dot = await page.rect(f"{card(PLANE_A)} .plane-head svg.dot")
        down_dot = await page.rect(f"{card(PLANE_C)} .plane-head svg.dot")
        busy_chart = await page.rect(f"{card(PLANE_A)} svg.spark")
        idle_chart = await page.rect(f"{card(PLANE_C)} .chart:nth-child(3) svg.spark")  # RTT
    _keep(shot, "console.png", tmp_path)
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1280, 860)
    assert _near(pixels(*_centre(ready_dot)), GREEN), "Ready dot not green"
    assert _near(pixels(*_centre(down_dot)), RED), "down dot not red"
    assert _count(pixels, busy_chart, CHART_BLUE) > 100, "no chart line drawn"
    assert _count(pixels, idle_chart, CHART_BLUE) == 0, "a line where there is no data"


async def test_refused_callers_and_agents_are_listed(
    gateway: Gateway, operator_url: str, pki: Pki, caller: aiohttp.ClientSession
) -> None:
    async with caller.get("/planes/ns-x/nowhere/k8s/api") as answer:
        assert answer.status == 404
    rejected = gateway.agent_listener.wait_for_rejection()
    with pytest.raises(InvalidStatus):  # its certificate names plane A, its URL plane B
        await agent_session(
            gateway.agent_listener.port,
            PLANE_A,
            pki.agent_ssl(pki.agent_cert(PLANE_A)),
            default_handler,
            agent_id="impostor",
            claim=str(PLANE_B),
        )
    await wait_for(rejected)
    async with aiohttp.ClientSession(operator_url) as http:
        async with http.get("/console") as answer:
            refusals = (await answer.json())["refusals"]
        async with http.get("/") as answer:
            html = await answer.text()
    agent, caller_refusal = refusals
    assert (agent["side"], agent["reason"], agent["plane"]) == (
        "agent",
        "Untrusted",
        "ns-b/plane-b",
    )
    assert agent["address"].startswith("127.0.0.1:")
    assert (caller_refusal["side"], caller_refusal["plane"]) == ("caller", "ns-x/nowhere")
    assert caller_refusal["reason"] == "NotFound"
    section = html[html.index('class="refusals"') :]
    assert "Untrusted" in section
    assert "ns-x/nowhere" in section


async def test_history_samples_the_gateways_counters(
    gateway: Gateway, operator_url: str, connect_agent: AgentFactory, caller: aiohttp.ClientSession
) -> None:
    now = [1_000_000.0]
    gateway.console.history = History()  # its own sampler's first sample is of the real clock
    sampler = HistorySampler(gateway.console.history, gateway.traffic, clock=lambda: now[0])
    async with connect_agent(PLANE_A):
        sampler.sample()
        for _ in range(5):
            async with caller.post("/planes/ns-a/plane-a/k8s/echo", data=b"x" * 1000) as answer:
                assert await answer.read() == b"x" * 1000
        # The gateway may count a request's bytes after its caller has read the last one.
        await eventually(
            lambda: gateway.traffic()["ns-a/plane-a"].body_bytes == 10_000,
            within=5.0,
            message="the gateway counted the five requests' bytes",
        )
        now[0] += 10
        sampler.sample()
    async with aiohttp.ClientSession(operator_url) as http, http.get("/history") as answer:
        history = await answer.json()
    series = history["planes"]["ns-a/plane-a"]
    assert series["at"] == [1_000_010.0]
    assert series["requestsPerSecond"] == [0.5]
    assert series["bytesPerSecond"] == [1000.0]  # 1000 bytes each way, 5 times, in 10 s
    assert history["planes"]["ns-c/plane-c"]["requestsPerSecond"] == [0.0]


async def test_page_shows_which_replicas_each_agent_holds(
    gateway: Gateway, operator_url: str, connect_agent: AgentFactory
) -> None:
    async with connect_agent(PLANE_A):
        (local,) = gateway.agents.agents(PLANE_A)
        peer = Replica(
            id="zz-peer",
            planes={PLANE_A: frozenset({local.agent_id}), PLANE_B: frozenset({"<b>far</b>"})},
        )
        gateway.peers.replace_peers([peer])
        async with aiohttp.ClientSession(operator_url) as http, http.get("/") as answer:
            html = await answer.text()
    rows = dict(re.findall(r'<tr data-agent="([^"]*)">(.*?)</tr>', html))
    both = ", ".join(sorted([gateway.replica_id, "zz-peer"]))
    assert rows[local.agent_id].endswith(f"<td>{both}</td>")
    assert rows["&lt;b&gt;far&lt;/b&gt;"].endswith("<td>zz-peer</td>")
    assert "<b>far</b>" not in html
    assert f"answered by replica {gateway.replica_id}, 2 live replicas" in html


def _an_hour_of_traffic(gateway: Gateway, plane: certs.PlaneRef) -> None:
    """Forty minutes of samples for `plane`, ending now, as the sampler would have taken them."""
    history = gateway.console.history = History()  # of its own sampler's clock, not this one's
    start = time.time() - 2400
    requests = body = 0.0
    for step in range(241):
        burst = 6.0 if 150 <= step < 170 else 0.0  # a rollout, say
        requests += 10 * (4 + 3 * math.sin(step / 15) + burst)
        body += 10 * 2500 * (4 + 2 * math.sin(step / 9) + burst)
        totals = {str(p.plane): Totals(0, 0, None) for p in gateway.trust.planes()}
        totals[str(plane)] = Totals(requests, body, 0.002 + 0.0005 * math.sin(step / 20))
        history.record(start + 10 * step, totals)


def _keep(shot: bytes, name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(shot)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        (Path(SHOTS) / name).write_bytes(shot)


def _centre(rect: tuple[int, int, int, int]) -> tuple[int, int]:
    x, y, width, height = rect
    return x + width // 2, y + height // 2


def _near(colour: tuple[int, int, int], wanted: tuple[int, int, int], slack: int = 24) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(colour, wanted, strict=True))


def _count(pixels: Pixels, rect: tuple[int, int, int, int], wanted: tuple[int, int, int]) -> int:
    x0, y0, width, height = rect
    return sum(
        1
        for y in range(y0, y0 + height)
        for x in range(x0, x0 + width)
        if _near(pixels(x, y), wanted, slack=40)
    )


class Pixels:
    """An RGB(A) PNG's pixels, as (r, g, b) by x and y."""

    def __init__(self, width: int, rows: list[bytes], channels: int) -> None:
        self._width, self._rows, self._channels = width, rows, channels

    def __call__(self, x: int, y: int) -> tuple[int, int, int]:
        at = x * self._channels
        r, g, b = self._rows[y][at : at + 3]
        return r, g, b


def _png_pixels(data: bytes) -> tuple[int, int, Pixels]:
    """Width, height and pixels of an 8-bit RGB or RGBA PNG (stdlib only)."""
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
    return width, height, Pixels(width, rows, channels)
