"""The DataPlane documents planelink writes for users, as plain dicts ready for a YAML dumper.

Keys come in the order users read them (the dumpers keep it), and only the fields given are
written, so a printed manifest stays short. This module builds data only: no YAML, no API calls,
no certificates (a CA Secret, if wanted, is `certs.ca_certificate_secret`'s and handed in).
"""

from __future__ import annotations

from typing import Any

from crd.names import API_VERSION, KIND
from kubeobject import KubeObject, ObjectRef

CA_SECRET_KEY = "ca.crt"  # noqa: S105 - a key name, not a password
"""The key of an agent client CA Secret that `spec.agent.clientCA.secretRef` names."""


def dataplane_manifest(
    *,
    plane: ObjectRef,
    client_ca: bytes | KubeObject,
    public_virtual_host: str,
    organization_virtual_host: str,
    secret_store: str | None = None,
) -> list[KubeObject]:
    """Manifests for an agent-enabled DataPlane trusting an agent client CA.

    ``client_ca`` is the CA's PEM, inlined as ``spec.agent.clientCA.value``: one document; or a
    Secret holding it as ``ca.crt``, emitted first and named by ``clientCA.secretRef``: two
    documents. These are the two options OpenChoreo documents for ``clientCA``.
    """
    docs: list[KubeObject] = []
    client_ca_field: dict[str, Any]
    if isinstance(client_ca, bytes):
        client_ca_field = {"value": client_ca.decode("ascii")}
    else:
        docs.append(client_ca)
        secret = ObjectRef.of(client_ca)
        client_ca_field = {
            "secretRef": {"name": secret.name, "namespace": secret.namespace, "key": CA_SECRET_KEY}
        }
    spec: dict[str, Any] = {
        "agent": {"enabled": True, "clientCA": client_ca_field},
        "gateway": {
            "publicVirtualHost": public_virtual_host,
            "organizationVirtualHost": organization_virtual_host,
        },
    }
    if secret_store is not None:
        spec["secretStoreRef"] = {"name": secret_store}
    docs.append(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": plane.name, "namespace": plane.namespace},
            "spec": spec,
        }
    )
    return docs
