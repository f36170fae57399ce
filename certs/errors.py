"""Exceptions raised by :mod:`certs`.

Every error this package raises derives from :class:`CertsError`; errors about bad input also
derive from :class:`ValueError` so plain ``except ValueError`` keeps working. Errors from
``cryptography`` are translated here, at the boundary, and never leak to callers.
"""

from __future__ import annotations

import enum


class CertsError(Exception):
    """Base class of every error raised by :mod:`certs`."""


class PemError(CertsError, ValueError):
    """PEM input could not be decoded (garbage, no PEM block, unsupported key, wrong password)."""


class KeyMismatchError(CertsError, ValueError):
    """A private key does not belong to the certificate it was paired with."""


class InvalidPlaneRefError(CertsError, ValueError):
    """A plane reference is not ``<namespace>/<name>`` made of DNS-1123 labels."""


class OutputExistsError(CertsError, FileExistsError):
    """Refused to overwrite an existing file (pass ``overwrite=True`` to replace it)."""


class RejectionReason(enum.Enum):
    """Why a certificate was refused.

    The values are CamelCase so they can be used directly as a Kubernetes condition ``reason``.
    """

    EXPIRED = "Expired"
    """The certificate (or the CA that issued it) is past its notAfter."""
    NOT_YET_VALID = "NotYetValid"
    """The certificate (or the CA that issued it) is before its notBefore (clock skew?)."""
    UNTRUSTED = "Untrusted"
    """No chain from the certificate to a trusted certificate verifies."""
    NOT_CLIENT_AUTH = "NotClientAuth"
    """The certificate has an ExtendedKeyUsage extension that does not include clientAuth."""
    IDENTITY_MISMATCH = "IdentityMismatch"
    """The certificate verifies but names someone other than the expected identity."""
    MALFORMED = "Malformed"
    """The certificate could not be parsed or is structurally invalid."""


class CertificateRejected(CertsError):
    """A certificate was refused by :func:`certs.verify_client_certificate`.

    ``reason`` is machine-readable; ``message`` is one line meant for an operator's log and
    names the certificate and the precise cause. ``str(exc)`` is ``"<Reason>: <message>"``.
    """

    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"
