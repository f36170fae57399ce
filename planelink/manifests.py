"""The manifests `planelink certs dataplane-manifest` prints and `planelink dev` applies.

Joins the two packages that may not know each other: `certs` writes the CA Secret, `crd` the
DataPlane that refers to it. Builds data only: no YAML, no API calls.
"""

from __future__ import annotations

from typing import Any

import certs
import crd
from kubeobject import ObjectRef


def dataplane_manifest(
    *,
    plane: ObjectRef,
    client_ca_pem: bytes,
    public_virtual_host: str,
    organization_virtual_host: str,
    ca_secret_name: str | None = None,
    secret_store: str | None = None,
) -> list[dict[str, Any]]:
    """Manifests for an agent-enabled DataPlane trusting ``client_ca_pem``.

    Without ``ca_secret_name`` the CA is inlined (``spec.agent.clientCA.value``): one document.
    With it, an ``Opaque`` Secret holding ``ca.crt`` in the plane's namespace comes first and
    ``clientCA.secretRef`` points at it: two documents. These are the two options OpenChoreo
    documents for ``clientCA``.
    """
    docs: list[dict[str, Any]] = []
    if ca_secret_name is not None:
        docs.append(
            certs.ca_certificate_secret(
                client_ca_pem, name=ca_secret_name, namespace=plane.namespace
            )
        )
    docs.append(
        crd.agent_dataplane(
            plane=plane,
            client_ca_pem=client_ca_pem,
            public_virtual_host=public_virtual_host,
            organization_virtual_host=organization_virtual_host,
            ca_secret_name=ca_secret_name,
            secret_store=secret_store,
        )
    )
    return docs
