"""Certificate, key and CA files into an `ssl.SSLContext`, checked first so that errors say why.

The one way planelink loads TLS files: each file is read and checked for its role by
:mod:`certs.roles` before `ssl` sees it, so an operator reads "--tls-key pki/tls.crt: expected
an unencrypted private key (PEM), but the file holds a certificate ..." instead of OpenSSL's
``[SSL] PEM lib``. Every error is a :class:`certs.roles.WrongFileError` (a missing or unreadable
file too); whatever `ssl` still refuses after the checks is reported in the same form.
"""

from __future__ import annotations

import ssl

from cryptography import x509

from certs import roles
from certs.files import CredentialFile, FileRole, read_file, refused_bundle, refused_pair
from certs.keys import PrivateKey


def load_certificate_file(file: CredentialFile, role: FileRole) -> list[x509.Certificate]:
    """The certificates of `file`, checked for `role` (see :func:`certs.roles.certificates_for`)."""
    data = read_file(file, role)
    return roles.certificates_for(data, role, path=str(file.path), setting=file.setting)


def load_key_pair(
    certificate: CredentialFile, key: CredentialFile, *, role: FileRole
) -> tuple[list[x509.Certificate], PrivateKey]:
    """A certificate chain and its private key, checked to belong together."""
    chain = load_certificate_file(certificate, role)
    private_key = roles.private_key_for(
        read_file(key, FileRole.PRIVATE_KEY), path=str(key.path), setting=key.setting
    )
    roles.check_key_matches(
        chain[0],
        private_key,
        certificate_path=str(certificate.path),
        key_path=str(key.path),
        certificate_setting=certificate.setting,
        key_setting=key.setting,
    )
    return chain, private_key


def load_cert_chain(
    context: ssl.SSLContext, certificate: CredentialFile, key: CredentialFile, *, role: FileRole
) -> x509.Certificate:
    """`context.load_cert_chain` for the two files, checked first; returns the certificate."""
    chain, _ = load_key_pair(certificate, key, role=role)
    try:
        context.load_cert_chain(certificate.path, key.path)
    except (ssl.SSLError, OSError) as error:  # changed since the check, or beyond it
        raise refused_pair(certificate, key, role, error) from None
    return chain[0]


def load_verify_locations(context: ssl.SSLContext, ca: CredentialFile) -> list[x509.Certificate]:
    """`context.load_verify_locations` for a CA bundle, checked first; returns its CAs."""
    cas = load_certificate_file(ca, FileRole.CA_BUNDLE)
    try:
        context.load_verify_locations(cafile=str(ca.path))
    except (ssl.SSLError, OSError) as error:
        raise refused_bundle(ca, error) from None
    return cas
