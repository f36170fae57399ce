"""`helm install` of both charts against a real API server: bad values fail there with the
schema's message, good ones install, and NOTES.txt names the objects that were installed and
gives commands planelink accepts."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from envtest import KubeAPIServer
from planelink import cli
from tests.charts.chart_kit import AGENT_VALUES, CHARTS, full_values, run_helm

GATEWAY = "planelink-gateway"
AGENT = "planelink-agent"


def _install(
    helm: Path, server: KubeAPIServer, namespace: str, chart: str, *values: str
) -> dict[str, Any]:
    """`helm install --dry-run=server` as the release `pl`: Helm asks the API server what it
    serves (.Capabilities) and validates the objects, but creates nothing."""
    installed = run_helm(
        helm,
        "install",
        "pl",
        str(CHARTS / chart),
        "-n",
        namespace,
        "--dry-run=server",
        "-o",
        "json",
        *values,
        server=server,
    )
    assert installed.returncode == 0, installed.stderr
    release: dict[str, Any] = json.loads(installed.stdout)
    return release


def _manifest(release: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]


def _names(docs: list[dict[str, Any]], kind: str) -> set[str]:
    return {doc["metadata"]["name"] for doc in docs if doc["kind"] == kind}


def _mounted_secrets(docs: list[dict[str, Any]]) -> set[str]:
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    return {volume["secret"]["secretName"] for volume in volumes if "secret" in volume}


def _commands(notes: str, program: str) -> list[list[str]]:
    """The `program` command lines of `notes` (continued lines joined), `<placeholders>` made
    words."""
    joined = re.sub(r"\\\n\s*", "", notes)
    lines = [line.strip() for line in joined.splitlines()]
    words = [re.sub(r"<[^>]*>", "placeholder", line) for line in lines]
    return [shlex.split(line) for line in words if line.startswith(f"{program} ")]


def _check_kubectl_lines_name_installed_objects(notes: str, docs: list[dict[str, Any]]) -> None:
    kubectl = [line for line in notes.splitlines() if line.strip().startswith("kubectl -n ")]
    assert kubectl, notes
    for kind, names in (
        ("deployment", _names(docs, "Deployment")),
        ("service", _names(docs, "Service")),
    ):
        named = set(re.findall(rf"\b{kind}/([-a-z0-9.]+)", notes))
        assert named, f"NOTES name no {kind}"
        assert named <= names, (named, names)
    (secrets_line,) = [line for line in kubectl if " get secret " in line]
    assert set(secrets_line.split(" get secret ")[1].split()) == _mounted_secrets(docs)


def _check_planelink_commands_parse(notes: str) -> None:
    commands = _commands(notes, "planelink")
    assert commands, notes
    for command in commands:
        cli.build_parser(command[1]).parse_args(command[1:])  # SystemExit if planelink refuses


@pytest.mark.parametrize(
    "values",
    [[], full_values(GATEWAY)],
    ids=["default", "full"],
)
def test_gateway_notes_say_what_was_installed_and_what_comes_next(
    helm: Path, control_plane: KubeAPIServer, namespace: str, values: list[str]
) -> None:
    if values:  # the full values follow two namespaces of their own; here, the test's
        values = [*values, "--set", f"reconcile.namespaces={{{namespace}}}"]
    release = _install(helm, control_plane, namespace, GATEWAY, *values)
    notes = release["info"]["notes"]
    docs = _manifest(release)
    _check_kubectl_lines_name_installed_objects(notes, docs)
    _check_planelink_commands_parse(notes)
    (operator,) = [doc for doc in docs if doc["metadata"]["name"].endswith("-operator")]
    port = operator["spec"]["ports"][0]["port"]
    assert f"{port}:{port}" in notes
    assert f"planelink status --gateway http://127.0.0.1:{port}" in notes
    # This API server serves no Prometheus Operator kinds: asked for, they are left out, and
    # the notes say so.
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    warned = "WARNING: metrics.serviceMonitor.enabled is true" in notes
    assert warned == bool(values)
    assert ("WARNING: metrics.prometheusRule.enabled is true" in notes) == bool(values)


@pytest.mark.parametrize(
    "values",
    [AGENT_VALUES, full_values(AGENT)],
    ids=["required", "full"],
)
def test_agent_notes_say_what_was_installed_and_what_comes_next(
    helm: Path, control_plane: KubeAPIServer, namespace: str, values: list[str]
) -> None:
    release = _install(helm, control_plane, namespace, AGENT, *values)
    notes = release["info"]["notes"]
    docs = _manifest(release)
    _check_kubectl_lines_name_installed_objects(notes, docs)
    _check_planelink_commands_parse(notes)
    config = release["config"]
    plane_namespace, plane_name = config["plane"].split("/")
    assert (
        f"kubectl -n {plane_namespace} wait dataplane/{plane_name} --for=condition=Ready" in notes
    )
    host = config["gateway"]["url"].removeprefix("wss://").split(":")[0]
    (kubeconfig,) = [c for c in _commands(notes, "planelink") if c[1] == "kubeconfig"]
    assert kubeconfig[kubeconfig.index("--server") + 1].startswith(
        f"https://{host}:6443/planes/{plane_namespace}/{plane_name}/"
    )
    (issue,) = [c for c in _commands(notes, "planelink") if c[1:3] == ["certs", "issue-agent"]]
    assert issue[issue.index("--plane") + 1] == config["plane"]
    assert issue[issue.index("--secret-namespace") + 1] == namespace
    assert issue[issue.index("--secret-name") + 1] in _mounted_secrets(docs)


def test_a_bad_value_fails_helm_install(
    helm: Path, control_plane: KubeAPIServer, namespace: str
) -> None:
    refused = run_helm(
        helm,
        "install",
        "pl",
        str(CHARTS / AGENT),
        "-n",
        namespace,
        "--set",
        "plane=prod",
        "--set",
        "gateway.url=http://gateway.example:8443",
        server=control_plane,
    )
    assert refused.returncode != 0
    assert "values don't meet the specifications of the schema(s)" in refused.stderr
    assert "- plane: Does not match pattern" in refused.stderr
    assert "- gateway.url: Does not match pattern" in refused.stderr
    listed = run_helm(helm, "list", "-n", namespace, "-q", server=control_plane)
    assert listed.stdout.strip() == ""  # nothing was installed


@pytest.mark.parametrize(("chart", "values"), [(GATEWAY, []), (AGENT, AGENT_VALUES)])
def test_the_charts_install_and_uninstall(
    helm: Path, control_plane: KubeAPIServer, namespace: str, chart: str, values: list[str]
) -> None:
    release = f"r-{namespace}"  # its cluster-wide objects are named after it
    installed = run_helm(
        helm,
        "install",
        release,
        str(CHARTS / chart),
        "-n",
        namespace,
        *values,
        server=control_plane,
    )
    assert installed.returncode == 0, installed.stderr
    try:
        deployments = control_plane.kubectl("get", "deployments", "-n", namespace, "-o", "name")
        assert deployments.stdout.split() == [f"deployment.apps/{release}-{chart}"]
        assert "NOTES:" in installed.stdout
    finally:
        removed = run_helm(helm, "uninstall", release, "-n", namespace, server=control_plane)
    assert removed.returncode == 0, removed.stderr
    roles = control_plane.kubectl("get", "clusterroles", "-o", "name")
    assert f"clusterrole.rbac.authorization.k8s.io/{release}-{chart}" not in roles.stdout.split()
