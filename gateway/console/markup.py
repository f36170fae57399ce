"""A tiny element tree for the console: rendered to HTML on the server, and sent as JSON for the
page's script to rebuild the same elements with `createElement` and text nodes.

Only the tags and attributes below can be built, on either side: the script checks both lists
again before it makes an element, so whatever reaches it can only be text in known elements.
No attribute can hold a URL or a script (no `href`, `src`, `style` or `on*`), and every text and
attribute value is escaped in HTML. One description of the page, two renderings of it: the page
without JavaScript is the same page.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import Any, Union

HTML_TAGS = frozenset(
    {
        "div", "section", "header", "h2", "h3", "p", "span", "strong", "small", "code",
        "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "time",
    }
)  # fmt: skip
SVG_TAGS = frozenset({"svg", "polyline", "polygon", "circle", "line", "title", "text"})
TAGS = HTML_TAGS | SVG_TAGS
ATTRIBUTES = frozenset(
    {
        "class", "title", "colspan", "datetime", "data-plane", "data-agent", "data-state",
        "role", "aria-label", "viewBox", "width", "height", "points", "cx", "cy", "r", "x",
        "y", "x1", "y1", "x2", "y2", "preserveAspectRatio",
    }
)  # fmt: skip

Child = Union["Element", str]


@dataclass(frozen=True)
class Element:
    tag: str
    attributes: Mapping[str, str]
    children: tuple[Child, ...]


def h(tag: str, attributes: Mapping[str, object] | None = None, *children: object) -> Element:
    """An element; children may be elements, strings, None (left out) or lists of them."""
    if tag not in TAGS:
        raise ValueError(f"the console cannot build <{tag}>")
    attrs = {name: str(value) for name, value in (attributes or {}).items() if value is not None}
    if unknown := set(attrs) - ATTRIBUTES:
        raise ValueError(f"the console cannot set {sorted(unknown)} on <{tag}>")
    return Element(tag, attrs, tuple(_flat(children)))


def _flat(children: Iterable[object]) -> Iterable[Child]:
    for child in children:
        if child is None:
            continue
        if isinstance(child, Element | str):
            yield child
        elif isinstance(child, list | tuple):
            yield from _flat(child)
        else:
            yield str(child)


def to_html(node: Child) -> str:
    if isinstance(node, str):
        return escape(node, quote=False)
    attrs = "".join(
        f' {name}="{escape(value, quote=True)}"' for name, value in node.attributes.items()
    )
    inner = "".join(to_html(child) for child in node.children)
    return f"<{node.tag}{attrs}>{inner}</{node.tag}>"


def to_json(node: Child) -> Any:
    """`[tag, {attributes}, ...children]`, text as JSON strings."""
    if isinstance(node, str):
        return node
    return [node.tag, dict(node.attributes), *(to_json(child) for child in node.children)]
