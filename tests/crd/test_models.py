"""The DataPlane models and the CRD generated from them, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import crd
from crd.manifest import UnsupportedSchema, structural_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "dataplanes").glob("*.yaml"))
COMMITTED_CRD = ROOT / "deploy" / "crd" / "dataplanes.openchoreo.dev.yaml"


def test_committed_crd_is_what_the_models_generate() -> None:
    assert COMMITTED_CRD.read_text() == crd.render_yaml(), (
        "deploy/crd is stale: run `planelink crd -o deploy/crd/dataplanes.openchoreo.dev.yaml`"
    )


def test_the_reference_examples_are_all_here() -> None:
    # Four examples in the reference's Examples section, and the secretRef option of
    # "Adding the Certificate"; the inline option is built in the server test with a real CA.
    assert [p.name for p in EXAMPLES] == [
        "agent-dataplane.yaml",
        "dev-dataplane.yaml",
        "my-dataplane-secret-ca.yaml",
        "production-dataplane.yaml",
        "secure-dataplane.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_parses(path: Path) -> None:
    plane = crd.DataPlane.model_validate(yaml.safe_load(path.read_text()))
    assert plane.metadata.namespace == "my-org"
    assert plane.spec.agent_enabled or plane.spec.kubernetes_cluster is not None


def _spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "gateway": {"publicVirtualHost": "a.example.com", "organizationVirtualHost": "b.example"},
        "kubernetesCluster": {
            "server": "https://10.0.0.1:6443",
            "tls": {"ca": {"value": "pem"}},
            "auth": {"bearerToken": {"secretRef": {"name": "t", "key": "token"}}},
        },
    }
    spec.update(changes)
    return {key: value for key, value in spec.items() if value is not None}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            _spec(kubernetesCluster=None),
            crd.RULES.cluster_or_agent.message,
        ),
        (
            _spec(kubernetesCluster=None, agent={"enabled": False}),
            crd.RULES.cluster_or_agent.message,
        ),
        (
            _spec(agent={"enabled": True, "clientCA": {}}),
            crd.RULES.value_from_exactly_one.message,
        ),
        (
            _spec(
                agent={
                    "enabled": True,
                    "clientCA": {"value": "pem", "secretRef": {"name": "s", "key": "k"}},
                }
            ),
            crd.RULES.value_from_exactly_one.message,
        ),
        (
            _spec(
                kubernetesCluster={
                    "server": "https://10.0.0.1:6443",
                    "tls": {"ca": {"value": "pem"}},
                    "auth": {},
                }
            ),
            crd.RULES.auth_exactly_one.message,
        ),
        (
            _spec(
                kubernetesCluster={
                    "server": "http://10.0.0.1:6443",
                    "tls": {"ca": {"value": "pem"}},
                    "auth": {"bearerToken": {"value": "t"}},
                }
            ),
            crd.RULES.server_is_https_url.message,
        ),
    ],
)
def test_models_refuse_what_the_api_server_refuses(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        crd.DataPlaneSpec.model_validate(spec)


def test_agent_only_plane_needs_no_cluster() -> None:
    spec = crd.DataPlaneSpec.model_validate(
        _spec(kubernetesCluster=None, agent={"enabled": True, "clientCA": {"value": "pem"}})
    )
    assert spec.agent_enabled
    assert spec.kubernetes_cluster is None


def _crd_spec_schema() -> dict[str, Any]:
    version = crd.custom_resource_definition()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_schema_is_structural() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, path
        assert not {"$ref", "anyOf", "oneOf", "allOf", "title"} & node.keys(), path
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(_crd_spec_schema(), "spec")


def test_schema_carries_every_rule_once() -> None:
    found: list[dict[str, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_crd_spec_schema())
    rules = {(rule["rule"], rule["message"]) for rule in found}
    expected = {(rule.cel, rule.message) for rule in crd.RULES.all()}
    assert rules == expected
    # ValueFrom appears five times (clientCA, tls.ca, clientCert, clientKey, bearerToken).
    assert len(found) == len(expected) + 4


def test_structural_schema_refuses_unions() -> None:
    with pytest.raises(UnsupportedSchema, match="unions other than"):
        structural_schema({"anyOf": [{"type": "string"}, {"type": "integer"}]})


def test_structural_schema_refuses_unknown_keywords() -> None:
    with pytest.raises(UnsupportedSchema, match="'patternProperties' is not supported"):
        structural_schema({"type": "object", "patternProperties": {}})


def test_optional_fields_become_absent_not_null() -> None:
    schema = structural_schema(
        {
            "type": "object",
            "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
        }
    )
    assert schema["properties"]["x"] == {"type": "string"}
