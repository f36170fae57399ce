"""The DataPlane resource's names: its group, version, kind, condition types and annotations.

Plain strings, apart from the pydantic models (`crd.models`), so that a process which only names
the resource (the gateway's refusals, its token reviews) never imports pydantic.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "openchoreo.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "openchoreo.dev/v1alpha1"
KIND: Final = "DataPlane"
PLURAL = "dataplanes"
SINGULAR = "dataplane"
SHORT_NAMES = ("dp", "dps")

READY: Final = "Ready"
"""Condition type: GatewayProvisioned and Connected are both True."""
CONNECTED: Final = "Connected"
"""Condition type: an agent tunnel is up (agent mode) or the API server answered (direct mode)."""
GATEWAY_PROVISIONED: Final = "GatewayProvisioned"
"""Condition type: the gateway holds this plane's credentials and they are usable."""

REQUIRE_AGENT_IDENTITY_ANNOTATION: Final = "planelink.dev/require-agent-identity"
"""Annotation: "true"/"false" overrides whether an agent's certificate must name its plane."""
