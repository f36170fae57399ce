"""Kubernetes manifests for certificates, as plain dicts ready for a YAML dumper.

The layout is the one every consumer expects: a ``kubernetes.io/tls`` Secret with ``tls.crt``
(leaf + chain), ``tls.key`` (PKCS#8) and ``ca.crt`` (the root to trust) - the shape of the
agent's ``cluster-agent-tls`` Secret and of cert-manager's output. Values go in ``data``,
base64-encoded. The DataPlane that refers to such a Secret is ``crd``'s to write.
This module builds data only: no YAML, no API calls.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from certs.bundle import CertificateBundle
from certs.identity import validate_dns1123_label

AGENT_SECRET_NAME = "cluster-agent-tls"  # noqa: S105 - a resource name, not a password
"""Name of the agent's client-certificate Secret in the data-plane cluster."""
AGENT_SECRET_NAMESPACE = "openchoreo-data-plane"  # noqa: S105 - a resource name, not a password
"""Namespace of the agent in the data-plane cluster."""
GATEWAY_SECRET_NAME = "cluster-gateway-tls"  # noqa: S105 - a resource name, not a password
"""Name of the gateway's server-certificate Secret in the control-plane cluster."""
CONTROL_PLANE_NAMESPACE = "openchoreo-control-plane"
"""Namespace of the gateway in the control-plane cluster."""
PEER_SECRET_NAME = "planelink-peer-tls"  # noqa: S105 - a resource name, not a password
"""The replicas' peer certificate (`planelink certs peer`), shared by every replica."""
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
