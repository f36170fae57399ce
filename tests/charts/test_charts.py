"""The Helm charts: lint, render, and the API server accepts what they render (dry run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

import crd
from envtest import KubeAPIServer
from planelink import agent_cli, gateway_cli
from planelink.settings import CommandSettings
from tests.charts.chart_kit import (
    AGENT_VALUES,
    CHARTS,
    SERVICE_MONITOR_API,
    apply_dry_run,
    container_env,
    full_values,
    kinds,
    pod_spec,
    render,
    run_helm,
)


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        ("planelink-agent", AGENT_VALUES),
        ("planelink-gateway", []),
        ("planelink-agent", full_values("planelink-agent")),
        ("planelink-gateway", full_values("planelink-gateway")),
    ],
    ids=["agent-required", "gateway-default", "agent-full", "gateway-full"],
)
def test_lint(helm: Path, chart: str, values: list[str]) -> None:
    linted = run_helm(helm, "lint", "--strict", str(CHARTS / chart), *values)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "[WARNING]" not in linted.stdout
    assert "[ERROR]" not in linted.stdout


def test_agent_chart_says_what_is_missing(helm: Path) -> None:
    rendered = run_helm(helm, "template", "pl", str(CHARTS / "planelink-agent"))
    assert rendered.returncode != 0
    assert "set plane: the DataPlane this agent serves" in rendered.stderr


def test_the_chart_ships_the_generated_crd() -> None:
    shipped = CHARTS / "planelink-gateway" / "crds" / "dataplanes.openchoreo.dev.yaml"
    assert shipped.read_text() == crd.render_yaml()


def test_agent_defaults_are_least_privilege(helm: Path) -> None:
    docs = render(helm, "planelink-agent", "agents", *AGENT_VALUES)
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
    widened = render(
        helm, "planelink-agent", "agents", *AGENT_VALUES, "--set", "rbac.clusterAdmin=true"
    )
    admin = next(doc for doc in widened if doc["kind"] == "ClusterRole")
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in admin["rules"]


def test_gateway_rbac_is_what_the_reconciler_uses(helm: Path) -> None:
    docs = render(helm, "planelink-gateway", "planelink")
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
    assert "PodDisruptionBudget" not in kinds(docs)
    assert "Role" not in kinds(docs)
    replicated = render(
        helm,
        "planelink-gateway",
        "planelink",
        "--set",
        "replicaCount=2",
        "--set",
        "callers.auth=token",
    )
    assert {"PodDisruptionBudget", "Role", "RoleBinding"} <= set(kinds(replicated))


@pytest.mark.parametrize(
    ("chart", "values"),
    [
        ("planelink-agent", AGENT_VALUES),
        ("planelink-gateway", []),
        ("planelink-agent", full_values("planelink-agent")),
        ("planelink-gateway", full_values("planelink-gateway")),
        ("planelink-gateway", ["--set", "replicaCount=2", "--set", "callers.auth=both"]),
        ("planelink-gateway", ["--set", "replicaCount=3", "--set", "workers=2"]),
        (
            "planelink-gateway",
            ["--set", "operator.tokenSecret.name=ops", "--set", "service.type=LoadBalancer"],
        ),
    ],
    ids=[
        "agent-required",
        "gateway-default",
        "agent-full",
        "gateway-full",
        "both",
        "workers",
        "lb",
    ],
)
def test_the_api_server_accepts_what_the_charts_render(
    helm: Path, control_plane: KubeAPIServer, namespace: str, chart: str, values: list[str]
) -> None:
    if chart == "planelink-gateway":  # the full values follow two namespaces of their own
        values = [*values, "--set", f"reconcile.namespaces={{{namespace}}}"]
    docs = render(helm, chart, namespace, *values)
    apply_dry_run(control_plane, namespace, docs)


def test_every_agent_setting_the_chart_renders_is_one_the_agent_reads(helm: Path) -> None:
    known = {agent_cli.SETTINGS.env(setting) for setting in agent_cli.SETTINGS}
    docs = render(helm, "planelink-agent", "agents", *AGENT_VALUES, "--set", "maxStreams=4096")
    env = container_env(docs)
    assert set(env) <= known, set(env) - known
    assert env["PLANELINK_MAX_STREAMS"] == "4096"
    assert env["PLANELINK_UPSTREAM_HTTP2"] == "true"
    docs = render(helm, "planelink-agent", "agents", *AGENT_VALUES, "--set", "upstreamHttp2=false")
    assert container_env(docs)["PLANELINK_UPSTREAM_HTTP2"] == "false"


def test_every_gateway_setting_the_chart_renders_is_one_the_gateway_reads(helm: Path) -> None:
    known = {gateway_cli.SETTINGS.env(setting) for setting in gateway_cli.SETTINGS}
    docs = render(
        helm, "planelink-gateway", "planelink", "--set", "replicaCount=2", "--set", "workers=2"
    )
    env = container_env(docs)
    assert set(env) - {"POD_NAME", "POD_IP"} <= known, set(env) - known
    given = {name: value for name, value in env.items() if value is not None}
    resolved = gateway_cli.SETTINGS.resolve(argparse.Namespace(), given)
    assert resolved.reconcile is True  # the chart's "true" is read as true


@pytest.mark.parametrize(
    ("chart", "settings"),
    [("planelink-agent", agent_cli.SETTINGS), ("planelink-gateway", gateway_cli.SETTINGS)],
)
def test_the_full_values_extra_env_names_real_settings(
    helm: Path, chart: str, settings: CommandSettings
) -> None:
    """The full values' extraEnv is the example of setting what the chart has no value for."""
    known = {settings.env(setting) for setting in settings}
    env = container_env(render(helm, chart, "planelink", *full_values(chart)))
    own = {name for name in env if name.startswith("PLANELINK_")}
    assert own <= known, own - known
    assert set(env) - own <= {"POD_NAME", "POD_IP", "HTTPS_PROXY"}


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_gateway_reads_secrets_only_in_the_namespaces_it_follows(helm: Path) -> None:
    docs = render(
        helm, "planelink-gateway", "planelink", "--set", "reconcile.namespaces={org-a,org-b}"
    )
    (cluster_role,) = [doc for doc in docs if doc["kind"] == "ClusterRole"]
    assert not any(resource == "secrets" for _, resource, _ in _granted(cluster_role))
    roles = [doc for doc in docs if doc["kind"] == "Role"]
    assert sorted(role["metadata"]["namespace"] for role in roles) == ["org-a", "org-b"]
    for role in roles:
        assert _granted(role) == {("", "secrets", verb) for verb in ("get", "list", "watch")}
    bindings = [doc for doc in docs if doc["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["org-a", "org-b"]
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == "planelink"


def _services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Service"}


def test_the_operator_port_is_never_on_the_published_service(helm: Path) -> None:
    docs = render(helm, "planelink-gateway", "planelink", "--set", "service.type=LoadBalancer")
    services = _services(docs)
    assert set(services) == {"pl-planelink-gateway", "pl-planelink-gateway-operator"}
    published = services["pl-planelink-gateway"]["spec"]
    assert published["type"] == "LoadBalancer"
    assert {(p["name"], p["port"]) for p in published["ports"]} == {
        ("agents", 8443),
        ("callers", 6443),
    }
    operator = services["pl-planelink-gateway-operator"]["spec"]
    assert operator["type"] == "ClusterIP"
    assert [(p["name"], p["port"]) for p in operator["ports"]] == [("operator", 8081)]
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "PLANELINK_GATEWAY_OPERATOR_TOKEN_FILE" not in env  # off by default


def test_the_operator_token_is_mounted_and_prometheus_scrapes_with_it(helm: Path) -> None:
    docs = render(
        helm,
        "planelink-gateway",
        "planelink",
        "--set",
        "operator.tokenSecret.name=ops-token",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--api-versions",
        SERVICE_MONITOR_API,
    )
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    token_file = Path(env["PLANELINK_GATEWAY_OPERATOR_TOKEN_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "operator-token")
    assert token_file.parent == Path(mount["mountPath"])
    volume = next(v for v in pod["volumes"] if v["name"] == "operator-token")
    assert volume["secret"] == {
        "secretName": "ops-token",
        "items": [{"key": "token", "path": token_file.name}],
    }
    # The kubelet's probes stay on paths the token never guards.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    monitor = next(doc for doc in docs if doc["kind"] == "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    operator = _services(docs)["pl-planelink-gateway-operator"]
    assert operator["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "ops-token", "key": "token"},
    }


def _gateway(
    helm: Path, *values: str
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, str | None]]:
    """The gateway chart rendered with `values` ("key=value" each): every document, the pod
    spec, its one container and that container's env."""
    sets = [arg for value in values for arg in ("--set", value)]
    docs = render(helm, "planelink-gateway", "planelink", *sets)
    pod = pod_spec(docs)
    (container,) = pod["containers"]
    return docs, pod, container, container_env(docs)


def test_one_replica_of_one_worker_is_not_scaled_out(helm: Path) -> None:
    _, pod, container, env = _gateway(helm)
    assert "peers" not in {port["name"] for port in container["ports"]}
    assert not {name for name in env if "PEER" in name or "WORKERS" in name}
    assert "peer-tls" not in {volume["name"] for volume in pod["volumes"]}
    assert "affinity" not in pod
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_replicas_get_peers_a_disruption_budget_and_spread(helm: Path) -> None:
    docs, pod, container, env = _gateway(helm, "replicaCount=3", "peers.secretName=my-peers")
    assert {"name": "peers", "containerPort": 8444, "protocol": "TCP"} in container["ports"]
    assert env["PLANELINK_GATEWAY_PEER_PORT"] == "8444"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "peer-tls")
    for name in ("CERTIFICATE", "KEY", "CA"):
        assert Path(str(env[f"PLANELINK_GATEWAY_PEER_{name}"])).parent == Path(mount["mountPath"])
    volume = next(v for v in pod["volumes"] if v["name"] == "peer-tls")
    assert volume["secret"] == {"secretName": "my-peers"}
    # The pod's id and the address its peers reach it at come from the downward API.
    fields = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in container["env"]
        if "valueFrom" in item
    }
    assert fields["POD_NAME"] == "metadata.name"
    assert fields["POD_IP"] == "status.podIP"
    # The peer port is for peers only: never on the published Service.
    published = _services(docs)["pl-planelink-gateway"]["spec"]
    assert "peers" not in {port["name"] for port in published["ports"]}
    assert "PodDisruptionBudget" in kinds(docs)
    anti = pod["affinity"]["podAntiAffinity"]
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector

    _, required, _, _ = _gateway(helm, "replicaCount=3", "podAntiAffinity=required")
    assert set(required["affinity"]["podAntiAffinity"]) == {
        "requiredDuringSchedulingIgnoredDuringExecution"
    }
    _, unspread, _, _ = _gateway(helm, "replicaCount=3", "podAntiAffinity=none")
    assert "affinity" not in unspread


def test_workers_share_a_pod_and_scale_its_resources(helm: Path) -> None:
    docs, pod, container, env = _gateway(helm, "workers=4", "resources.limits.cpu=0.5")
    assert env["PLANELINK_GATEWAY_WORKERS"] == "4"
    # Each worker is a replica: its own Lease and peer port (the peer port + i), even in one pod.
    assert env["PLANELINK_GATEWAY_PEER_PORT"] == "8444"
    peer_ports = {p["name"]: p["containerPort"] for p in container["ports"] if "peers" in p["name"]}
    assert peer_ports == {"peers": 8444, "peers-w1": 8445, "peers-w2": 8446, "peers-w3": 8447}
    assert {"Role", "RoleBinding"} <= set(kinds(docs))
    # The supervisor keeps a private temporary directory: writable /tmp on a read-only root.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = next(m for m in container["volumeMounts"] if m["name"] == "tmp")
    assert tmp["mountPath"] == "/tmp"
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert container["resources"] == {
        "requests": {"cpu": "400m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2048Mi"},
    }
    # One pod: no disruption budget that would block every node drain, nothing to spread.
    assert "PodDisruptionBudget" not in kinds(docs)
    assert "affinity" not in pod
