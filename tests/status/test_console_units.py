"""The console's pure parts: the history's rings and rates, the refusals' ring, the conditions'
bounds, the markup's escaping and the view's words, and how workers' documents are joined."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from html.parser import HTMLParser

import pytest

from certs import plane_ref
from gateway.console.conditions import MESSAGE_LIMIT, PlaneConditions
from gateway.console.history import (
    History,
    HistorySampler,
    Point,
    Totals,
    counter_by_plane,
    merged,
    points_of,
    series_document,
)
from gateway.console.markup import h, to_html, to_json
from gateway.console.page import page_html
from gateway.console.refusals import RecentRefusal, RecentRefusals
from gateway.console.state import ConsoleState, whole_gateway
from gateway.console.view import chart, console, plural
from gateway.interfaces import PlaneCondition
from gateway.metrics import GatewayMetrics
from gateway.reconciler.conditions import held
from tests.kit.waits import eventually

NOW = 1_800_000_000.0
HOSTILE = '<img src=x onerror="alert(1)">&amp;'


def test_rates_are_the_growth_of_counters_over_the_time_between_samples() -> None:
    history = History()
    history.record(100.0, {"a/p": Totals(requests=10, body_bytes=1000, rtt=None)})
    assert history.series("a/p") == []  # a rate needs two samples
    history.record(110.0, {"a/p": Totals(requests=35, body_bytes=6000, rtt=0.004)})
    history.record(130.0, {"a/p": Totals(requests=45, body_bytes=6000, rtt=None)})
    assert history.series("a/p") == [
        Point(110.0, requests=2.5, body_bytes=500.0, rtt=0.004),
        Point(130.0, requests=0.5, body_bytes=0.0, rtt=None),
    ]


def test_a_counter_that_went_down_counts_again_from_zero() -> None:
    history = History()
    history.record(0.0, {"a/p": Totals(1000, 1000, None)})
    history.record(10.0, {"a/p": Totals(30, 50, None)})  # whatever counted it started over
    (point,) = history.series("a/p")
    assert (point.requests, point.body_bytes) == (3.0, 5.0)


def test_rings_are_bounded_and_gone_planes_take_theirs_with_them() -> None:
    history = History(points=5, max_planes=2)
    for step in range(12):
        history.record(
            10.0 * step,
            {name: Totals(step, step, None) for name in ("a/one", "b/two", "c/three")},
        )
    assert [p.at for p in history.series("a/one")] == [70.0, 80.0, 90.0, 100.0, 110.0]
    assert history.series("c/three") == []  # a third plane is over the bound
    assert history.planes_left_out == 1
    history.record(120.0, {"b/two": Totals(12, 12, None), "c/three": Totals(12, 12, None)})
    assert history.series("a/one") == []
    assert set(history.document()["planes"]) == {"b/two"}  # c/three: its first sample now
    history.record(130.0, {"b/two": Totals(13, 13, None), "c/three": Totals(13, 13, None)})
    assert [p.at for p in history.series("c/three")] == [130.0]


def test_counters_are_read_per_plane_through_the_metrics_attributes() -> None:
    metrics = GatewayMetrics()
    metrics.requests.labels(plane="a/p", code="2xx").inc(3)
    metrics.requests.labels(plane="a/p", code="5xx").inc(1)
    metrics.requests.labels(plane="b/q", code="2xx").inc(7)
    metrics.bytes.labels(plane="a/p", direction="to_agent").inc(100)
    metrics.bytes.labels(plane="a/p", direction="to_caller").inc(50)
    assert counter_by_plane(metrics.requests) == {"a/p": 4.0, "b/q": 7.0}
    assert counter_by_plane(metrics.bytes) == {"a/p": 150.0}


def test_the_sampler_samples_at_whole_intervals_of_the_clock() -> None:
    now = [1009.9999]
    reads = iter([{"a/p": Totals(0, 0, None)}, {"a/p": Totals(20, 0, None)}])
    sampler = HistorySampler(History(), lambda: next(reads), interval=10, clock=lambda: now[0])
    sampler.sample()  # woken a hair early: it is still the sample of 1010
    now[0] = 1020.0001
    sampler.sample()
    assert sampler.history.series("a/p") == [Point(1020.0, 2.0, 0.0, None)]


async def test_the_sampler_keeps_sampling_after_a_read_that_failed() -> None:
    calls = [0]

    def read() -> dict[str, Totals]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a bug in reading")
        return {"a/p": Totals(calls[0], 0, None)}

    sampler = HistorySampler(History(), read, interval=0.02)
    running = asyncio.create_task(sampler.run())
    try:
        await eventually(
            lambda: len(sampler.history.series("a/p")) >= 2,
            within=10,
            message="no samples after a failed read",
        )
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert calls[0] >= 3  # the failed read, then the two that made the points


def test_workers_histories_add_up_per_instant() -> None:
    one = [Point(10.0, 1.0, 100.0, 0.002), Point(20.0, 2.0, 200.0, None)]
    two = [Point(20.0, 3.0, 50.0, 0.005), Point(30.0, 1.0, 10.0, 0.001)]
    assert merged([one, two]) == [
        Point(10.0, 1.0, 100.0, 0.002),
        Point(20.0, 5.0, 250.0, 0.005),
        Point(30.0, 1.0, 10.0, 0.001),
    ]
    assert points_of(series_document(one)) == one
    junk = {"at": [1, "x", 3], "requestsPerSecond": [1, 2, None], "bytesPerSecond": [1, 2, 3]}
    assert points_of({**junk, "rttSeconds": [True, 1, 2]}) == [Point(1, 1, 1, None)]
    assert points_of({"at": "nope"}) == []


def test_the_whole_gateways_history_and_refusals_ignore_what_is_not_a_document() -> None:
    own = ConsoleState()
    own.history.record(0.0, {"a/p": Totals(0, 0, None)})
    own.history.record(10.0, {"a/p": Totals(10, 10, None)})
    own.refusals.note(RecentRefusal("caller", "Old", "", at=5.0))
    sibling = {
        "history": {"planes": {"a/p": series_document([Point(10.0, 2.0, 3.0, None)]), "b": 7}},
        "refusals": [{"at": 9.0, "reason": "New"}, "junk"],
    }
    whole = whole_gateway(own, {"w1": json.dumps(sibling).encode(), "w2": b"{not json"})
    assert whole.history == {"a/p": [Point(10.0, 3.0, 4.0, None)]}
    assert [r["reason"] for r in whole.refusals] == ["New", "Old"]
    assert whole.document()["history"]["planes"] == {
        "a/p": series_document([Point(10.0, 3.0, 4.0, None)])
    }
    alone = whole_gateway(own, {})
    assert alone.history == {"a/p": [Point(10.0, 1.0, 1.0, None)]}


def test_refusals_keep_the_newest_few_with_their_texts_cut() -> None:
    refusals = RecentRefusals(limit=3)
    for number in range(5):
        refusals.note(RecentRefusal("caller", f"R{number}", "x" * 1000, at=float(number)))
    assert [r.reason for r in refusals.recent()] == ["R4", "R3", "R2"]
    assert refusals.total == 5
    assert all(len(r.detail) == 300 and r.detail.endswith("\u2026") for r in refusals.recent())


def test_conditions_are_bounded_and_forgotten_with_their_plane() -> None:
    plane = plane_ref("ns", "p")
    board = PlaneConditions()
    assert board.of(plane) is None
    board.set_conditions(plane, [PlaneCondition("Ready", "False", "R", "m" * 5000)] * 20)
    kept = board.of(plane)
    assert kept is not None
    assert len(kept) == 8
    assert len(kept[0].message) == MESSAGE_LIMIT
    board.remove_conditions(plane)
    assert board.of(plane) is None


def test_the_reconciler_hands_over_the_owned_conditions_in_order() -> None:
    status = {
        "conditions": [
            {"type": "Other", "status": "True", "reason": "X", "message": "kept out"},
            {"type": "Connected", "status": "False", "reason": "NoAgentConnected",
             "message": "no agent is connected", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "False", "reason": "NoAgentConnected",
             "message": "no agent is connected"},
        ]
    }  # fmt: skip
    assert held(status) == [
        PlaneCondition("Ready", "False", "NoAgentConnected", "no agent is connected"),
        PlaneCondition(
            "Connected",
            "False",
            "NoAgentConnected",
            "no agent is connected",
            "2026-01-01T00:00:00Z",
        ),
    ]
    assert held(None) == []


def test_markup_escapes_text_and_attributes_and_builds_only_what_it_knows() -> None:
    element = h("span", {"title": HOSTILE, "class": "x"}, HOSTILE, None, [h("strong", {}, 3)])
    html = to_html(element)
    assert html == (
        '<span title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;" class="x">'
        '&lt;img src=x onerror="alert(1)"&gt;&amp;amp;<strong>3</strong></span>'
    )
    assert to_json(element) == [
        "span",
        {"title": HOSTILE, "class": "x"},
        HOSTILE,
        ["strong", {}, "3"],
    ]
    with pytest.raises(ValueError, match="script"):
        h("script")
    with pytest.raises(ValueError, match="onclick"):
        h("span", {"onclick": "alert(1)"})


def _plane(name: str, **fields: object) -> dict[str, object]:
    return {"namespace": "ns", "name": name, "mode": "agent", "connectedAgents": 0,
            "agents": [], "issues": [], **fields}  # fmt: skip


def test_the_view_shows_hostile_names_and_messages_as_text() -> None:
    document = {
        "planes": [
            _plane(
                HOSTILE,
                issues=[HOSTILE],
                conditions=[{"type": "Ready", "status": "False", "reason": HOSTILE,
                             "message": HOSTILE}],
                agents=[{"agentId": HOSTILE, "remoteAddress": HOSTILE,
                         "identity": {"agent-version": HOSTILE}}],
            )
        ],
        "refusals": [{"at": NOW - 5, "side": "agent", "reason": HOSTILE, "detail": HOSTILE,
                      "plane": HOSTILE, "who": HOSTILE, "address": HOSTILE}],
    }  # fmt: skip
    parsed = _Parsed(page_html(console(document, now=NOW)))
    assert "img" not in parsed.tags
    assert not [name for name in parsed.attributes if name.startswith("on")]
    assert parsed.text.count(HOSTILE) >= 8  # name, issue, reason, message, agent, refusal...
    assert HOSTILE in parsed.attributes["title"]  # the Ready chip's message, as a tooltip
    assert "5s ago" in parsed.text


class _Parsed(HTMLParser):
    """What a browser would make of an HTML text: its elements, attributes and text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: dict[str, str] = {}
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes[name] = self.attributes.get(name, "") + (value or "")

    def handle_data(self, data: str) -> None:
        self.text += data


