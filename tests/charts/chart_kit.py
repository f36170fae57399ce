"""Running the pinned Helm on the charts, for the chart tests: render, read what was rendered,
and the full values files (every value set away from its default) in tests/charts/values/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from envtest import KubeAPIServer
from tests.kit.waits import scaled

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "deploy" / "charts"
FULL_VALUES = Path(__file__).resolve().parent / "values"
AGENT_VALUES = ["--set", "plane=my-org/prod", "--set", "gateway.url=wss://gateway.example:8443"]
"""The values the agent chart cannot do without."""
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"

Docs = list[dict[str, Any]]


def full_values(chart: str) -> list[str]:
    """`-f` with the chart's full values file."""
    return ["-f", str(FULL_VALUES / f"{chart}.yaml")]


def run_helm(
    binary: Path, *args: str, server: KubeAPIServer | None = None
) -> subprocess.CompletedProcess[str]:
    """Helm with `args`; with `server`, against that API server (as its admin)."""
    env = dict(os.environ)
    if server is not None:
        env["KUBECONFIG"] = str(server.kubeconfig_path)
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=scaled(60),
    )


def render(binary: Path, chart: str, namespace: str, *values: str) -> Docs:
    """`helm template` of `chart` as the release `pl`: every document (failing the test with
    Helm's message if it refuses)."""
    rendered = run_helm(binary, "template", "pl", str(CHARTS / chart), "-n", namespace, *values)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def kinds(docs: Docs) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def the(docs: Docs, kind: str) -> dict[str, Any]:
    """The one document of `kind`."""
    (doc,) = [doc for doc in docs if doc["kind"] == kind]
    return doc


def pod_spec(docs: Docs) -> dict[str, Any]:
    """The Deployment's pod spec."""
    spec: dict[str, Any] = the(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def main_container(docs: Docs) -> dict[str, Any]:
    """The Deployment's one container."""
    (only,) = pod_spec(docs)["containers"]
    found: dict[str, Any] = only
    return found


def container_env(docs: Docs) -> dict[str, str | None]:
    """The container's environment: name to value (None for valueFrom)."""
    return {item["name"]: item.get("value") for item in main_container(docs)["env"]}


def apply_dry_run(server: KubeAPIServer, namespace: str, docs: Docs) -> None:
    """Have `server` accept every document (server-side dry run): its schemas and admission
    decide, as they would at `helm install`."""
    applied = server.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
        timeout=scaled(60),
    )
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count("(server dry run)") == len(docs), applied.stdout
