"""docs/metrics.md's tables are the registries' metrics: a metric added, renamed or described
anew without the doc (or the other way round) fails here."""

from __future__ import annotations

from tests.metrics.reference import DOC, ROLES, generated, role_pages, table


async def test_the_metrics_reference_matches_the_registries() -> None:
    pages = await role_pages()
    doc = DOC.read_text()
    for role in ROLES:
        assert generated(role, doc) == table(pages[role]), (
            f"docs/metrics.md's {role} table is out of date: run"
            " `.venv/bin/python -m tests.metrics.reference` and review the change"
        )


async def test_the_reference_lists_what_each_role_adds() -> None:
    pages = await role_pages()
    gateway, agent = table(pages["gateway"]), table(pages["agent"])
    for name in (
        "planelink_gateway_agent_heartbeat_age_seconds",
        "planelink_gateway_certificate_expiration_timestamp_seconds",
        "planelink_gateway_worker_up",
        "planelink_reconciler_reconciles_total",
        "process_cpu_seconds_total",
    ):
        assert f"| `{name}` |" in gateway
    assert (
        "| `planelink_agent_certificate_expiration_timestamp_seconds` | gauge | `kind`, `plane` |"
        in agent
    )
    assert "planelink_gateway_" not in agent
