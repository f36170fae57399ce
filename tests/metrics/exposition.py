"""What a /metrics page exposes and what a PromQL expression reads, by metric name."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

_SERIES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}
_OURS = re.compile(r"\b(?:planelink|process|python)_[a-z0-9_]*[a-z0-9]\b")


def exposed_names(page: str) -> set[str]:
    """Every series name the page's families have or can have (a histogram's `_bucket`, `_sum`
    and `_count` even before a first observation)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(page):
        names.update(family.name + suffix for suffix in _SERIES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def names_read(expression: str) -> set[str]:
    """The planelink, process and Python metric names a PromQL expression reads."""
    return set(_OURS.findall(expression))