def test_the_view_counts_in_words() -> None:
    ready = [{"type": "Ready", "status": "True", "reason": "Ready", "message": "1 agent"}]
    one = console({"planes": [_plane("a", connectedAgents=1, conditions=ready)]}, now=NOW)
    assert "1 plane \u00b7 1 ready \u00b7 1 agent connected" in to_html(one)
    two = console(
        {"planes": [_plane("a", connectedAgents=2, conditions=ready), _plane("b")]}, now=NOW
    )
    assert "2 planes \u00b7 1 ready \u00b7 1 not ready \u00b7 2 agents connected" in to_html(two)
    assert "0 planes" in to_html(console({}, now=NOW))
    assert [plural(n, "agent") for n in (0, 1, 2)] == ["0 agents", "1 agent", "2 agents"]


def test_a_plane_is_ready_by_its_dataplane_or_else_by_its_agents() -> None:
    def state(plane: dict[str, object]) -> str:
        found = re.search(r'data-state="(\w+)"', to_html(console({"planes": [plane]}, now=NOW)))
        assert found is not None
        return found.group(1)

    assert state(_plane("a", connectedAgents=1)) == "ready"  # a planes file's, with an agent
    assert state(_plane("a", connectedAgents=1, issues=["CA unreadable"])) == "down"
    assert state(_plane("a")) == "down"
    assert state(_plane("a", conditions=[])) == "unknown"  # status not written yet
    unknown = [{"type": "Ready", "status": "Unknown", "reason": "Probing", "message": ""}]
    assert state(_plane("a", connectedAgents=1, conditions=unknown)) == "unknown"


