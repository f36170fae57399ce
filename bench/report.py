"""Results as rows (through, direct, ratio, target, status), printed as a table and as JSON."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One figure: through the tunnel and (when it applies) directly against the upstream.

    `target` is checked against `through` (or `ratio` when `target_on == "ratio"`) by `op`."""

    metric: str
    unit: str
    through: float
    direct: float | None = None
    target: float | None = None
    op: str = ">="
    target_on: str = "through"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.direct is None or not self.direct or math.isnan(self.direct):
            return None
        return self.through / self.direct

    @property
    def status(self) -> str:
        if self.target is None:
            return ""
        value = self.ratio if self.target_on == "ratio" else self.through
        if value is None or math.isnan(value):
            return "MISSED"
        met = value >= self.target if self.op == ">=" else value <= self.target
        return "ok" if met else "MISSED"

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "through": _clean(self.through),
            "direct": _clean(self.direct),
            "ratio": _clean(self.ratio),
            "target": None
            if self.target is None
            else {"on": self.target_on, "op": self.op, "value": self.target},
            "status": self.status or None,
            "note": self.note or None,
        }


@dataclass
class WorkloadResult:
    name: str
    description: str
    rows: list[Row] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.name,
            "description": self.description,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "rows": [row.as_dict() for row in self.rows],
            "info": self.info,
        }


def _clean(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, 4)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def table(results: list[WorkloadResult], info: dict[str, Any]) -> str:
    lines = [
        f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']}"
        + (f", mode {info['mode']}" if "mode" in info else "")
    ]
    header = ("workload", "metric", "unit", "through", "direct", "ratio", "target", "status")
    body: list[tuple[str, ...]] = []
    for result in results:
        if result.error:
            body.append((result.name, "ERROR", "", result.error[:60], "", "", "", "FAILED"))
        for row in result.rows:
            target = "" if row.target is None else f"{row.op} {_fmt(row.target)}"
            if row.target is not None and row.target_on == "ratio":
                target += " (ratio)"
            ratio = row.ratio
            body.append(
                (
                    result.name,
                    row.metric,
                    row.unit,
                    _fmt(row.through),
                    _fmt(row.direct),
                    "-" if ratio is None else f"{ratio:.2f}",
                    target,
                    row.status,
                )
            )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    numeric = {3, 4, 5}

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    lines.append(render(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(render(cells) for cells in body)
    return "\n".join(lines)
