"""The DataPlane documents planelink writes for users, as plain dicts ready for a YAML dumper.

Keys come in the order users read them (the dumpers keep it), and only the fields given are
written, so a printed manifest stays short. This module builds data only: no YAML, no API calls,
no certificates (the caller hands over the CA's PEM and, if it emits one, the Secret's name).
"""

from __future__ import annotations

from typing import Any

from crd.models import API_VERSION, KIND
from kubeobject import ObjectRef

CA_SECRET_KEY = "ca.crt"  # noqa: S105 - a key name, not a password
"""The key of an agent client CA Secret that `spec.agent.clientCA.secretRef` names."""


def agent_dataplane(
    *,
    plane: ObjectRef,
    client_ca_pem: bytes,
    public_virtual_host: str,
    organization_virtual_host: str,
    ca_secret_name: str | None = None,
    secret_store: str | None = None,
) -> dict[str, Any]:
    """An agent-enabled DataPlane trusting ``client_ca_pem``: inlined in ``clientCA.value``, or,
    with ``ca_secret_name``, referred to in the plane's namespace by ``clientCA.secretRef``."""
    client_ca: dict[str, Any]
    if ca_secret_name is None:
        client_ca = {"value": client_ca_pem.decode("ascii")}
    else:
        client_ca = {
            "secretRef": {
                "name": ca_secret_name,
                "namespace": plane.namespace,
                "key": CA_SECRET_KEY,
            }
        }
    spec: dict[str, Any] = {
        "agent": {"enabled": True, "clientCA": client_ca},
        "gateway": {
            "publicVirtualHost": public_virtual_host,
            "organizationVirtualHost": organization_virtual_host,
        },
    }
    if secret_store is not None:
        spec["secretStoreRef"] = {"name": secret_store}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": plane.name, "namespace": plane.namespace},
        "spec": spec,
    }
