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
from dataclasses import dataclass

from cryptography import x509

from certs.errors import InvalidPlaneRefError

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


@dataclass(frozen=True)
class PlaneRef:
    """A DataPlane, by namespace and name. ``str(ref)`` is ``"<namespace>/<name>"``."""

    namespace: str
    name: str

    def __post_init__(self) -> None:
        validate_dns1123_label(self.namespace, what="namespace")
        validate_dns1123_label(self.name, what="name")

    @classmethod
    def parse(cls, text: str) -> PlaneRef:
        """Parse ``"<namespace>/<name>"``; raise :class:`InvalidPlaneRefError` with the cause."""
        namespace, sep, name = text.partition("/")
        if not sep or "/" in name:
            raise InvalidPlaneRefError(
                f"plane reference {text!r} must have the form <namespace>/<name>"
            )
        return cls(namespace=namespace, name=name)

    @classmethod
    def from_uri(cls, uri: str) -> PlaneRef:
        """Parse ``planelink://plane/<namespace>/<name>`` (the agent certificate URI SAN)."""
        if not uri.startswith(PLANE_URI_PREFIX):
            raise InvalidPlaneRefError(
                f"{uri!r} is not a plane URI ({PLANE_URI_PREFIX}<ns>/<name>)"
            )
        return cls.parse(uri.removeprefix(PLANE_URI_PREFIX))

    @property
    def uri(self) -> str:
        """The URI SAN naming this plane: ``planelink://plane/<namespace>/<name>``."""
        return f"{PLANE_URI_PREFIX}{self.namespace}/{self.name}"

    @property
    def common_name(self) -> str:
        """The (informational) subject CN for this plane, at most 64 characters."""
        text = str(self)
        return text if len(text) <= _CN_MAX else text[: _CN_MAX - 3] + "..."

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def planes_in_certificate(cert: x509.Certificate) -> tuple[PlaneRef, ...]:
    """Return the planes named by ``cert``'s ``planelink://plane/...`` URI SANs (maybe none).

    This only reads the certificate: verify it first with
    :func:`certs.verify_client_certificate`.
    """
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    planes: list[PlaneRef] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(PLANE_URI_PREFIX):
            try:
                planes.append(PlaneRef.from_uri(uri))
            except InvalidPlaneRefError:
                continue
    return tuple(planes)
