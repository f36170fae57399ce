"""Reading a certificate into a plain, frozen :class:`CertificateInfo`, and rendering it as text.

Nothing here judges whether a certificate is acceptable; that is :mod:`certs.verify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs._time import human_duration, iso, utc_or_now
from certs.keys import describe_public_key

_E = TypeVar("_E", bound=x509.ExtensionType)

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}

_KEY_USAGE_NAMES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "contentCommitment"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


def eku_name(oid: x509.ObjectIdentifier) -> str:
    """RFC 5280 short name of an ExtendedKeyUsage OID (dotted string if unknown)."""
    return _EKU_NAMES.get(oid, oid.dotted_string)


@dataclass(frozen=True)
class CertificateInfo:
    """What a certificate says, as plain values. Datetimes are aware UTC.

    ``key_usages`` and ``extended_key_usages`` use RFC 5280 names (``digitalSignature``,
    ``clientAuth``...). ``extended_key_usages`` is ``None`` when the certificate has no EKU
    extension (which allows any usage) and a possibly empty tuple when it has one.
    """

    subject: str
    issuer: str
    common_name: str | None
    organizations: tuple[str, ...]
    serial_number: int
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    key_usages: tuple[str, ...]
    extended_key_usages: tuple[str, ...] | None
    is_ca: bool
    path_length: int | None
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str
    key_type: str
    key_size: int | None
    self_signed: bool

    @property
    def serial_hex(self) -> str:
        """Serial number as lower-case hex, as ``openssl x509 -serial`` shows it."""
        return f"{self.serial_number:x}"

    @property
    def label(self) -> str:
        """Short name for log lines: the subject and the serial number."""
        return f"'{self.subject}' (serial {self.serial_hex})"

    @property
    def allows_client_auth(self) -> bool:
        """True unless an EKU extension is present without clientAuth."""
        return self.extended_key_usages is None or "clientAuth" in self.extended_key_usages

    @property
    def allows_server_auth(self) -> bool:
        """True unless an EKU extension is present without serverAuth."""
        return self.extended_key_usages is None or "serverAuth" in self.extended_key_usages

    @property
    def identities(self) -> tuple[str, ...]:
        """The names this certificate can be matched on: its SANs, or its CN if it has none."""
        sans = (*self.uris, *self.dns_names, *self.ip_addresses)
        if sans:
            return sans
        return (self.common_name,) if self.common_name else ()

    def remaining(self, at: datetime | None = None) -> timedelta:
        """Time left until ``not_after`` (negative once expired)."""
        return self.not_after - utc_or_now(at)

    def is_valid_at(self, at: datetime | None = None) -> bool:
        """Whether ``at`` (default: now) lies within ``[not_before, not_after]``."""
        moment = utc_or_now(at)
        return self.not_before <= moment <= self.not_after

    def render(self, at: datetime | None = None) -> str:
        """Multi-line human-readable description, validity judged at ``at`` (default: now)."""
        moment = utc_or_now(at)
        lines = [
            f"Subject:        {self.subject}",
            f"Issuer:         {self.issuer}" + ("  (self-signed)" if self.self_signed else ""),
            f"Serial:         {self.serial_hex}",
            f"Key:            {self.key_type}"
            + (f" ({self.key_size} bits)" if self.key_size else ""),
            f"CA:             {_yes_no(self.is_ca)}"
            + (
                f" (path length {self.path_length})"
                if self.is_ca and self.path_length is not None
                else ""
            ),
        ]
        lines.append(f"DNS names:      {', '.join(self.dns_names) or '-'}")
        lines.append(f"IP addresses:   {', '.join(self.ip_addresses) or '-'}")
        lines.append(f"URIs:           {', '.join(self.uris) or '-'}")
        lines.append(f"Key usage:      {', '.join(self.key_usages) or '-'}")
        if self.extended_key_usages is None:
            eku = "- (extension absent: any usage)"
        else:
            eku = ", ".join(self.extended_key_usages) or "(empty)"
        lines.append(f"Ext. key usage: {eku}")
        lines.append(f"Not before:     {iso(self.not_before)}")
        lines.append(f"Not after:      {iso(self.not_after)}  ({self.validity_status(moment)})")
        lines.append(f"SHA-256:        {self.sha256_fingerprint}")
        return "\n".join(lines)

    def validity_status(self, at: datetime | None = None) -> str:
        """E.g. ``"valid, 364 days left"``, ``"EXPIRED 3 days ago"``, ``"NOT YET VALID"``."""
        moment = utc_or_now(at)
        if moment < self.not_before:
            return f"NOT YET VALID, starts in {human_duration(self.not_before - moment)}"
        if moment > self.not_after:
            return f"EXPIRED {human_duration(moment - self.not_after)} ago"
        return f"valid, {human_duration(self.not_after - moment)} left"

    def __str__(self) -> str:
        return self.render()


def describe(cert: x509.Certificate) -> CertificateInfo:
    """Read ``cert`` into a :class:`CertificateInfo`.

    Raises ``ValueError`` if an extension cannot be parsed (e.g. duplicated extensions);
    :func:`certs.verify_client_certificate` reports that as ``MALFORMED``.
    """
    extensions = cert.extensions  # parse once; raises ValueError on malformed extensions
    san = _extension(extensions, x509.SubjectAlternativeName)
    bc = _extension(extensions, x509.BasicConstraints)
    ku = _extension(extensions, x509.KeyUsage)
    eku = _extension(extensions, x509.ExtendedKeyUsage)
    key_type, key_size = describe_public_key(cert.public_key())
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    if san is not None:
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=_first_attribute(cert.subject, NameOID.COMMON_NAME),
        organizations=tuple(
            str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        ),
        serial_number=cert.serial_number,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        uris=uris,
        key_usages=_key_usages(ku) if ku else (),
        extended_key_usages=tuple(eku_name(oid) for oid in eku) if eku is not None else None,
        is_ca=bool(bc and bc.ca),
        path_length=bc.path_length if bc else None,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        key_type=key_type,
        key_size=key_size,
        self_signed=_is_self_signed(cert),
    )


def _extension(extensions: x509.Extensions, kind: type[_E]) -> _E | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _first_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    return str(attributes[0].value) if attributes else None


def _key_usages(ku: x509.KeyUsage) -> tuple[str, ...]:
    names = [rfc for attr, rfc in _KEY_USAGE_NAMES if getattr(ku, attr)]
    if ku.key_agreement:
        if ku.encipher_only:
            names.append("encipherOnly")
        if ku.decipher_only:
            names.append("decipherOnly")
    return tuple(names)


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
