"""The DataPlane CRD on a real kube-apiserver, driven with the real kubectl."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import certs
import crd
from envtest import KubeAPIServer

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "dataplanes").glob("*.yaml"))


def _in_namespace(manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
    manifest["metadata"]["namespace"] = namespace
    return manifest


def _apply(server: KubeAPIServer, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return server.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)


def _get(server: KubeAPIServer, namespace: str, name: str) -> dict[str, Any]:
    out = server.kubectl("get", "dataplane", name, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_reference_example_is_accepted(
    control_plane: KubeAPIServer, namespace: str, path: Path
) -> None:
    manifest = _in_namespace(yaml.safe_load(path.read_text()), namespace)
    applied = _apply(control_plane, manifest)
    assert applied.returncode == 0, applied.stderr
    name = manifest["metadata"]["name"]
    assert applied.stdout.strip() == f"dataplane.openchoreo.dev/{name} created"

    stored = crd.DataPlane.model_validate(_get(control_plane, namespace, name))
    # What the server stored reads back into the same model it was generated from.
    assert stored.spec == crd.DataPlane.model_validate(manifest).spec
    assert stored.metadata.generation == 1


def test_inline_ca_example_is_accepted_and_defaults_apply(
    control_plane: KubeAPIServer, namespace: str
) -> None:
    # The reference's "Option 1: Inline value", with a real CA's PEM as the value.
    ca_pem = certs.create_ca("dataplane-agent-ca").certificate_pem().decode()
    manifest: dict[str, Any] = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "my-dataplane", "namespace": namespace},
        "spec": {
            "agent": {"enabled": True, "clientCA": {"value": ca_pem}},
            "gateway": {
                "publicVirtualHost": "api.example.com",
                "organizationVirtualHost": "internal.example.com",
            },
            "secretStoreRef": {"name": "default"},
        },
    }
    applied = _apply(control_plane, manifest)
    assert applied.returncode == 0, applied.stderr
    stored = _get(control_plane, namespace, "my-dataplane")
    assert stored["spec"]["agent"]["clientCA"]["value"] == ca_pem

    # `enabled` defaults to false when an agent block is given without it.
    del manifest["spec"]["agent"]["enabled"]
    manifest["spec"]["kubernetesCluster"] = {
        "server": "https://10.0.0.1:6443",
        "tls": {"ca": {"value": ca_pem}},
        "auth": {"bearerToken": {"secretRef": {"name": "token", "key": "token"}}},
    }
    assert _apply(control_plane, manifest).returncode == 0
    assert _get(control_plane, namespace, "my-dataplane")["spec"]["agent"]["enabled"] is False


def _broken(namespace: str, **spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "gateway": {"publicVirtualHost": "a.example.com", "organizationVirtualHost": "b.example"},
        "kubernetesCluster": {
            "server": "https://10.0.0.1:6443",
            "tls": {"ca": {"secretRef": {"name": "ca", "key": "ca.crt"}}},
            "auth": {"bearerToken": {"secretRef": {"name": "token", "key": "token"}}},
        },
    }
    for key, value in spec_changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "broken", "namespace": namespace},
        "spec": spec,
    }


def _cluster(**changes: Any) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "server": "https://10.0.0.1:6443",
        "tls": {"ca": {"secretRef": {"name": "ca", "key": "ca.crt"}}},
        "auth": {"bearerToken": {"secretRef": {"name": "token", "key": "token"}}},
    }
    cluster.update(changes)
    return cluster


_INVALID = 'The DataPlane "broken" is invalid: '

BROKEN: dict[str, tuple[dict[str, Any], str]] = {
    "no-cluster-no-agent": (
        {"kubernetesCluster": None},
        'spec: Invalid value: "object": kubernetesCluster is required unless agent.enabled is true',
    ),
    "agent-disabled-no-cluster": (
        {"kubernetesCluster": None, "agent": {"enabled": False}},
        'spec: Invalid value: "object": kubernetesCluster is required unless agent.enabled is true',
    ),
    "value-from-both": (
        {
            "kubernetesCluster": _cluster(
                tls={"ca": {"value": "x", "secretRef": {"name": "a", "key": "b"}}}
            )
        },
        'spec.kubernetesCluster.tls.ca: Invalid value: "object": '
        "exactly one of secretRef or value must be set",
    ),
    "value-from-neither": (
        {"agent": {"enabled": True, "clientCA": {}}},
        'spec.agent.clientCA: Invalid value: "object": '
        "exactly one of secretRef or value must be set",
    ),
    "auth-both": (
        {
            "kubernetesCluster": _cluster(
                auth={
                    "bearerToken": {"value": "t"},
                    "mtls": {"clientCert": {"value": "c"}, "clientKey": {"value": "k"}},
                }
            )
        },
        'spec.kubernetesCluster.auth: Invalid value: "object": '
        "exactly one of mtls or bearerToken must be set",
    ),
    "auth-neither": (
        {"kubernetesCluster": _cluster(auth={})},
        'spec.kubernetesCluster.auth: Invalid value: "object": '
        "exactly one of mtls or bearerToken must be set",
    ),
    "server-not-https": (
        {"kubernetesCluster": _cluster(server="http://10.0.0.1:6443")},
        'spec.kubernetesCluster.server: Invalid value: "string": '
        "server must be an https:// URL with a host, such as https://10.0.0.1:6443",
    ),
    "no-gateway": (
        {"gateway": None},
        "spec.gateway: Required value",
    ),
    "gateway-host-missing": (
        {"gateway": {"publicVirtualHost": "a.example.com"}},
        "spec.gateway.organizationVirtualHost: Required value",
    ),
    "secret-ref-without-key": (
        {"kubernetesCluster": _cluster(tls={"ca": {"secretRef": {"name": "ca"}}})},
        "spec.kubernetesCluster.tls.ca.secretRef.key: Required value",
    ),
    "mtls-without-key": (
        {"kubernetesCluster": _cluster(auth={"mtls": {"clientCert": {"value": "c"}}})},
        "spec.kubernetesCluster.auth.mtls.clientKey: Required value",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_spec_is_rejected_with_a_clear_message(
    control_plane: KubeAPIServer, namespace: str, case: str
) -> None:
    changes, message = BROKEN[case]
    applied = _apply(control_plane, _broken(namespace, **changes))
    assert applied.returncode != 0
    assert _rejections(applied.stderr)[0] == message, applied.stderr


def _rejections(stderr: str) -> list[str]:
    """The API server's error items: one after "is invalid: ", or one a bulleted line."""
    text = stderr.strip()
    assert text.startswith(_INVALID), stderr
    head, *bullets = text.removeprefix(_INVALID).splitlines()
    if head:
        return [head]
    return [line.removeprefix("* ") for line in bullets if line.startswith("* ")]


