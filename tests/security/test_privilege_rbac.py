"""The charts' RBAC against a real API server: what their values claim is what can-i says.

Callers act in the data plane as the agent's service account, so its role is what any holder of
a caller certificate can do. The chart is rendered with Helm, its ServiceAccount, ClusterRole
and ClusterRoleBinding are applied to the session's kube-apiserver (RBAC authorizer, no
controller-manager: no aggregated roles), and the API server is asked, subject access review by
review, what that service account may do. By default: read workloads, nothing else - no Secret,
no exec, attach, port-forward or proxy, no token, no write, nothing that escalates; each opt-in
adds exactly its capability. The gateway reads Secrets only where it follows DataPlanes: with
`reconcile.namespaces` set, through Roles in those namespaces and nowhere else.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pytest
import yaml

from envtest import KubeAPIServer

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "deploy" / "charts"
AGENT_VALUES = ["--set", "plane=my-org/prod", "--set", "gateway.url=wss://gateway.example:8443"]
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


class Ask(NamedTuple):
    """One question to the authorizer: may the subject `verb` this resource?"""

    verb: str
    resource: str
    subresource: str = ""
    group: str = ""
    namespaced: bool = True


READS = {
    "get pods": Ask("get", "pods"),
    "read pod logs": Ask("get", "pods", "log"),
    "list deployments": Ask("list", "deployments", group="apps"),
    "watch jobs": Ask("watch", "jobs", group="batch"),
    "list ingresses": Ask("list", "ingresses", group="networking.k8s.io"),
    "list config maps": Ask("list", "configmaps"),
    "list namespaces": Ask("list", "namespaces", namespaced=False),
    "get nodes": Ask("get", "nodes", namespaced=False),
}
DANGERS = {
    "get secrets": Ask("get", "secrets"),
    "list secrets": Ask("list", "secrets"),
    "watch secrets": Ask("watch", "secrets"),
    "exec": Ask("create", "pods", "exec"),
    "exec (websocket GET)": Ask("get", "pods", "exec"),
    "attach": Ask("create", "pods", "attach"),
    "port-forward": Ask("create", "pods", "portforward"),
    "proxy to pods": Ask("get", "pods", "proxy"),
    "proxy to services": Ask("get", "services", "proxy"),
    "proxy to nodes": Ask("get", "nodes", "proxy", namespaced=False),
    "mint service account tokens": Ask("create", "serviceaccounts", "token"),
    "impersonate users": Ask("impersonate", "users", namespaced=False),
    "impersonate service accounts": Ask("impersonate", "serviceaccounts"),
    "bind roles": Ask("bind", "clusterroles", group="rbac.authorization.k8s.io", namespaced=False),
    "escalate roles": Ask(
        "escalate", "clusterroles", group="rbac.authorization.k8s.io", namespaced=False
    ),
    "write role bindings": Ask("create", "rolebindings", group="rbac.authorization.k8s.io"),
    "create deployments": Ask("create", "deployments", group="apps"),
    "delete pods": Ask("delete", "pods"),
    "update config maps": Ask("update", "configmaps"),
}


class May(Protocol):
    def __call__(self, asks: dict[str, Ask], namespace: str = ...) -> set[str]:
        """The names of the questions answered allowed (in the release's namespace unless
        `namespace` is given)."""
        ...


class Rbac(NamedTuple):
    user: str
    """The chart's service account, as the API server names it."""
    may: May


class ChartRbac(Protocol):
    """What the `chart_rbac` fixture is: apply `chart`'s RBAC rendered with `--set` values."""

    def __call__(self, chart: str, *values: str) -> Rbac: ...


class AgentRbac(Protocol):
    """What the `agent_rbac` fixture is: the agent chart's RBAC, with more `--set` values."""

    def __call__(self, *values: str) -> Rbac: ...


def _helm(helm: Path, *args: str) -> str:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _reviews(user: str, namespace: str, asks: dict[str, Ask]) -> list[dict[str, Any]]:
    account_namespace = user.split(":")[2]
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{account_namespace}"]
    return [
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": [*groups, "system:authenticated"],
                "resourceAttributes": {
                    "verb": ask.verb,
                    "group": ask.group,
                    "resource": ask.resource,
                    "subresource": ask.subresource,
                    **({"namespace": namespace} if ask.namespaced else {}),
                },
            },
        }
        for ask in asks.values()
    ]


