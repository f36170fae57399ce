"""The console page as an element tree, from the console's document: pure, no I/O, no clock
(the time to show ages against is given).

The document is what the operator port serves at /console.json (see `gateway.console.page`):
/planes (with every worker of the gateway, and each plane's DataPlane conditions), the planes'
history and the recent refusals. Everything in it is data from elsewhere — names, reasons and
messages that agents, callers and DataPlane writers chose — and goes into the tree as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.console.history import INTERVAL, Point, finite
from gateway.console.markup import Element, h
from kubeobject.duration import format_duration
from tunnel.contract import IDENTITY_AGENT_VERSION, IDENTITY_KUBERNETES_VERSION

CONDITION_TYPES = ("Ready", "Connected", "GatewayProvisioned")
HOUR = 3600.0
EXPIRY_WARNING_DAYS = 14
CHART_WIDTH, CHART_HEIGHT = 150, 40
PIXELS_PER_POINT = 2


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def console(
    document: Mapping[str, Any],
    *,
    history: Mapping[str, Sequence[Point]] | None = None,
    now: float,
) -> Element:
    """The whole console: summary, a card per plane (with its `history`), recent refusals."""
    planes = sorted(_dicts(document.get("planes")), key=_plane_name)
    history = history or {}
    states = [plane_state(plane) for plane in planes]
    agents = sum(_count(plane.get("connectedAgents")) for plane in planes)
    ready = states.count("ready")
    summary = [
        plural(len(planes), "plane"),
        f"{ready} ready",
        *([f"{len(planes) - ready} not ready"] if len(planes) > ready else []),
        plural(agents, "agent") + " connected",
    ]
    several = len(_strings(document.get("replicas"))) > 1 or "workers" in document
    cards = [
        plane_card(
            plane,
            state,
            history.get(_plane_name(plane), ()),
            now=now,
            with_replicas=several,
        )
        for plane, state in zip(planes, states, strict=True)
    ]
    return h(
        "div",
        {"class": "console"},
        h(
            "header",
            {"class": "summary"},
            h("strong", {"class": "counts"}, " \u00b7 ".join(summary)),
            _replicas_line(document),
        ),
        h("section", {"class": "planes"}, cards or h("p", {"class": "empty"}, "no planes yet")),
        refusals_section(_dicts(document.get("refusals")), now=now),
        h(
            "p",
            {"class": "footnote"},
            f"Charts: the last hour, a point every {INTERVAL:.0f} s (summed over workers).",
        ),
    )


def plane_state(plane: Mapping[str, Any]) -> str:
    """`ready`, `down` or `unknown`: the DataPlane's Ready condition when there is one, else
    (a planes-file plane) whether an agent is connected and nothing is wrong."""
    for condition in _dicts(plane.get("conditions")):
        if condition.get("type") == "Ready":
            return {"True": "ready", "False": "down"}.get(str(condition.get("status")), "unknown")
    if plane.get("conditions") is not None:
        return "unknown"  # a DataPlane whose status is not written yet
    ok = _count(plane.get("connectedAgents")) > 0 and not plane.get("issues")
    return "ready" if ok else "down"


def plane_card(
    plane: Mapping[str, Any],
    state: str,
    points: Sequence[Point],
    *,
    now: float,
    with_replicas: bool = False,
) -> Element:
    """One plane: its state, conditions and problems, its agents (with the replicas each holds
    a tunnel to, if there are several replicas) and its charts."""
    name = _plane_name(plane)
    return h(
        "div",
        {"class": f"plane {state}", "data-plane": name, "data-state": state},
        h(
            "div",
            {"class": "plane-head"},
            _dot(state, f"{name}: {state}"),
            h("h2", {}, name),
            h("span", {"class": "mode"}, str(plane.get("mode") or "?")),
            _conditions(plane),
        ),
        _problems(plane, now=now),
        h(
            "div",
            {"class": "plane-body"},
            _agents_table(plane, now=now, with_replicas=with_replicas),
            h(
                "div",
                {"class": "charts"},
                chart("requests/s", [p.requests for p in points], points, _rate, now=now),
                chart("bytes/s", [p.body_bytes for p in points], points, _bytes_rate, now=now),
                chart("RTT", [p.rtt for p in points], points, _milliseconds, now=now),
            ),
        ),
    )


def _conditions(plane: Mapping[str, Any]) -> Element:
    conditions = {str(c.get("type")): c for c in _dicts(plane.get("conditions"))}
    if plane.get("conditions") is None:
        return h("span", {"class": "chips"}, h("span", {"class": "chip muted"}, "planes file"))
    chips = []
    for kind in CONDITION_TYPES:
        condition = conditions.get(kind, {})
        status = str(condition.get("status", "Unknown"))
        css = {"True": "ok", "False": "bad"}.get(status, "unknown")
        reason = str(condition.get("reason") or "not reported")
        chips.append(
            h(
                "span",
                {"class": f"chip {css}", "title": str(condition.get("message", ""))},
                h("strong", {}, kind),
                " " + reason,
            )
        )
    return h("span", {"class": "chips"}, chips)


def _problems(plane: Mapping[str, Any], *, now: float) -> Element | None:
    """What is wrong, in words: the messages of conditions not True (and for how long), and the
    gateway's issues (no agent: the agents' place says so)."""
    lines: list[str] = []
    told: set[str] = set()
    for c in _dicts(plane.get("conditions")):
        message = str(c.get("message") or "")
        if c.get("status") != "True" and message and message not in told:
            told.add(message)  # Ready repeats the first failing condition's: say it once
            since = _epoch(c.get("lastTransitionTime"))
            lasting = "" if since is None else f" (for {format_duration(now - since)})"
            lines.append(f"{c.get('type')}: {message}{lasting}")
    lines += [str(issue) for issue in plane.get("issues") or () if isinstance(issue, str)]
    if not lines:
        return None
    return h("ul", {"class": "problems"}, [h("li", {}, line) for line in lines])


def _agents_table(plane: Mapping[str, Any], *, now: float, with_replicas: bool) -> Element:
    rows = _agent_rows(plane)
    if not rows:
        return h("p", {"class": "agents empty"}, "no agent connected")
    head = ["", "agent", "address", "since", "RTT", "streams", "version", "cert expires"]
    if with_replicas:
        head.append("replicas")
    body = []
    for row in rows:
        agent = row["agent"]
        identity = _mapping(agent.get("identity"))
        version = " \u00b7 ".join(
            str(identity[key])
            for key in (IDENTITY_AGENT_VERSION, IDENTITY_KUBERNETES_VERSION)
            if identity.get(key)
        )
        expiry, soon = _expiry(_mapping(agent.get("certificate")).get("notAfter"), now)
        state = "draining" if agent.get("draining") else "ready"
        cells = [
            h("td", {}, _dot(state, state)),
            h("td", {"class": "id"}, str(agent.get("agentId", "?"))),
            h("td", {}, str(agent.get("remoteAddress") or "-")),
            h("td", {"class": "num"}, _age(agent.get("connectedAt"), now)),
            h("td", {"class": "num"}, _milliseconds(finite(agent.get("rttSeconds")))),
            h("td", {"class": "num"}, str(_count(agent.get("openStreams")))),
            h("td", {}, version or "-"),
            h("td", {"class": "num warn" if soon else "num"}, expiry),
        ]
        if with_replicas:
            cells.append(h("td", {}, ", ".join(row["replicas"]) or "-"))
        body.append(h("tr", {"data-agent": str(agent.get("agentId", ""))}, cells))
    return h(
        "table",
        {"class": "agents"},
        h("thead", {}, h("tr", {}, [h("th", {}, text) for text in head])),
        h("tbody", {}, body),
    )


def _agent_rows(plane: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per agent: an agent holds a tunnel to each replica, so it may be listed by each
    worker; the replicas it holds are those listings' and those presence tells of."""
    rows: dict[str, dict[str, Any]] = {}
    for agent in _dicts(plane.get("agents")):
        key = str(agent.get("agentId", ""))
        row = rows.setdefault(key, {"agent": agent, "replicas": []})
        if isinstance(agent.get("replica"), str) and agent["replica"] not in row["replicas"]:
            row["replicas"].append(agent["replica"])
    for held in _dicts(plane.get("agentReplicas")):
        key = str(held.get("agentId", ""))
        # An agent only other replicas hold a tunnel to: its id and where, nothing else known.
        found = rows.setdefault(key, {"agent": {"agentId": key}, "replicas": []})
        replicas = held.get("replicas")
        if isinstance(replicas, list):
            found["replicas"] = sorted({*found["replicas"], *map(str, replicas)})
    return list(rows.values())