def test_a_chart_draws_an_hour_in_a_point_per_two_pixels_and_keeps_a_spike() -> None:
    points = [Point(NOW - 3600 + 10 * (i + 1), 1.0, 0.0, None) for i in range(360)]
    points[100] = Point(points[100].at, 50.0, 0.0, None)
    svg = to_html(chart("requests/s", [p.requests for p in points], points, str, now=NOW))
    (line,) = re.findall(r'<polyline class="line" points="([^"]*)"', svg)
    xy = [tuple(map(float, pair.split(","))) for pair in line.split()]
    assert 70 <= len(xy) <= 76  # 150 pixels wide
    assert min(y for _, y in xy) == 5.0  # the spike, at the top
    assert xy[-1] == (150.0, round(39.0 - 34.0 / 50.0, 1))  # the latest, at the right edge


def test_a_condition_not_true_says_what_and_for_how_long() -> None:
    since = "2027-01-15T08:00:00Z"  # NOW is 2027-01-15T08:00:00Z plus 754 s
    conditions = [
        {"type": "Ready", "status": "False", "reason": "NoAgentConnected",
         "message": "no agent is connected", "lastTransitionTime": since},
        {"type": "Connected", "status": "False", "reason": "NoAgentConnected",
         "message": "no agent is connected", "lastTransitionTime": since},
        {"type": "GatewayProvisioned", "status": "Unknown", "reason": "Probing",
         "message": "not probed yet"},
    ]  # fmt: skip
    html = to_html(console({"planes": [_plane("a", conditions=conditions)]}, now=NOW + 754))
    assert re.findall(r"<li>(.*?)</li>", html) == [
        "Ready: no agent is connected (for 12m34s)",
        "GatewayProvisioned: not probed yet",
    ]


def test_agents_list_the_replicas_they_hold_only_when_there_are_several() -> None:
    agent = {"agentId": "a1", "replica": "w0"}
    plane = _plane("a", connectedAgents=1, agents=[agent, {**agent, "replica": "w1"}])
    alone = to_html(console({"planes": [plane]}, now=NOW))
    assert "<th>replicas</th>" not in alone
    assert alone.count('data-agent="a1"') == 1
    workers = {"planes": [plane], "workers": {"answered": ["w0"], "missing": ["w1"]}}
    whole = to_html(console(workers, now=NOW))
    assert "<th>replicas</th>" in whole
    assert "<td>w0, w1</td></tr>" in whole
    assert "1 worker answered; not answering: w1" in whole