def test_printer_columns(control_plane: KubeAPIServer, namespace: str) -> None:
    path = next(p for p in EXAMPLES if p.stem == "dev-dataplane")
    assert (
        _apply(control_plane, _in_namespace(yaml.safe_load(path.read_text()), namespace)).returncode
        == 0
    )
    table = control_plane.kubectl("get", "dataplanes", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "CONNECTED", "AGE"]
    wide = control_plane.kubectl("get", "dp", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME",
        "READY",
        "CONNECTED",
        "GATEWAYPROVISIONED",
        "AGENT",
        "SERVER",
        "REASON",
        "AGE",
    ]
    assert "https://k8s-dev.example.com:6443" in wide[1]


def test_status_is_a_subresource(control_plane: KubeAPIServer, namespace: str) -> None:
    path = next(p for p in EXAMPLES if p.stem == "dev-dataplane")
    assert (
        _apply(control_plane, _in_namespace(yaml.safe_load(path.read_text()), namespace)).returncode
        == 0
    )
    condition = {
        "type": "Ready",
        "status": "False",
        "reason": "NotConnected",
        "message": "no probe yet",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    patch = json.dumps({"status": {"observedGeneration": 1, "conditions": [condition]}})
    # A status written through the main resource is ignored ...
    control_plane.kubectl(
        "patch", "dp", "dev-dataplane", "-n", namespace, "--type=merge", "-p", patch
    )
    assert "status" not in _get(control_plane, namespace, "dev-dataplane")
    # ... and through /status it is stored, validated by the Condition schema.
    control_plane.kubectl(
        "patch",
        "dp",
        "dev-dataplane",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    stored = crd.DataPlane.model_validate(_get(control_plane, namespace, "dev-dataplane"))
    assert stored.status.conditions[0].reason == "NotConnected"
    assert stored.status.observed_generation == 1

    bad = json.dumps({"status": {"conditions": [{**condition, "status": "Maybe"}]}})
    refused = control_plane.kubectl(
        "patch",
        "dp",
        "dev-dataplane",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        bad,
        check=False,
    )
    assert refused.returncode != 0
    assert 'Unsupported value: "Maybe"' in refused.stderr
