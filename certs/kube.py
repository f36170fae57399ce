"""Kubernetes manifests for certificates, as plain dicts ready for a YAML dumper.

The layout is the one every consumer expects: a ``kubernetes.io/tls`` Secret with ``tls.crt``
(leaf + chain), ``tls.key`` (PKCS#8) and ``ca.crt`` (the root to trust) - the shape of the
agent's ``cluster-agent-tls`` Secret and of cert-manager's output. Values go in ``data``,
base64-encoded. :func:`dataplane_manifest` builds the DataPlane that trusts an agent CA.
This module builds data only: no YAML, no API calls.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from certs.bundle import CertificateBundle
from certs.identity import PlaneRef, validate_dns1123_label

DATAPLANE_API_VERSION = "openchoreo.dev/v1alpha1"
"""API version of OpenChoreo's DataPlane resource."""

AGENT_SECRET_NAME = "cluster-agent-tls"  # noqa: S105 - a resource name, not a password
"""Name of the agent's client-certificate Secret in the data-plane cluster."""
AGENT_SECRET_NAMESPACE = "openchoreo-data-plane"  # noqa: S105 - a resource name, not a password
"""Namespace of the agent in the data-plane cluster."""
GATEWAY_SECRET_NAME = "cluster-gateway-tls"  # noqa: S105 - a resource name, not a password
"""Name of the gateway's server-certificate Secret in the control-plane cluster."""
CONTROL_PLANE_NAMESPACE = "openchoreo-control-plane"
"""Namespace of the gateway in the control-plane cluster."""
CA_SECRET_NAME = "planelink-ca"  # noqa: S105 - a resource name, not a password
"""Default name of the Secret holding the CA key pair."""

_SUBDOMAIN_MAX = 253
_SUBDOMAIN_PART = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def validate_secret_name(name: str) -> str:
    """Return ``name`` if it is a valid Secret name (DNS-1123 subdomain), else ``ValueError``."""
    if (
        not name
        or len(name) > _SUBDOMAIN_MAX
        or not all(_SUBDOMAIN_PART.fullmatch(part) for part in name.split("."))
    ):
        raise ValueError(
            f"Secret name {name!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-'"
            f" and '.', at most {_SUBDOMAIN_MAX} characters)"
        )
    return name


def tls_secret(bundle: CertificateBundle, *, name: str, namespace: str) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret holding ``bundle``: ``tls.crt``, ``tls.key``, ``ca.crt``.

    For a CA bundle (no chain) ``ca.crt`` and ``tls.crt`` are the CA certificate itself: the
    format cert-manager's CA Issuer reads.
    """
    return _secret(
        name=name,
        namespace=namespace,
        type_="kubernetes.io/tls",
        files={
            "ca.crt": bundle.root_pem(),
            "tls.crt": bundle.chain_pem(),
            "tls.key": bundle.private_key_pem(),
        },
    )


def ca_certificate_secret(ca_pem: bytes, *, name: str, namespace: str) -> dict[str, Any]:
    """An ``Opaque`` Secret with only ``ca.crt``: what ``spec.agent.clientCA.secretRef`` names."""
    return _secret(name=name, namespace=namespace, type_="Opaque", files={"ca.crt": ca_pem})


def _secret(*, name: str, namespace: str, type_: str, files: dict[str, bytes]) -> dict[str, Any]:
    validate_secret_name(name)
    validate_dns1123_label(namespace, what="namespace")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": type_,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in files.items()},
    }


def dataplane_manifest(
    *,
    plane: PlaneRef,
    client_ca_pem: bytes,
    public_virtual_host: str,
    organization_virtual_host: str,
    ca_secret_name: str | None = None,
    secret_store: str | None = None,
    api_version: str = DATAPLANE_API_VERSION,
) -> list[dict[str, Any]]:
    """Manifests for an agent-enabled DataPlane trusting ``client_ca_pem``.

    Without ``ca_secret_name`` the CA is inlined (``spec.agent.clientCA.value``): one document.
    With it, an ``Opaque`` Secret holding ``ca.crt`` in the plane's namespace comes first and
    ``clientCA.secretRef`` points at it: two documents. These are the two options OpenChoreo
    documents for ``clientCA``.
    """
    docs: list[dict[str, Any]] = []
    client_ca: dict[str, Any]
    if ca_secret_name is None:
        client_ca = {"value": client_ca_pem.decode("ascii")}
    else:
        docs.append(
            ca_certificate_secret(client_ca_pem, name=ca_secret_name, namespace=plane.namespace)
        )
        client_ca = {
            "secretRef": {"name": ca_secret_name, "namespace": plane.namespace, "key": "ca.crt"}
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
    docs.append(
        {
            "apiVersion": api_version,
            "kind": "DataPlane",
            "metadata": {"name": plane.name, "namespace": plane.namespace},
            "spec": spec,
        }
    )
    return docs


def secret_files(manifest: object) -> dict[str, bytes] | None:
    """The decoded ``data`` and ``stringData`` of a Secret manifest, or None if not a Secret.

    ``manifest`` is a parsed manifest (e.g. from ``kubectl get secret -o yaml``). Raises
    ``ValueError`` if a ``data`` value is not valid base64.
    """
    if not isinstance(manifest, dict) or manifest.get("kind") != "Secret":
        return None
    files: dict[str, bytes] = {}
    for key, value in (manifest.get("stringData") or {}).items():
        files[str(key)] = str(value).encode()
    for key, value in (manifest.get("data") or {}).items():
        try:
            files[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"Secret data {key!r} is not valid base64") from exc
    return files
