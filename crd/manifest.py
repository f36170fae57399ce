"""The DataPlane CustomResourceDefinition, generated from the pydantic models.

Pydantic writes JSON Schema; the API server wants a *structural* OpenAPI v3 schema: no `$ref`,
no `anyOf` for optional fields, no titles. `structural_schema` rewrites one into the other, and
refuses (with `UnsupportedSchema`) any construct it does not know, so a new model feature cannot
silently produce a schema that the API server would read differently.
"""

from __future__ import annotations

from typing import Any

import yaml

from crd import models, names

_KEPT_KEYWORDS = frozenset(
    {
        "description",
        "default",
        "enum",
        "format",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "x-kubernetes-validations",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
    }
)
_DROPPED_KEYWORDS = frozenset({"title", "$defs", "additionalProperties"})


class UnsupportedSchema(ValueError):
    """The pydantic schema uses a construct that has no structural equivalent here."""


def structural_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a pydantic JSON Schema (with its `$defs`) into a structural OpenAPI v3 schema."""
    definitions: dict[str, Any] = schema.get("$defs", {})
    return _convert(schema, definitions, path="")


def _convert(node: dict[str, Any], definitions: dict[str, Any], path: str) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        merged = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, definitions, path)
    if "anyOf" in node:
        return _convert(_drop_null_branch(node, path), definitions, path)
    if "const" in node:
        node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _KEPT_KEYWORDS or key in {"type", "required"}:
            out[key] = value
        elif key == "properties":
            out[key] = {
                name: _convert(sub, definitions, f"{path}.{name}") for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _convert(value, definitions, f"{path}[]")
        elif key not in _DROPPED_KEYWORDS:
            raise UnsupportedSchema(f"{path or '<root>'}: keyword {key!r} is not supported")
    return _complete(out, node, definitions, path)


def _complete(
    out: dict[str, Any], node: dict[str, Any], definitions: dict[str, Any], path: str
) -> dict[str, Any]:
    """What a structural schema needs beyond the keywords copied over."""
    if "type" not in out:
        raise UnsupportedSchema(f"{path or '<root>'}: every structural schema node needs a type")
    if out["type"] == "integer":
        out.setdefault("format", "int64")
    if out["type"] == "object" and "properties" not in out:
        if node.get("additionalProperties") not in (None, False):
            out["additionalProperties"] = _convert(
                node["additionalProperties"], definitions, f"{path}{{}}"
            )
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _drop_null_branch(node: dict[str, Any], path: str) -> dict[str, Any]:
    branches = [b for b in node["anyOf"] if b != {"type": "null"}]
    if len(branches) != 1:
        raise UnsupportedSchema(f"{path}: unions other than 'X | None' are not supported")
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", ...) is None:
        del rest["default"]  # an absent field, not a null one
    return {**branches[0], **rest}


def _condition_column(condition: str, *, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": condition,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
        "description": f"Status of the {condition} condition",
    }
    if priority:
        column["priority"] = priority
    return column


def custom_resource_definition() -> dict[str, Any]:
    """The CRD manifest as a dict, ready to serialise or to send to the API server."""
    spec_schema = structural_schema(
        models.DataPlaneSpec.model_json_schema(by_alias=True, mode="validation")
    )
    status_schema = structural_schema(
        models.DataPlaneStatus.model_json_schema(by_alias=True, mode="validation")
    )
    status_schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{names.PLURAL}.{names.GROUP}",
            "annotations": {"planelink.dev/generated-by": "planelink crd"},
        },
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
                "categories": ["openchoreo"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        _condition_column(names.READY),
                        _condition_column(names.CONNECTED),
                        _condition_column(names.GATEWAY_PROVISIONED, priority=1),
                        {
                            "name": "Agent",
                            "type": "boolean",
                            "jsonPath": ".spec.agent.enabled",
                            "priority": 1,
                            "description": "Whether the plane is reached through an agent",
                        },
                        {
                            "name": "Server",
                            "type": "string",
                            "jsonPath": ".spec.kubernetesCluster.server",
                            "priority": 1,
                            "description": "API server of a directly reached plane",
                        },
                        {
                            "name": "Reason",
                            "type": "string",
                            "jsonPath": f'.status.conditions[?(@.type=="{names.READY}")].reason',
                            "priority": 1,
                            "description": "Why the plane is or is not ready",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A DataPlane represents a Kubernetes cluster where application "
                                "workloads are deployed, and how the control plane reaches it."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full: anchors would only puzzle a reader."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_yaml() -> str:
    """The CRD manifest as YAML, as committed in deploy/crd/."""
    header = "# Generated by `planelink crd` from crd/models.py; do not edit by hand.\n"
    body = yaml.dump(
        custom_resource_definition(), Dumper=_NoAliasDumper, sort_keys=False, width=100
    )
    return header + body
