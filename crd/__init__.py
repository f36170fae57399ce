"""The DataPlane custom resource: pydantic models (the one source of truth) and its CRD manifest."""

from crd.manifest import custom_resource_definition, render_yaml
from crd.models import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
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
    "GROUP",
    "KIND",
    "PLURAL",
    "RULES",
    "VERSION",
    "Condition",
    "DataPlane",
    "DataPlaneSpec",
    "DataPlaneStatus",
    "ValueFrom",
    "custom_resource_definition",
    "render_yaml",
]
