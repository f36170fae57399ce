"""A read-only health page for operators, served on the operator port at ``/`` and ``/ui``.

One self-contained HTML document: inline CSS and a little vanilla JavaScript that fetches
``/planes`` every 2 s and renders the same table as ``planelink status`` (with several gateway
replicas, the replicas each plane's agents hold a tunnel to, and which replica answered). It
must never load anything from elsewhere (no CDN, no fonts, no images) and never put JSON text
into the page as markup: every value goes in with ``textContent``. A Content-Security-Policy
that allows only this page's own inline script and style, and requests to this origin, holds
it to that.
"""

from __future__ import annotations

import base64
import hashlib

from aiohttp import web

REFRESH_MS = 2000

_STYLE = """
:root { color-scheme: light dark; --fg: #1d2330; --muted: #687083; --bg: #f6f7f9;
  --card: #fff; --line: #e3e6ec; --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #9aa3b5; --bg: #14171d;
  --card: #1c2029; --line: #2c3240; --ok: #4ac26b; --bad: #ff6b6b; --warn: #d4a72c; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; align-items: baseline; gap: 16px; margin-bottom: 16px; }
h1 { font-size: 20px; margin: 0; }
#summary { font-weight: 600; }
#status { color: var(--muted); margin-left: auto; }
#status.error { color: var(--bad); font-weight: 600; }
table { width: 100%; border-collapse: collapse; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: 8px 12px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.plane { font-weight: 600; }
td.error { white-space: normal; color: var(--bad); }
tr.down td.plane::before { content: "\\25CF  "; color: var(--bad); }
tr.up td.plane::before { content: "\\25CF  "; color: var(--ok); }
td.warn { color: var(--warn); font-weight: 600; }
td.empty { color: var(--muted); text-align: center; padding: 24px; }
"""

_SCRIPT = """
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const NO_AGENT = "no agent connected";
const COLUMNS = [["plane", ""], ["mode", ""], ["agents", "num"], ["replicas", ""],
  ["since", "num"], ["rtt", "num"], ["streams", "num"], ["cert expiry", "num"],
  ["last error", ""]];

function duration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return d + "d" + h + "h";
  if (h) return h + "h" + m + "m";
  if (m) return m + "m" + s + "s";
  return s + "s";
}

function times(agents, pick) {
  return agents.map(pick).filter((v) => typeof v === "string")
    .map((v) => Date.parse(v)).filter((v) => !Number.isNaN(v));
}

/* "all N" once every agent holds a tunnel to each live replica, else "agent: r1,r2; ..." */
function replicasCell(plane, live) {
  if (!Array.isArray(plane.agentReplicas)) return "-";
  const held = plane.agentReplicas.filter((e) => e && typeof e === "object").map((e) =>
    [String(e.agentId), (Array.isArray(e.replicas) ? e.replicas : []).map(String)]);
  if (!held.length) return "-";
  if (live.length && held.every(([, ids]) => live.every((r) => ids.includes(r)))) {
    return "all " + live.length;
  }
  return held.map(([agent, ids]) => agent + ": " + ids.join(",")).join("; ");
}

function row(plane, now, live) {
  const agents = Array.isArray(plane.agents) ? plane.agents : [];
  const since = times(agents, (a) => a.connectedAt);
  const expiry = times(agents, (a) => (a.certificate || {}).notAfter);
  const rtts = agents.map((a) => a.rttSeconds).filter((v) => typeof v === "number");
  const issues = (Array.isArray(plane.issues) ? plane.issues : []).map(String);
  const connected = Number(plane.connectedAgents) || 0;
  if (!connected) issues.push(NO_AGENT);
  let expiryText = "-";
  let expirySoon = false;
  if (expiry.length) {
    const seconds = (Math.min(...expiry) - now) / 1000;
    expiryText = seconds <= 0 ? "expired" : Math.floor(seconds / 86400) + "d";
    expirySoon = seconds < 14 * 86400;
  }
  return {
    up: connected > 0,
    cells: [
      [String(plane.namespace) + "/" + String(plane.name), "plane"],
      [String(plane.mode || "?"), ""],
      [String(connected), "num"],
      [replicasCell(plane, live), ""],
      [since.length ? duration((now - Math.min(...since)) / 1000) : "-", "num"],
      [rtts.length ? (Math.max(...rtts) * 1000).toFixed(1) + "ms" : "-", "num"],
      [agents.length ? String(agents.reduce((n, a) => n + (Number(a.openStreams) || 0), 0))
        : "-", "num"],
      [expiryText, expirySoon ? "num warn" : "num"],
      [issues.length ? issues.join("; ") : "-", issues.length ? "error" : ""],
    ],
  };
}

function cell(tag, text, className) {
  const element = document.createElement(tag);
  element.textContent = text;  /* never innerHTML: the JSON is data, not markup */
  if (className) element.className = className;
  return element;
}

function render(report) {
  const planes = (Array.isArray(report.planes) ? report.planes : []).slice().sort((a, b) =>
    (a.namespace + "/" + a.name).localeCompare(b.namespace + "/" + b.name));
  const now = Date.now();
  const live = (Array.isArray(report.replicas) ? report.replicas : []).map(String);
  const body = document.getElementById("planes");
  const rows = planes.map((plane) => {
    const data = row(plane, now, live);
    const tr = document.createElement("tr");
    tr.className = data.up ? "up" : "down";
    for (const [text, className] of data.cells) tr.appendChild(cell("td", text, className));
    return tr;
  });
  if (!rows.length) {
    const td = cell("td", "the gateway has no planes", "empty");
    td.colSpan = COLUMNS.length;
    const tr = document.createElement("tr");
    tr.appendChild(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
  const down = planes.filter((p) => !(Number(p.connectedAgents) > 0)).length;
  document.getElementById("summary").textContent = planes.length + " planes, " +
    (planes.length - down) + " connected, " + down + " without an agent" +
    (live.length > 1 ? "; replica " + String(report.replica) + " of " + live.length +
      " live (" + live.join(", ") + ")" : "");
}

function showStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

async function refresh() {
  try {
    const answer = await fetch("planes", {cache: "no-store"});
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    render(await answer.json());
    showStatus("updated " + new Date().toLocaleTimeString(), false);
  } catch (error) {
    showStatus("cannot read /planes: " + error.message, true);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

const head = document.getElementById("head");
for (const [name, className] of COLUMNS) head.appendChild(cell("th", name, className));
refresh();
"""

_SCRIPT = _SCRIPT.replace("__REFRESH_MS__", str(REFRESH_MS))

HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>planelink gateway - planes</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>planelink planes</h1><span id="summary">loading&hellip;</span>
<span id="status"></span></header>
<table><thead><tr id="head"></tr></thead><tbody id="planes"></tbody></table>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_csp_hash(_SCRIPT)}",
        f"style-src {_csp_hash(_STYLE)}",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


async def health_page(request: web.Request) -> web.Response:
    """The page itself; the data comes from ``/planes`` on the same port."""
    return web.Response(
        text=HTML,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