def _json_stream(text: str) -> list[dict[str, Any]]:
    """kubectl prints one JSON object per created object, one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        obj, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        found.append(obj)
        at = end
    return found


@pytest.fixture
def chart_rbac(helm: Path, control_plane: KubeAPIServer, namespace: str) -> Iterator[ChartRbac]:
    """Apply a chart's RBAC rendered with `--set` values; ask what its service account may do."""
    applied: list[str] = []

    def apply(chart: str, *values: str) -> Rbac:
        release = f"rbac-{uuid.uuid4().hex[:8]}"
        rendered = _helm(helm, "template", release, str(CHARTS / chart), "-n", namespace, *values)
        docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
        manifest = yaml.safe_dump_all(docs)
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        applied.append(manifest)
        (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
        user = f"system:serviceaccount:{namespace}:{account['metadata']['name']}"

        def may(asks: dict[str, Ask], namespace: str = namespace) -> set[str]:
            reviews = {"apiVersion": "v1", "kind": "List", "items": _reviews(user, namespace, asks)}
            answer = control_plane.kubectl(
                "create", "-f", "-", "-o", "json", input=json.dumps(reviews)
            )
            items = _json_stream(answer.stdout)
            return {
                name for name, item in zip(asks, items, strict=True) if item["status"]["allowed"]
            }

        return Rbac(user, may)

    yield apply
    for manifest in applied:
        control_plane.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)


@pytest.fixture
def agent_rbac(chart_rbac: ChartRbac) -> AgentRbac:
    def apply(*values: str) -> Rbac:
        return chart_rbac("planelink-agent", *AGENT_VALUES, *values)

    return apply


def test_by_default_the_agent_reads_workloads_and_nothing_else(
    agent_rbac: AgentRbac, control_plane: KubeAPIServer
) -> None:
    rbac = agent_rbac()
    assert rbac.may(READS) == set(READS)
    assert rbac.may(DANGERS) == set()
    # What kubectl says, as the service account: no Secret anywhere.
    can_i = control_plane.kubectl(
        "auth", "can-i", "get", "secrets", "--all-namespaces", "--as", rbac.user, check=False
    )
    assert can_i.stdout.strip() == "no"
    listed = control_plane.kubectl("get", "secrets", "-A", "--as", rbac.user, check=False)
    assert listed.returncode != 0
    assert "Forbidden" in listed.stderr


@pytest.mark.parametrize(
    ("values", "granted"),
    [
        (["rbac.secrets=true"], {"get secrets", "list secrets", "watch secrets"}),
        (["rbac.exec=true"], {"exec", "exec (websocket GET)", "attach"}),
        (["rbac.portForward=true"], {"port-forward"}),
        (["rbac.proxy=true"], {"proxy to pods", "proxy to services", "proxy to nodes"}),
        (["rbac.impersonate=true"], {"impersonate users", "impersonate service accounts"}),
        (["rbac.clusterAdmin=true"], set(DANGERS)),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_each_opt_in_grants_exactly_its_capability(
    agent_rbac: AgentRbac, values: list[str], granted: set[str]
) -> None:
    rbac = agent_rbac(*(arg for value in values for arg in ("--set", value)))
    assert rbac.may(READS) == set(READS)
    assert rbac.may(DANGERS) == granted


def test_own_rules_add_to_the_read_only_set_or_replace_it(
    agent_rbac: AgentRbac,
) -> None:
    deploy = '[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}]'
    added = agent_rbac("--set-json", f"rbac.rules={deploy}")
    assert added.may(READS) == set(READS)
    assert added.may(DANGERS) == {"create deployments"}
    only = agent_rbac("--set-json", f"rbac.rules={deploy}", "--set", "rbac.readOnly=false")
    assert only.may(READS) == set()
    assert only.may(DANGERS) == {"create deployments"}


SECRETS = {verb: Ask(verb, "secrets") for verb in ("get", "list", "watch")}


def test_the_gateway_reads_secrets_only_where_it_follows_dataplanes(
    chart_rbac: ChartRbac, control_plane: KubeAPIServer, namespace: str
) -> None:
    everywhere = chart_rbac("planelink-gateway")
    assert everywhere.may(SECRETS, namespace="kube-system") == set(SECRETS)
    confined = chart_rbac("planelink-gateway", "--set", f"reconcile.namespaces={{{namespace}}}")
    assert confined.may(SECRETS) == set(SECRETS)
    assert confined.may(SECRETS, namespace="kube-system") == set()
    assert confined.may(SECRETS, namespace="default") == set()
    can_i = control_plane.kubectl(
        "auth", "can-i", "list", "secrets", "--all-namespaces", "--as", confined.user, check=False
    )
    assert can_i.stdout.strip() == "no"
