"""How a data plane is named, and how that name is written into an agent certificate.

Identity format (what :func:`certs.issue_agent` writes and the gateway checks):

* URI SAN ``planelink://plane/<namespace>/<name>`` - the authoritative identity. ``<namespace>``
  is the DataPlane's (organization) namespace, ``<name>`` its ``metadata.name``; both are
  DNS-1123 labels, so the URI needs no escaping.
* Subject CN ``<namespace>/<name>`` - informational, for humans reading ``openssl x509``. CN is
  limited to 64 characters, so a long reference is shortened with ``...``; never authorize on it
  when the certificate has SANs.

This module never touches keys or files.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NewType

from certs.errors import InvalidPlaneRefError
from kubeobject import ObjectRef

if TYPE_CHECKING:
    from cryptography import x509

PLANE_URI_PREFIX = "planelink://plane/"
"""Prefix of the URI SAN naming a plane: ``planelink://plane/<namespace>/<name>``."""

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL_MAX = 63
_CN_MAX = 64


def validate_dns1123_label(value: str, *, what: str = "value") -> str:
    """Return ``value`` if it is a DNS-1123 label, else raise :class:`InvalidPlaneRefError`."""
    if not value:
        raise InvalidPlaneRefError(f"{what} must not be empty")
    if len(value) > _DNS1123_LABEL_MAX:
        raise InvalidPlaneRefError(
            f"{what} {value!r} is {len(value)} characters long; "
            f"a DNS-1123 label has at most {_DNS1123_LABEL_MAX}"
        )
    if not _DNS1123_LABEL.fullmatch(value):
        raise InvalidPlaneRefError(
            f"{what} {value!r} is not a DNS-1123 label: use lower-case letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    return value


PlaneRef = NewType("PlaneRef", ObjectRef)
"""A DataPlane, by namespace and name: an `ObjectRef` whose two parts were checked to be DNS-1123
labels, so that it can be written into a certificate. Only :func:`plane_ref`,
:func:`parse_plane_ref` and :func:`plane_ref_from_uri` make one; ``str(plane)`` is
``"<namespace>/<name>"``."""


def plane_ref(namespace: str, name: str) -> PlaneRef:
    """The plane ``<namespace>/<name>``; raise :class:`InvalidPlaneRefError` with the cause."""
    validate_dns1123_label(namespace, what="namespace")
    validate_dns1123_label(name, what="name")
    return PlaneRef(ObjectRef(namespace, name))


def parse_plane_ref(text: str) -> PlaneRef:
    """Parse ``"<namespace>/<name>"``; raise :class:`InvalidPlaneRefError` with the cause."""
    namespace, sep, name = text.partition("/")
    if not sep or "/" in name:
        raise InvalidPlaneRefError(
            f"plane reference {text!r} must have the form <namespace>/<name>"
        )
    return plane_ref(namespace, name)


def plane_ref_from_uri(uri: str) -> PlaneRef:
    """Parse ``planelink://plane/<namespace>/<name>`` (the agent certificate URI SAN)."""
    if not uri.startswith(PLANE_URI_PREFIX):
        raise InvalidPlaneRefError(f"{uri!r} is not a plane URI ({PLANE_URI_PREFIX}<ns>/<name>)")
    return parse_plane_ref(uri.removeprefix(PLANE_URI_PREFIX))


def plane_uri(plane: PlaneRef) -> str:
    """The URI SAN naming ``plane``: ``planelink://plane/<namespace>/<name>``."""
    return f"{PLANE_URI_PREFIX}{plane.namespace}/{plane.name}"


def plane_common_name(plane: PlaneRef) -> str:
    """The (informational) subject CN for ``plane``, at most 64 characters."""
    text = str(plane)
    return text if len(text) <= _CN_MAX else text[: _CN_MAX - 3] + "..."


def planes_in_certificate(cert: x509.Certificate) -> tuple[PlaneRef, ...]:
    """Return the planes named by ``cert``'s ``planelink://plane/...`` URI SANs (maybe none).

    This only reads the certificate: verify it first with
    :func:`certs.verify_client_certificate`.
    """
    from cryptography import x509  # noqa: PLC0415 - parsing a plane needs none (an agent's settings)

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    planes: list[PlaneRef] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(PLANE_URI_PREFIX):
            try:
                planes.append(plane_ref_from_uri(uri))
            except InvalidPlaneRefError:
                continue
    return tuple(planes)