def chart(
    label: str,
    values: Sequence[float | None],
    points: Sequence[Point],
    unit: Any,
    *,
    now: float,
) -> Element:
    """A sparkline of the last hour: x is time (now at the right edge), y from 0 to the hour's
    peak; the latest value beside it in words."""
    pairs = [
        (point.at, value)
        for point, value in zip(points, values, strict=True)
        if value is not None and point.at > now - HOUR
    ]
    peak = max((value for _, value in pairs), default=0.0)
    latest = unit(pairs[-1][1]) if pairs else "-"
    shapes: list[Element] = [
        h("line", {"class": "axis", "x1": 0, "y1": CHART_HEIGHT - 1, "x2": CHART_WIDTH,
                   "y2": CHART_HEIGHT - 1}),
    ]  # fmt: skip
    if pairs:
        xy = [(x, _y(value, peak)) for x, value in _per_pixels(pairs, now)]
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        area = f"{xy[0][0]:.1f},{CHART_HEIGHT - 1} {line} {xy[-1][0]:.1f},{CHART_HEIGHT - 1}"
        shapes += [
            h("polygon", {"class": "area", "points": area}),
            h("polyline", {"class": "line", "points": line}),
            h("circle", {"class": "last", "cx": f"{xy[-1][0]:.1f}", "cy": f"{xy[-1][1]:.1f}",
                         "r": 2.5}),
        ]  # fmt: skip
    description = f"{label} over the last hour: now {latest}, peak {unit(peak) if pairs else '-'}"
    return h(
        "div",
        {"class": "chart"},
        h("div", {"class": "chart-label"}, h("span", {}, label), h("strong", {}, latest)),
        h(
            "svg",
            {
                "class": "spark",
                "viewBox": f"0 0 {CHART_WIDTH} {CHART_HEIGHT}",
                "width": CHART_WIDTH,
                "height": CHART_HEIGHT,
                "preserveAspectRatio": "none",
                "role": "img",
                "aria-label": description,
            },
            h("title", {}, description),
            shapes,
        ),
    )


