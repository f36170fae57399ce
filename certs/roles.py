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

import base64
import binascii
import enum
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from certs.errors import CertsError, PemError
from certs.keys import PrivateKey
from certs.pem import load_private_key

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_KEY_LABELS = frozenset({b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY"})
_CSR_LABELS = frozenset({b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"})
_ENCRYPTED_KEY = b"ENCRYPTED PRIVATE KEY"


class FileRole(enum.Enum):
    """What a file is given for; the value is how an error names what was expected."""

    SERVER_CERTIFICATE = "a server certificate (PEM, the certificate first, then its chain)"
    CLIENT_CERTIFICATE = "a client certificate (PEM, the certificate first, then its chain)"
    PRIVATE_KEY = "an unencrypted private key (PEM)"
    CA_BUNDLE = "CA certificates (PEM)"

    @property
    def is_certificate(self) -> bool:
        return self in (FileRole.SERVER_CERTIFICATE, FileRole.CLIENT_CERTIFICATE)


@dataclass(frozen=True, slots=True)
class FileSetting:
    """The setting that names a file: how an operator changes it (flag, environment variable,
    and the Helm chart value where the chart sets it)."""

    flag: str
    env: str | None = None
    chart: str | None = None

    def hint(self) -> str:
        ways = self.flag + (f" / {self.env}" if self.env else "")
        return ways + (f" / chart value {self.chart}" if self.chart else "")


class WrongFileError(CertsError, ValueError):
    """A file given for a TLS role does not hold what that role needs.

    ``str(error)`` is one line for an operator: the file, what it holds, what was expected, and
    the setting to change.
    """

    def __init__(
        self,
        *,
        path: str,
        role: FileRole,
        holds: str,
        setting: FileSetting,
        advice: str = "",
        expected: str | None = None,
        missing: bool = False,
        unreadable: bool = False,
    ) -> None:
        self.missing = missing
        """The file does not exist (yet: a Secret not mounted, a renewal not written)."""
        self.unreadable = unreadable or missing
        """The file could not be read: `holds` says why (then it is not about contents)."""
        self.path = path
        self.role = role
        self.holds = holds
        self.setting = setting
        self.expected = expected or role.value
        self.advice = advice
        super().__init__(str(self))

    def __str__(self) -> str:
        advice = f"; {self.advice}" if self.advice else ""
        found = self.holds if self.unreadable else f"the file holds {self.holds}"
        return (
            f"{self.setting.flag} {self.path}: expected {self.expected}, but {found}{advice} "
            f"(set with {self.setting.hint()})"
        )


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
            advice=f"give the CA that issued it, {_subject(leaf.issuer)}",
        )
    return certificates


def private_key_for(data: bytes, *, path: str, setting: FileSetting) -> PrivateKey:
    """The private key of `data`; raises :class:`WrongFileError` if it holds none that
    planelink can use (none, an encrypted one, one that does not decode, not ECDSA or RSA)."""
    blocks = _blocks(data)
    keys = [raw for label, raw, _ in blocks if label in _KEY_LABELS]
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
        f"(subject {_subject(certificate.subject)})",
        holds="the private key of another certificate",
        setting=key_setting,
        advice="give the key and certificate of one pair (a renewal writes both)",
    )


def describe_pem(data: bytes) -> str:
    """What `data` holds, in words: "nothing (the file is empty)", "a certificate (subject
    'CN=a', issued by 'CN=b')", "a private key", "a certificate signing request (CSR) ..."."""
    if not data.strip():
        return "nothing (the file is empty)"
    blocks = _blocks(data)
    if not blocks:
        return _describe_not_pem(data)
    parts: list[str] = []
    certificates = [der for label, _, der in blocks if label == b"CERTIFICATE"]
    if certificates:
        parts.append(_describe_certificates(certificates))
    for label, raw, der in blocks:
        if label == b"CERTIFICATE":
            continue
        parts.append(_describe_block(label, raw, der))
    unique = list(dict.fromkeys(parts))
    return " and ".join(unique)


def _advice(data: bytes) -> str:
    """How to turn what `data` holds into what planelink reads, when a command can."""
    if not data.strip() or _blocks(data):
        if _ENCRYPTED_KEY in data or b"Proc-Type: 4,ENCRYPTED" in data:
            return "decrypt it first (openssl pkey -in KEY -out KEY.plain)"
        return ""
    if _der_certificate(data) is not None:
        return "convert it to PEM (openssl x509 -inform der -in FILE -out FILE.pem)"
    if _der_key(data):
        return "convert it to PEM (openssl pkey -inform der -in FILE -out FILE.pem)"
    return ""


def _blocks(data: bytes) -> list[tuple[bytes, bytes, bytes | None]]:
    """(label, the block's PEM text, its DER bytes or None) of every PEM block in `data`."""
    found: list[tuple[bytes, bytes, bytes | None]] = []
    for match in _PEM_BLOCK.finditer(data):
        body = match.group(2)
        der: bytes | None = None
        if b":" not in body:  # no RFC 1421 headers (an encrypted legacy key has them)
            try:
                der = base64.b64decode(b"".join(body.split()), validate=True)
            except (ValueError, binascii.Error):
                der = None
        found.append((match.group(1), match.group(0), der))
    return found


def _decoded_certificates(data: bytes) -> list[x509.Certificate]:
    certificates: list[x509.Certificate] = []
    for label, _, der in _blocks(data):
        if label != b"CERTIFICATE" or der is None:
            continue
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    return certificates


def _describe_certificates(ders: list[bytes | None]) -> str:
    decoded: list[x509.Certificate] = []
    for der in ders:
        try:
            if der is not None:
                decoded.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    if not decoded:
        return "a CERTIFICATE block that does not decode"
    first = decoded[0]
    kind = "a CA certificate" if _is_ca(first) else "a certificate"
    text = f"{kind} (subject {_subject(first.subject)}, issued by {_subject(first.issuer)})"
    if len(ders) > 1:
        text += f" followed by {len(ders) - 1} more certificate(s)"
    return text


def _describe_block(label: bytes, raw: bytes, der: bytes | None) -> str:
    if label == _ENCRYPTED_KEY or (label in _KEY_LABELS and b"ENCRYPTED" in raw):
        return "an encrypted private key"
    if label in _KEY_LABELS:
        return "a private key"
    if label in _CSR_LABELS:
        try:
            csr = x509.load_der_x509_csr(der) if der is not None else None
        except ValueError:
            csr = None
        subject = f" for subject {_subject(csr.subject)}" if csr is not None else ""
        return f"a certificate signing request (CSR){subject}, not a certificate issued for it"
    if label == b"PUBLIC KEY":
        return "a public key, not a private key"
    return f"a PEM block {label.decode()!r}"


def _describe_not_pem(data: bytes) -> str:
    certificate = _der_certificate(data)
    if certificate is not None:
        return f"a DER-encoded certificate (subject {_subject(certificate.subject)}), not PEM"
    if _der_key(data):
        return "a DER-encoded private key, not PEM"
    # Never quote the bytes: the file may be a secret of another kind.
    return f"no PEM data ({len(data)} bytes without a '-----BEGIN ...-----' line)"


def _der_certificate(data: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def _der_key(data: bytes) -> bool:
    try:
        serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError):
        return False
    except UnsupportedAlgorithm:  # still a key, of a kind planelink does not use
        return True
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except (x509.ExtensionNotFound, ValueError):
        return False
    return constraints.value.ca


def _can_anchor(certificate: x509.Certificate) -> bool:
    """Whether a certificate can be trusted as given: a CA, or a self-signed (pinned) one."""
    return _is_ca(certificate) or certificate.subject == certificate.issuer


def _subject(name: x509.Name) -> str:
    return repr(name.rfc4514_string())
