"""The Helm charts: lint, render, and the API server accepts what they render (dry run)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import crd
from agent import AgentSettings
from envtest import KubeAPIServer

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "deploy" / "charts"
AGENT_VALUES = ["--set", "plane=my-org/prod", "--set", "gateway.url=wss://gateway.example:8443"]


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)


def _render(helm: Path, chart: str, namespace: str, *values: str) -> list[dict[str, Any]]:
    rendered = _helm(helm, "template", "pl", str(CHARTS / chart), "-n", namespace, *values)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


@pytest.mark.parametrize(
    ("chart", "values"),
    [("planelink-agent", AGENT_VALUES), ("planelink-gateway", [])],
)
def test_lint(helm: Path, chart: str, values: list[str]) -> None:
    linted = _helm(helm, "lint", "--strict", str(CHARTS / chart), *values)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_agent_chart_says_what_is_missing(helm: Path) -> None:
    rendered = _helm(helm, "template", "pl", str(CHARTS / "planelink-agent"))
    assert rendered.returncode != 0
    assert "set plane: the DataPlane this agent serves" in rendered.stderr


def test_the_chart_ships_the_generated_crd() -> None:
    shipped = CHARTS / "planelink-gateway" / "crds" / "dataplanes.openchoreo.dev.yaml"
    assert shipped.read_text() == crd.render_yaml()


def _kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def test_agent_defaults_are_least_privilege(helm: Path) -> None:
    docs = _render(helm, "planelink-agent", "agents", *AGENT_VALUES)
    role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["PLANELINK_PLANE"] == "my-org/prod"
    widened = _render(
        helm, "planelink-agent", "agents", *AGENT_VALUES, "--set", "rbac.clusterAdmin=true"
    )
    admin = next(doc for doc in widened if doc["kind"] == "ClusterRole")
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in admin["rules"]


def test_gateway_rbac_is_what_the_reconciler_uses(helm: Path) -> None:
    docs = _render(helm, "planelink-gateway", "planelink")
    role = next(doc for doc in docs if doc["kind"] == "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("openchoreo.dev", "dataplanes", "get"),
        ("openchoreo.dev", "dataplanes", "list"),
        ("openchoreo.dev", "dataplanes", "watch"),
        ("openchoreo.dev", "dataplanes/status", "patch"),
        ("", "secrets", "get"),
        ("", "secrets", "list"),
        ("", "secrets", "watch"),
        ("", "events", "create"),
        ("", "events", "patch"),
    }
    # One replica: no PodDisruptionBudget that would block every drain, no Lease role.
    assert "PodDisruptionBudget" not in _kinds(docs)
    assert "Role" not in _kinds(docs)
    replicated = _render(
        helm,
        "planelink-gateway",
        "planelink",
        "--set",
        "replicaCount=2",
        "--set",
        "callers.auth=token",
    )
    assert {"PodDisruptionBudget", "Role", "RoleBinding"} <= set(_kinds(replicated))


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        ("planelink-agent", AGENT_VALUES),
        ("planelink-gateway", ["--set", "replicaCount=2", "--set", "callers.auth=both"]),
    ],
)
def test_the_api_server_accepts_what_the_charts_render(
    helm: Path, control_plane: KubeAPIServer, namespace: str, chart: str, values: list[str]
) -> None:
    docs = _render(helm, chart, namespace, *values)
    applied = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(docs)


def test_every_agent_setting_the_chart_renders_is_one_the_agent_reads(helm: Path) -> None:
    known = {field.metadata["env"] for field in dataclasses.fields(AgentSettings)}
    docs = _render(helm, "planelink-agent", "agents", *AGENT_VALUES, "--set", "maxStreams=4096")
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    env = {
        item["name"]: item.get("value")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert set(env) <= known, set(env) - known
    assert env["PLANELINK_MAX_STREAMS"] == "4096"
