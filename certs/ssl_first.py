"""TLS files into an `ssl.SSLContext` without ``cryptography`` when they are what they should be.

:mod:`certs.tls_files` checks every file with ``cryptography`` before `ssl` sees it, so that an
error says which file holds what; that costs a process ten megabytes and a tenth of a second
for files that are, nearly always, right. Here `ssl` loads them first (it refuses a key that is
not the certificate's, a file without a certificate, an encrypted key: a password callback that
refuses means no prompt on a terminal), and :mod:`certs.der` reads the fields the caller needs.
Only when `ssl` refuses, or the DER reader is unsure (a string type it does not decode, a key of
another algorithm, a CA bundle without an anchor it can see), do the checks of
:mod:`certs.tls_files` run, with ``cryptography``: the error raised, or the certificates
returned, are then exactly theirs. The gateway, which verifies agents' chains with
``cryptography`` anyway, uses :mod:`certs.tls_files` directly.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from certs.der import (
    EC_PUBLIC_KEY,
    RSA_ENCRYPTION,
    CertificateFields,
    DerError,
    private_key_algorithm,
    read_certificate,
)
from certs.files import CredentialFile, FileRole, read_file, refused_bundle, refused_pair
from certs.pem_text import KEY_LABELS, pem_blocks

if TYPE_CHECKING:
    from cryptography import x509

_USABLE_KEY_LABELS = frozenset({b"EC PRIVATE KEY", b"RSA PRIVATE KEY"})
_USABLE_KEY_ALGORITHMS = frozenset({EC_PUBLIC_KEY, RSA_ENCRYPTION})


class _EncryptedKey(Exception):
    """`ssl` asked for a password: the key is encrypted (the checks say so, naming the file)."""


def _refuse_password() -> bytes:
    raise _EncryptedKey


def load_cert_chain(
    context: ssl.SSLContext, certificate: CredentialFile, key: CredentialFile, *, role: FileRole
) -> CertificateFields:
    """`context.load_cert_chain` for the two files; returns the certificate's fields. Raises
    :class:`WrongFileError` as :func:`certs.tls_files.load_cert_chain` does."""
    try:
        context.load_cert_chain(certificate.path, key.path, password=_refuse_password)
    except (ssl.SSLError, OSError, _EncryptedKey) as error:
        _checked_chain(certificate, key, role)  # raises what is wrong, if it can tell
        refused = "a password is needed" if isinstance(error, _EncryptedKey) else str(error)
        raise refused_pair(certificate, key, role, refused) from None
    chain = read_certificates(read_file(certificate, role))
    if not chain or not _usable_key(read_file(key, FileRole.PRIVATE_KEY)):
        return _checked_chain(certificate, key, role)
    return chain[0]


def load_verify_locations(context: ssl.SSLContext, ca: CredentialFile) -> list[CertificateFields]:
    """`context.load_verify_locations` for a CA bundle; returns the fields of its
    certificates. Raises :class:`WrongFileError` as
    :func:`certs.tls_files.load_verify_locations` does."""
    try:
        context.load_verify_locations(cafile=str(ca.path))
    except (ssl.SSLError, OSError) as error:
        _checked_bundle(ca)
        raise refused_bundle(ca, error) from None
    cas = read_certificates(read_file(ca, FileRole.CA_BUNDLE))
    if not any(c.is_ca or c.subject_der == c.issuer_der for c in cas):
        return _checked_bundle(ca)
    return cas


def read_certificates(data: bytes) -> list[CertificateFields]:
    """The fields of every CERTIFICATE block of `data`, in order; empty if any block is one
    the DER reader does not read (``cryptography`` decides about such a file)."""
    found: list[CertificateFields] = []
    for label, _, der in pem_blocks(data):
        if label != b"CERTIFICATE":
            continue
        if der is None:
            return []
        try:
            found.append(read_certificate(der))
        except DerError:
            return []
    return found


def _usable_key(data: bytes) -> bool:
    """Whether the first private key of `data` is one the checks accept (ECDSA or RSA)."""
    for label, _, der in pem_blocks(data):
        if label not in KEY_LABELS:
            continue
        if label in _USABLE_KEY_LABELS:
            return True
        try:
            return der is not None and private_key_algorithm(der) in _USABLE_KEY_ALGORITHMS
        except DerError:
            return False
    return False


def _checked_chain(
    certificate: CredentialFile, key: CredentialFile, role: FileRole
) -> CertificateFields:
    from certs import tls_files  # noqa: PLC0415 - cryptography, for a file that needs a look

    chain, _ = tls_files.load_key_pair(certificate, key, role=role)
    return fields_of(chain[0])


def _checked_bundle(ca: CredentialFile) -> list[CertificateFields]:
    from certs import tls_files  # noqa: PLC0415 - cryptography, for a file that needs a look

    return [fields_of(c) for c in tls_files.load_certificate_file(ca, FileRole.CA_BUNDLE)]


def fields_of(certificate: x509.Certificate) -> CertificateFields:
    """The :class:`CertificateFields` of a certificate ``cryptography`` decoded."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    der = certificate.public_bytes(serialization.Encoding.DER)
    try:
        return read_certificate(der)
    except DerError:
        pass
    extensions = certificate.extensions

    def value(kind: type[x509.ExtensionType]) -> object:
        try:
            return extensions.get_extension_for_class(kind).value
        except x509.ExtensionNotFound:
            return None

    constraints = value(x509.BasicConstraints)
    usages = value(x509.ExtendedKeyUsage)
    names = value(x509.SubjectAlternativeName)
    return CertificateFields(
        der=der,
        serial_number=certificate.serial_number,
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        subject_der=certificate.subject.public_bytes(),
        issuer_der=certificate.issuer.public_bytes(),
        not_valid_before_utc=certificate.not_valid_before_utc,
        not_valid_after_utc=certificate.not_valid_after_utc,
        is_ca=isinstance(constraints, x509.BasicConstraints) and constraints.ca,
        extended_key_usages=tuple(u.dotted_string for u in usages)
        if isinstance(usages, x509.ExtendedKeyUsage)
        else (),
        dns_names=tuple(names.get_values_for_type(x509.DNSName))
        if isinstance(names, x509.SubjectAlternativeName)
        else (),
        uris=tuple(names.get_values_for_type(x509.UniformResourceIdentifier))
        if isinstance(names, x509.SubjectAlternativeName)
        else (),
    )