def refusals_section(refusals: Sequence[Mapping[str, Any]], *, now: float) -> Element:
    title = h("h2", {}, "Recent refusals")
    if not refusals:
        return h("section", {"class": "refusals"}, title, h("p", {"class": "empty"}, "none"))
    rows = [
        h(
            "tr",
            {"class": str(refusal.get("side", ""))},
            h("td", {"class": "num"}, _when(refusal.get("at"), now)),
            h("td", {}, str(refusal.get("side", ""))),
            h("td", {}, str(refusal.get("plane") or "-")),
            h("td", {}, str(refusal.get("who") or "-")),
            h("td", {}, str(refusal.get("address") or "-")),
            h("td", {"class": "reason"}, str(refusal.get("reason", ""))),
            h("td", {"class": "detail"}, str(refusal.get("detail", ""))),
        )
        for refusal in refusals
    ]
    head = ["when", "refused", "plane", "identity", "address", "reason", "detail"]
    return h(
        "section",
        {"class": "refusals"},
        title,
        h(
            "table",
            {},
            h("thead", {}, h("tr", {}, [h("th", {}, text) for text in head])),
            h("tbody", {}, rows),
        ),
    )


def _replicas_line(document: Mapping[str, Any]) -> Element | None:
    parts = []
    replicas = _strings(document.get("replicas"))
    if len(replicas) > 1:
        parts.append(
            f"answered by replica {document.get('replica')}, "
            f"{plural(len(replicas), 'live replica')}: {', '.join(replicas)}"
        )
    workers = _mapping(document.get("workers"))
    answered = _strings(workers.get("answered"))
    missing = _strings(workers.get("missing"))
    if answered or missing:
        parts.append(plural(len(answered), "worker") + " answered")
        if missing:
            parts.append("not answering: " + ", ".join(missing))
    if not parts:
        return None
    return h("span", {"class": "replicas" + (" bad" if missing else "")}, "; ".join(parts))


def _dot(state: str, label: str) -> Element:
    return h(
        "svg",
        {"class": f"dot {state}", "viewBox": "0 0 12 12", "width": 12, "height": 12,
         "role": "img", "aria-label": label},
        h("circle", {"cx": 6, "cy": 6, "r": 5}),
    )  # fmt: skip


def _per_pixels(pairs: list[tuple[float, float]], now: float) -> list[tuple[float, float]]:
    """(x, value) of at most one point per `PIXELS_PER_POINT` of width — the highest, so a
    spike stays, and the latest, so the line ends at now — which keeps the page small: an hour
    is 360 points, a chart 150 pixels wide."""
    start, scale = now - HOUR, CHART_WIDTH / HOUR
    kept: dict[int, tuple[float, float]] = {}
    for at, value in pairs:
        x = min(CHART_WIDTH, max(0.0, (at - start) * scale))
        bucket = int(x // PIXELS_PER_POINT)
        if bucket not in kept or value > kept[bucket][1]:
            kept[bucket] = (x, value)
    if pairs:
        kept[int(x // PIXELS_PER_POINT)] = (x, pairs[-1][1])
    return [kept[bucket] for bucket in sorted(kept)]


def _y(value: float, peak: float) -> float:
    usable = CHART_HEIGHT - 6
    share = value / peak if peak > 0 else 0.0
    return CHART_HEIGHT - 1 - share * usable


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{_short(value)}/s"


def _bytes_rate(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}/s"
    return f"{value:.0f} B/s"


def _milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _short(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.1f}" if value < 10 and value != int(value) else f"{value:.0f}"


def _expiry(not_after: object, now: float) -> tuple[str, bool]:
    moment = _epoch(not_after)
    if moment is None:
        return "-", False
    days = (moment - now) / 86400
    if days <= 0:
        return "expired", True
    text = f"in {math.floor(days)}d" if days >= 1 else f"in {math.floor(days * 24)}h"
    return text, days < EXPIRY_WARNING_DAYS


def _age(since: object, now: float) -> str:
    moment = _epoch(since)
    return "-" if moment is None else format_duration(now - moment)


def _when(at: object, now: float) -> str:
    moment = finite(at)
    return "-" if moment is None else format_duration(now - moment) + " ago"


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _plane_name(plane: Mapping[str, Any]) -> str:
    return f"{plane.get('namespace')}/{plane.get('name')}"


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
