"""The console page, served on the operator port at ``/`` and ``/ui``, and its view at
``/console/view``.

The page is rendered on the server (`gateway.console.view`), complete: an operator without
JavaScript sees every plane, condition, agent, chart and refusal. With JavaScript, its script
fetches the same view as JSON (`gateway.console.markup.to_json`) every `REFRESH_MS` and
rebuilds the console from it with `createElement` and text nodes only, checking every tag and
attribute against the lists the server builds from. It must never load anything from
elsewhere (no CDN, no fonts, no images): a Content-Security-Policy that allows only this
page's own inline script and style (by hash) and requests to this origin holds it to that.
"""

from __future__ import annotations

import base64
import hashlib
import json

from gateway.console.markup import ATTRIBUTES, HTML_TAGS, SVG_TAGS, Element, to_html, to_json
from http1.service import JSON, Answer

REFRESH_MS = 5000
PAGE_PATHS = ("/", "/ui")
VIEW_PATH = "/console/view"

STYLE = """
:root { color-scheme: light dark; --fg: #1d2330; --muted: #687083; --bg: #f4f6f8;
  --card: #fff; --line: #e1e5eb; --ok: #1a7f37; --bad: #cf222e; --warn: #bf8700;
  --unknown: #8c959f; --chart: #0969da; --chart-fill: rgba(9, 105, 218, .14); }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #9aa3b5; --bg: #14171d;
  --card: #1c2029; --line: #2c3240; --ok: #3fb950; --bad: #f85149; --warn: #d29922;
  --unknown: #6e7681; --chart: #58a6ff; --chart-fill: rgba(88, 166, 255, .18); } }
* { box-sizing: border-box; }
body { margin: 0; padding: 20px 28px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.top { display: flex; align-items: baseline; gap: 16px; margin-bottom: 6px; }
h1 { font-size: 20px; margin: 0; }
#live { color: var(--muted); margin-left: auto; font-size: 12px; }
#live.error { color: var(--bad); font-weight: 600; }
.summary { display: flex; gap: 16px; align-items: baseline; margin-bottom: 14px; }
.summary .replicas { color: var(--muted); }
.summary .replicas.bad { color: var(--bad); }
.plane { background: var(--card); border: 1px solid var(--line); border-left: 4px solid
  var(--unknown); border-radius: 8px; padding: 10px 16px 12px; margin-bottom: 12px; }
.plane.ready { border-left-color: var(--ok); }
.plane.down { border-left-color: var(--bad); }
.plane-head { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
h2 { font-size: 16px; margin: 0; }
.mode { font-size: 12px; color: var(--muted); border: 1px solid var(--line); border-radius: 4px;
  padding: 0 6px; }
.chips { display: flex; gap: 6px; flex-wrap: wrap; margin-left: 8px; }
.chip { font-size: 12px; border-radius: 999px; padding: 1px 9px; border: 1px solid var(--line);
  color: var(--muted); }
.chip strong { color: var(--fg); font-weight: 600; }
.chip.ok { border-color: var(--ok); } .chip.ok strong { color: var(--ok); }
.chip.bad { border-color: var(--bad); } .chip.bad strong { color: var(--bad); }
.chip.unknown strong { color: var(--warn); }
.problems { color: var(--bad); margin: 6px 0 0; padding-left: 22px; }
.plane-body { display: grid; grid-template-columns: minmax(0, 1fr) auto; gap: 20px;
  align-items: start; margin-top: 8px; }
.plane-body > table, .plane-body > p { overflow-x: auto; }
.charts { display: flex; gap: 14px; }
.chart-label { display: flex; justify-content: space-between; gap: 8px; font-size: 12px;
  color: var(--muted); }
.chart-label strong { color: var(--fg); font-weight: 600; font-variant-numeric: tabular-nums; }
svg.spark { display: block; overflow: visible; }
svg.spark .axis { stroke: var(--line); stroke-width: 1; }
svg.spark .area { fill: var(--chart-fill); stroke: none; }
svg.spark .line { fill: none; stroke: var(--chart); stroke-width: 1.6;
  stroke-linejoin: round; }
svg.spark .last { fill: var(--chart); }
svg.dot { vertical-align: -1px; flex: none; }
svg.dot circle { fill: var(--unknown); }
svg.dot.ready circle { fill: var(--ok); }
svg.dot.down circle { fill: var(--bad); }
svg.dot.draining circle { fill: var(--warn); }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 3px 12px 3px 0; white-space: nowrap; }
th { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
  font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.warn { color: var(--warn); font-weight: 600; }
td.id { font-weight: 600; }
.agents.empty, .empty { color: var(--muted); margin: 0; }
.refusals { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 16px 12px; margin-top: 18px; }
.refusals h2 { margin-bottom: 6px; }
.refusals td.reason { color: var(--bad); font-weight: 600; }
.refusals td.detail { white-space: normal; color: var(--muted); }
.footnote { color: var(--muted); font-size: 12px; }
"""

