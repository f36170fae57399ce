"""The DataPlane custom resource: pydantic models and every other fact about it (its group,
version, kind, condition types, annotations, field names), its CRD manifest, and the DataPlane
documents planelink writes for users. The one source of truth: no other package spells these."""

from crd.documents import dataplane_manifest
from crd.manifest import custom_resource_definition, render_yaml
from crd.models import (
    API_VERSION,
    CONNECTED,
    GATEWAY_PROVISIONED,
    GROUP,
    KIND,
    PLURAL,
    READY,
    REQUIRE_AGENT_IDENTITY_ANNOTATION,
    RULES,
    VERSION,
    Condition,
    DataPlane,
    DataPlaneSpec,
    DataPlaneStatus,
    ValueFrom,
)

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
