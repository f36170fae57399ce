"""The alert rules (promtool: valid, and each alert fires when it should and only then), the
Grafana dashboard's structure, and the chart objects that ship them: rendered when enabled
(the PrometheusRule only where its CRD is), never by default."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "deploy" / "charts" / "planelink-gateway"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULES_TEST = Path(__file__).with_name("rules-test.yaml")
OPERATOR_CRD = ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
BOTH_ENABLED = [
    "--set",
    "metrics.grafanaDashboard.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
]


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, check=False
    )


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_promtool_accepts_the_rules(promtool: Path) -> None:
    checked = run(promtool, "check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts(yaml.safe_load(RULES.read_text())['groups']))} rules found" in (
        checked.stdout
    )


def test_every_alert_fires_in_a_promtool_unit_test(promtool: Path) -> None:
    tested = run(promtool, "test", "rules", RULES_TEST)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in cases
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in cases
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    every = set(alerts(yaml.safe_load(RULES.read_text())["groups"]))
    assert fired == every, "each alert has a case where it fires"
    assert quiet == every, "and one where it stays quiet"


def test_every_alert_says_what_happened_and_what_to_do() -> None:
    for name, rule in alerts(yaml.safe_load(RULES.read_text())["groups"]).items():
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert dashboard["uid"] == "planelink-gateway"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] >= 0, panel["title"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        covered = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source
            assert target["expr"].strip()
    for name in ("job", "plane"):
        assert variables[name]["datasource"] == source
    titles = {panel["title"] for panel in panels}
    for wanted in ("Heartbeat age", "Certificate expiry", "Resident memory", "asyncio tasks"):
        assert wanted in titles


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    rendered = run(helm, "template", "pl", CHART, "-n", "planelink", *values)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def monitoring(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = ("ConfigMap", "PrometheusRule")
    return {doc["kind"]: doc for doc in docs if doc["kind"] in kinds}


def test_the_chart_ships_no_monitoring_objects_by_default(helm: Path) -> None:
    assert monitoring(render(helm)) == {}
    assert monitoring(render(helm, *OPERATOR_CRD)) == {}


def test_the_rule_is_rendered_only_where_the_operator_crd_is(helm: Path) -> None:
    assert set(monitoring(render(helm, *BOTH_ENABLED))) == {"ConfigMap"}
    assert set(monitoring(render(helm, *BOTH_ENABLED, *OPERATOR_CRD))) == {
        "ConfigMap",
        "PrometheusRule",
    }


def test_the_chart_ships_the_files_with_their_labels(helm: Path) -> None:
    found = monitoring(
        render(
            helm,
            *BOTH_ENABLED,
            *OPERATOR_CRD,
            "--set",
            "metrics.prometheusRule.labels.release=kube-prometheus-stack",
            "--set",
            "metrics.grafanaDashboard.annotations.grafana_folder=planelink",
            "--set",
            "commonLabels.team=ops",
        )
    )
    for made in found.values():
        assert made["metadata"]["labels"]["team"] == "ops"
        assert made["metadata"]["labels"]["app.kubernetes.io/instance"] == "pl"
    dashboard = found["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "planelink"}
    assert json.loads(dashboard["data"]["planelink-gateway.json"]) == json.loads(
        DASHBOARD.read_text()
    )
    rule = found["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "planelink"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


@pytest.mark.parametrize("days", [7, 45])
def test_the_certificate_alerts_warn_the_days_asked_for(
    helm: Path, promtool: Path, tmp_path: Path, days: int
) -> None:
    rule = monitoring(
        render(
            helm,
            *BOTH_ENABLED,
            *OPERATOR_CRD,
            "--set",
            f"metrics.prometheusRule.certificateExpiryDays={days}",
        )
    )["PrometheusRule"]
    rendered = alerts(rule["spec"]["groups"])
    expiring = [name for name in rendered if name.endswith("CertificateExpiring")]
    assert len(expiring) == 2
    for name in expiring:
        assert rendered[name]["expr"].endswith(f"< {days} * 86400"), rendered[name]["expr"]
    unchanged = alerts(yaml.safe_load(RULES.read_text())["groups"])
    for name in set(rendered) - set(expiring):
        assert rendered[name] == unchanged[name]
    spec = tmp_path / "rendered-rules.yaml"
    spec.write_text(yaml.safe_dump(rule["spec"]))
    checked = run(promtool, "check", "rules", spec)
    assert checked.returncode == 0, checked.stdout + checked.stderr