SCRIPT = """
"use strict";
const REFRESH_MS = __REFRESH_MS__;
const SVG_NS = "http://www.w3.org/2000/svg";
const HTML_TAGS = new Set(__HTML_TAGS__);
const SVG_TAGS = new Set(__SVG_TAGS__);
const ATTRIBUTES = new Set(__ATTRIBUTES__);

/* [tag, {attributes}, ...children] from the server; text only ever becomes a text node */
function build(node, inSvg) {
  if (typeof node === "string") return document.createTextNode(node);
  if (!Array.isArray(node) || typeof node[0] !== "string") return document.createTextNode("");
  const [tag, attributes, ...children] = node;
  const svg = inSvg || tag === "svg";
  if (!(svg ? SVG_TAGS : HTML_TAGS).has(tag)) return document.createTextNode("");
  const element = svg ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (ATTRIBUTES.has(name)) element.setAttribute(name, String(value));
  }
  for (const child of children) element.appendChild(build(child, svg));
  return element;
}

function showLive(text, isError) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = isError ? "error" : "";
}

async function refresh() {
  try {
    const answer = await fetch("__VIEW__", {cache: "no-store"});
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    document.getElementById("console").replaceChildren(build(await answer.json(), false));
    showLive("live \\u00b7 updated " + new Date().toLocaleTimeString(), false);
  } catch (error) {
    showLive("not updating: " + error.message, true);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

showLive("live", false);
setTimeout(refresh, REFRESH_MS);
"""

SCRIPT = (
    SCRIPT.replace("__REFRESH_MS__", str(REFRESH_MS))
    .replace("__VIEW__", VIEW_PATH.lstrip("/"))  # relative: the page may sit behind a proxy path
    .replace("__HTML_TAGS__", json.dumps(sorted(HTML_TAGS)))
    .replace("__SVG_TAGS__", json.dumps(sorted(SVG_TAGS)))
    .replace("__ATTRIBUTES__", json.dumps(sorted(ATTRIBUTES)))
)


def page_html(view: Element) -> str:
    """The whole page with `view` rendered in it."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>planelink gateway</title>
<style>{STYLE}</style>
</head>
<body>
<div class="top"><h1>planelink gateway</h1><span id="live">static: reload to update</span></div>
<main id="console">{to_html(view)}</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_csp_hash(SCRIPT)}",
        f"style-src {_csp_hash(STYLE)}",
        "connect-src 'self'",
        "img-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

_HEADERS = (
    (b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode()),
    (b"Cache-Control", b"no-store"),
    (b"X-Content-Type-Options", b"nosniff"),
)


def page_answer(view: Element) -> Answer:
    """The page (at `PAGE_PATHS`) with `view` rendered in it."""
    return Answer(200, b"text/html; charset=utf-8", page_html(view).encode(), _HEADERS)


def view_answer(view: Element) -> Answer:
    """`view` as the page's script fetches it from `VIEW_PATH`."""
    return Answer(200, JSON, json.dumps(to_json(view)).encode(), _HEADERS)
