"""The DataPlane custom resource: pydantic models and every other fact about it (its group,
version, kind, condition types, annotations, field names), its CRD manifest, and the DataPlane
documents planelink writes for users. The one source of truth: no other package spells these.

The names (`crd.names`) are plain strings and imported with the package; the models, the
manifest and the documents load pydantic, on first use of any of them (PEP 562)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crd.names import (
    API_VERSION,
    CONNECTED,
    GATEWAY_PROVISIONED,
    GROUP,
    KIND,
    PLURAL,
    READY,
    REQUIRE_AGENT_IDENTITY_ANNOTATION,
    VERSION,
)

if TYPE_CHECKING:
    from crd.documents import dataplane_manifest
    from crd.manifest import custom_resource_definition, render_yaml
    from crd.models import RULES, Condition, DataPlane, DataPlaneSpec, DataPlaneStatus, ValueFrom

__all__ = [
    "API_VERSION",
    "CONNECTED",
    "GATEWAY_PROVISIONED",
    "GROUP",
    "KIND",
    "PLURAL",
    "READY",
    "REQUIRE_AGENT_IDENTITY_ANNOTATION",
    "RULES",
    "VERSION",
    "Condition",
    "DataPlane",
    "DataPlaneSpec",
    "DataPlaneStatus",
    "ValueFrom",
    "custom_resource_definition",
    "dataplane_manifest",
    "render_yaml",
]

_LAZY = {
    "RULES": "crd.models",
    "Condition": "crd.models",
    "DataPlane": "crd.models",
    "DataPlaneSpec": "crd.models",
    "DataPlaneStatus": "crd.models",
    "ValueFrom": "crd.models",
    "custom_resource_definition": "crd.manifest",
    "render_yaml": "crd.manifest",
    "dataplane_manifest": "crd.documents",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
