"""What a PEM file was given for, what it actually holds, and the error that says both.

Every file that becomes part of a TLS context (a server or client certificate, its private key,
a CA bundle) is checked here, from its bytes, before `ssl` sees it: OpenSSL's own messages
(``[SSL] PEM lib``, ``NO_CERTIFICATE_OR_CRL_FOUND``) name neither the file nor the cause. A
:class:`WrongFileError` names the file, what it holds (nothing, a certificate with its subject,
a private key, a CSR, DER, an encrypted key, text that is not PEM, a key of another
certificate), what was expected, and the setting that fixes it: its flag, environment variable
and chart value (:class:`FileSetting`).

Pure: bytes in, checked objects or an error out. Reading the file is :mod:`certs.tls_files`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.errors import PemError
from certs.files import FileRole, FileSetting, WrongFileError
from certs.keys import PrivateKey
from certs.pem import load_private_key
from certs.pem_contents import der_certificate, describe_pem, is_ca, is_der_key, subject_text
from certs.pem_text import ENCRYPTED_KEY, KEY_LABELS, pem_blocks


def certificates_for(
    data: bytes, role: FileRole, *, path: str, setting: FileSetting
) -> list[x509.Certificate]:
    """The certificates of `data`, given as `role` (a certificate or a CA bundle), in order;
    raises :class:`WrongFileError` if it holds none, or (for a CA bundle) only certificates
    that are neither CAs nor self-signed."""
    certificates = _decoded_certificates(data)
    if not certificates:
        raise WrongFileError(
            path=path, role=role, holds=describe_pem(data), setting=setting, advice=_advice(data)
        )
    if role is FileRole.CA_BUNDLE and not any(_can_anchor(c) for c in certificates):
        leaf = certificates[0]
        raise WrongFileError(
            path=path,
            role=role,
            holds=describe_pem(data),
            setting=setting,
            advice=f"give the CA that issued it, {subject_text(leaf.issuer)}",
        )
    return certificates


def private_key_for(data: bytes, *, path: str, setting: FileSetting) -> PrivateKey:
    """The private key of `data`; raises :class:`WrongFileError` if it holds none that
    planelink can use (none, an encrypted one, one that does not decode, not ECDSA or RSA)."""
    blocks = pem_blocks(data)
    keys = [raw for label, raw, _ in blocks if label in KEY_LABELS]
    if keys:
        try:
            return load_private_key(keys[0])
        except PemError as error:
            holds = (
                "an encrypted private key"
                if b"ENCRYPTED" in keys[0]
                else f"a private key that planelink cannot use ({error})"
            )
            raise WrongFileError(
                path=path,
                role=FileRole.PRIVATE_KEY,
                holds=holds,
                setting=setting,
                advice=_advice(data),
            ) from None
    raise WrongFileError(
        path=path,
        role=FileRole.PRIVATE_KEY,
        holds=describe_pem(data),
        setting=setting,
        advice=_advice(data),
    )


def check_key_matches(
    certificate: x509.Certificate,
    key: PrivateKey,
    *,
    certificate_path: str,
    key_path: str,
    certificate_setting: FileSetting,
    key_setting: FileSetting,
) -> None:
    """Raise :class:`WrongFileError` (about the key file) unless `key` is the private key of
    `certificate`."""
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, public) == key.public_key().public_bytes(
        der, public
    ):
        return
    raise WrongFileError(
        path=key_path,
        role=FileRole.PRIVATE_KEY,
        expected=f"the private key of {certificate_setting.flag} {certificate_path} "
        f"(subject {subject_text(certificate.subject)})",
        holds="the private key of another certificate",
        setting=key_setting,
        advice="give the key and certificate of one pair (a renewal writes both)",
    )


def _advice(data: bytes) -> str:
    """How to turn what `data` holds into what planelink reads, when a command can."""
    if not data.strip() or pem_blocks(data):
        if ENCRYPTED_KEY in data or b"Proc-Type: 4,ENCRYPTED" in data:
            return "decrypt it first (openssl pkey -in KEY -out KEY.plain)"
        return ""
    if der_certificate(data) is not None:
        return "convert it to PEM (openssl x509 -inform der -in FILE -out FILE.pem)"
    if is_der_key(data):
        return "convert it to PEM (openssl pkey -inform der -in FILE -out FILE.pem)"
    return ""


def _decoded_certificates(data: bytes) -> list[x509.Certificate]:
    certificates: list[x509.Certificate] = []
    for label, _, der in pem_blocks(data):
        if label != b"CERTIFICATE" or der is None:
            continue
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    return certificates


def _can_anchor(certificate: x509.Certificate) -> bool:
    """Whether a certificate can be trusted as given: a CA, or a self-signed (pinned) one."""
    return is_ca(certificate) or certificate.subject == certificate.issuer
