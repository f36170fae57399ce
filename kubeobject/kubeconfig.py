"""A kubeconfig as a dict: one cluster, one user, one context, everything embedded.

Shared by `planelink kubeconfig` (the image has no kubectl to write one) and the test servers
(envtest), so it stands here, on the standard library alone; callers serialise it themselves.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Credentials:
    """How one user authenticates to an API server: a bearer token or a client certificate."""

    user: str
    token: str | None = None
    client_certificate_pem: bytes | None = None
    client_key_pem: bytes | None = None


def build_kubeconfig(
    *, name: str, server: str, ca_pem: bytes, credentials: Credentials
) -> dict[str, Any]:
    """A one-context kubeconfig with embedded CA and credentials."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    user: dict[str, str] = {}
    if credentials.token is not None:
        user["token"] = credentials.token
    if credentials.client_certificate_pem is not None and credentials.client_key_pem is not None:
        user["client-certificate-data"] = b64(credentials.client_certificate_pem)
        user["client-key-data"] = b64(credentials.client_key_pem)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [{"name": credentials.user, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": credentials.user}}],
        "current-context": name,
    }
