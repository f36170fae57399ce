"""The metrics reference in docs/metrics.md, generated from the roles' real registries.

`test_metrics_reference.py` fails when the doc and the code disagree; to rewrite the tables:
`.venv/bin/python -m tests.metrics.reference`. Every metric is made to show its labels: each
labelled metric gets a child, each scrape-time collector something to report.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import certs
from agent.metrics import AgentMetrics
from gateway.metrics import AgentSample, ConnectionCounts, DirectUpstreamSample, GatewayMetrics
from gateway.peers.merge import merge_metrics
from gateway.reconciler.metrics import ReconcilerMetrics
from tunnel.loop_metrics import register_task_gauge
from tunnel.plain_metrics import PlainMetric
from tunnel.role_metrics import CertificateExpiry

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROLES = ("gateway", "agent")
_SUFFIX = {"counter": "_total", "info": "_info"}


def _begin(role: str) -> str:
    return f"<!-- generated: {role} metrics (tests/metrics/reference.py) -->"


def _end(role: str) -> str:
    return f"<!-- end of generated: {role} metrics -->"


def _with_children(registry: CollectorRegistry) -> None:
    """A child for every labelled metric, so that its labels show in the exposition."""
    # Private attributes: prometheus_client lists neither a registry's collectors nor labels.
    for collector in list(registry._collector_to_names):
        if isinstance(collector, MetricWrapperBase):
            names = collector._labelnames
            if names:
                collector.labels(*(["x"] * len(names)))
        elif isinstance(collector, PlainMetric) and collector.labelnames:
            collector.labels(*(["x"] * len(collector.labelnames)))


async def role_pages() -> dict[str, str]:
    """Each role's full /metrics exposition (the gateway's with its reconciler's metrics and
    what a merged, multi-worker page adds), every family with samples."""
    gateway = GatewayMetrics()
    ReconcilerMetrics(gateway.registry)
    register_task_gauge(gateway.registry, "planelink_gateway_asyncio_tasks")
    gateway.watch_connections("agent", lambda: ConnectionCounts(1, 0))
    gateway.watch_agents(lambda: [AgentSample("ns/plane", "agent-1", 0.01, 1, 0.5)])
    gateway.watch_direct_upstreams(lambda: [DirectUpstreamSample("ns/direct", 1, 2, 1, 0)])
    gateway.watch_certificates(lambda: [CertificateExpiry("serving", "", 1.0)])
    _with_children(gateway.registry)
    merged_only = merge_metrics({}, missing=["worker"]).decode()

    agent = AgentMetrics()
    register_task_gauge(agent.registry, "planelink_agent_asyncio_tasks")
    ca = certs.create_ca("reference")
    agent.credentials_loaded(
        plane="ns/plane", client=ca.certificate, gateway_ca=Path("/nonexistent")
    )
    _with_children(agent.registry)
    return {
        "gateway": generate_latest(gateway.registry).decode() + merged_only,
        "agent": generate_latest(agent.registry).decode(),
    }


def table(page: str) -> str:
    """A Markdown table of the page's families: name, type, labels, meaning; sorted by name."""
    rows = []
    for family in text_string_to_metric_families(page):
        labels = sorted(
            {name for sample in family.samples for name in sample.labels} - {"le", "quantile"}
        )
        meaning = " ".join(family.documentation.split()).replace("|", "\\|")
        name = family.name + _SUFFIX.get(family.type, "")
        shown = ", ".join(f"`{label}`" for label in labels)
        rows.append(f"| `{name}` | {family.type} | {shown} | {meaning} |")
    head = ["| Name | Type | Labels | Meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(head + sorted(rows))


def generated(role: str, doc: str) -> str:
    """What docs/metrics.md holds between the role's markers ("" without them)."""
    found = re.search(re.escape(_begin(role)) + r"\n(.*?)\n" + re.escape(_end(role)), doc, re.S)
    return found.group(1) if found else ""


def rewrite(doc: str, tables: dict[str, str]) -> str:
    for role, text in tables.items():
        old = f"{_begin(role)}\n{generated(role, doc)}\n{_end(role)}"
        assert old in doc, f"docs/metrics.md lacks the markers of the {role} table"
        doc = doc.replace(old, f"{_begin(role)}\n{text}\n{_end(role)}")
    return doc


def main() -> None:
    pages = asyncio.run(role_pages())
    DOC.write_text(rewrite(DOC.read_text(), {role: table(pages[role]) for role in ROLES}))


if __name__ == "__main__":
    main()
