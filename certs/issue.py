"""Creating CAs and issuing certificates.

Every certificate gets a random serial, SHA-256 signature, SubjectKeyIdentifier, and (when it
has an issuer) an AuthorityKeyIdentifier; a critical BasicConstraints; a critical KeyUsage
(CA: keyCertSign + cRLSign; leaf: digitalSignature, plus keyEncipherment for RSA keys). When
``not_before`` is not given it is backdated by :data:`CLOCK_SKEW` so a peer whose clock is a
little behind accepts a fresh certificate; ``not_after`` is then ``now + validity``. A leaf never
outlives its issuer: ``not_after`` is clamped to the issuer's ``not_after``.

The profile passes ``cryptography``'s webpki verification, Go's crypto/tls and OpenSSL.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs._time import utc
from certs.bundle import CertificateBundle
from certs.identity import PlaneRef, parse_plane_ref, plane_common_name, plane_ref, plane_uri
from certs.keys import KeyType, PrivateKey, generate_private_key, key_fingerprint

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
"""ExtendedKeyUsage OID for TLS client authentication (id-kp-clientAuth)."""
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
"""ExtendedKeyUsage OID for TLS server authentication (id-kp-serverAuth)."""

PEER_SERVER_NAME = "planelink-peer"
"""The DNS name every replica's peer certificate carries, and the name a forwarding replica
checks: pod addresses change with every restart, so peers are named by their CA, not their IP."""

CLOCK_SKEW = timedelta(minutes=5)
"""How far ``not_before`` is backdated when it is not given explicitly."""

DEFAULT_CA_VALIDITY = timedelta(days=3650)
DEFAULT_LEAF_VALIDITY = timedelta(days=365)
_CN_MAX = 64


DEFAULT_CA_NAME = "planelink CA"
"""The common name of a CA created without one, followed by 8 hex digits of its key's
SHA-256 fingerprint: two CAs made with the defaults never look alike in a message."""


def create_ca(
    common_name: str | None = None,
    *,
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_CA_VALIDITY,
    not_before: datetime | None = None,
    organizations: Sequence[str] = (),
    path_length: int | None = 0,
) -> CertificateBundle:
    """Create a self-signed root CA.

    ``path_length=0`` (the default) lets the CA sign leaves only; pass 1 (or ``None`` for
    unlimited) to allow :func:`issue_intermediate_ca` under it. Without ``common_name`` the CA
    is "planelink CA <8 hex digits of its key's SHA-256 fingerprint>".
    """
    key = generate_private_key(key_type)
    start, end = _window(not_before, validity, issuer=None)
    if common_name is None:
        common_name = f"{DEFAULT_CA_NAME} {key_fingerprint(key.public_key())[:8]}"
    name = _name(common_name, organizations)
    builder = _base_builder(name, name, key, start, end)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    )
    builder = builder.add_extension(_ca_key_usage(), critical=True)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    return CertificateBundle(certificate=builder.sign(key, hashes.SHA256()), private_key=key)


def issue_intermediate_ca(
    ca: CertificateBundle,
    *,
    common_name: str,
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_CA_VALIDITY,
    not_before: datetime | None = None,
    path_length: int | None = 0,
) -> CertificateBundle:
    """Issue an intermediate CA under ``ca`` (which must allow it via its path length)."""
    key = generate_private_key(key_type)
    builder = _issued_builder(ca, key, _name(common_name, ()), not_before, validity)
    builder = builder.add_extension(
        x509.BasicConstraints(ca=True, path_length=path_length), critical=True
    )
    builder = builder.add_extension(_ca_key_usage(), critical=True)
    return _sign(ca, builder, key)


def issue_server(
    ca: CertificateBundle,
    *,
    common_name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_LEAF_VALIDITY,
    not_before: datetime | None = None,
) -> CertificateBundle:
    """Issue a TLS server certificate (EKU serverAuth) for ``dns_names`` and ``ip_addresses``.

    Clients check the SANs, never the CN, so give at least one DNS name or IP address.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    return _issue_leaf(
        ca,
        name=_name(common_name, ()),
        sans=_sans(dns_names=dns_names, ip_addresses=ip_addresses, uris=()),
        extended_key_usages=(SERVER_AUTH,),
        key_type=key_type,
        validity=validity,
        not_before=not_before,
    )


def issue_client(
    ca: CertificateBundle,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    uris: Sequence[str] = (),
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_LEAF_VALIDITY,
    not_before: datetime | None = None,
    extended_key_usages: Sequence[x509.ObjectIdentifier] = (CLIENT_AUTH,),
) -> CertificateBundle:
    """Issue a TLS client certificate.

    A Kubernetes API server that trusts ``ca`` reads the subject CN as the user name and each
    O (``organizations``) as a group, e.g. ``common_name="admin"`` with
    ``organizations=["system:masters"]``.
    An empty ``extended_key_usages`` omits the EKU extension altogether.
    """
    return _issue_leaf(
        ca,
        name=_name(common_name, organizations),
        sans=_sans(dns_names=dns_names, ip_addresses=(), uris=uris),
        extended_key_usages=tuple(extended_key_usages),
        key_type=key_type,
        validity=validity,
        not_before=not_before,
    )


def issue_agent(
    ca: CertificateBundle,
    *,
    plane: PlaneRef | str,
    dns_names: Sequence[str] = (),
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_LEAF_VALIDITY,
    not_before: datetime | None = None,
) -> CertificateBundle:
    """Issue the client certificate an agent presents to the gateway for ``plane``.

    Identity (see :mod:`certs.identity`): URI SAN ``planelink://plane/<ns>/<name>`` and subject
    CN ``<ns>/<name>``; EKU clientAuth. ``dns_names`` are added as extra DNS SANs if given. The
    gateway verifies it with ``verify_client_certificate(..., expected_identity=plane_uri(plane))``.
    """
    # Checked again even when typed as a PlaneRef: a certificate must never carry a name that
    # plane_ref would refuse, whoever built the reference.
    ref = parse_plane_ref(plane) if isinstance(plane, str) else plane_ref(*plane)
    return issue_client(
        ca,
        common_name=plane_common_name(ref),
        dns_names=dns_names,
        uris=(plane_uri(ref),),
        key_type=key_type,
        validity=validity,
        not_before=not_before,
    )


def issue_peer(
    ca: CertificateBundle,
    *,
    common_name: str = PEER_SERVER_NAME,
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_LEAF_VALIDITY,
    not_before: datetime | None = None,
) -> CertificateBundle:
    """Issue a gateway replica's peer certificate: the server certificate of its peer listener
    and the client certificate it forwards with (EKU serverAuth and clientAuth), DNS SAN
    :data:`PEER_SERVER_NAME`. ``ca`` must be the peers' own CA, trusted by nothing else."""
    return _issue_leaf(
        ca,
        name=_name(common_name, ()),
        sans=_sans(dns_names=(PEER_SERVER_NAME,), ip_addresses=(), uris=()),
        extended_key_usages=(SERVER_AUTH, CLIENT_AUTH),
        key_type=key_type,
        validity=validity,
        not_before=not_before,
    )


def self_signed_client(
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    uris: Sequence[str] = (),
    key_type: KeyType = KeyType.ECDSA_P256,
    validity: timedelta = DEFAULT_LEAF_VALIDITY,
    not_before: datetime | None = None,
    extended_key_usages: Sequence[x509.ObjectIdentifier] = (CLIENT_AUTH,),
) -> CertificateBundle:
    """Create a self-signed (non-CA) client certificate.

    This is cert-manager's "pinned self-signed" case: the Secret's ``ca.crt`` is the same
    certificate as ``tls.crt``, and the peer trusts exactly those bytes.
    """
    key = generate_private_key(key_type)
    start, end = _window(not_before, validity, issuer=None)
    name = _name(common_name, organizations)
    builder = _base_builder(name, name, key, start, end)
    builder = _leaf_extensions(
        builder,
        key=key,
        sans=_sans(dns_names=dns_names, ip_addresses=(), uris=uris),
        extended_key_usages=tuple(extended_key_usages),
    )
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
    )
    return CertificateBundle(certificate=builder.sign(key, hashes.SHA256()), private_key=key)


# --- building blocks ---------------------------------------------------------------------------


def _issue_leaf(
    ca: CertificateBundle,
    *,
    name: x509.Name,
    sans: list[x509.GeneralName],
    extended_key_usages: tuple[x509.ObjectIdentifier, ...],
    key_type: KeyType,
    validity: timedelta,
    not_before: datetime | None,
) -> CertificateBundle:
    key = generate_private_key(key_type)
    builder = _issued_builder(ca, key, name, not_before, validity)
    builder = _leaf_extensions(builder, key=key, sans=sans, extended_key_usages=extended_key_usages)
    return _sign(ca, builder, key)


def _issued_builder(
    ca: CertificateBundle,
    key: PrivateKey,
    name: x509.Name,
    not_before: datetime | None,
    validity: timedelta,
) -> x509.CertificateBuilder:
    if not ca.is_ca:
        raise ValueError(
            f"{ca.certificate.subject.rfc4514_string()!r} is not a CA certificate "
            "(BasicConstraints cA is not set); it cannot issue certificates"
        )
    start, end = _window(not_before, validity, issuer=ca.certificate)
    builder = _base_builder(name, ca.certificate.subject, key, start, end)
    return builder.add_extension(_authority_key_identifier(ca.certificate), critical=False)


def _sign(
    ca: CertificateBundle, builder: x509.CertificateBuilder, key: PrivateKey
) -> CertificateBundle:
    cert = builder.sign(ca.private_key, hashes.SHA256())
    return CertificateBundle(certificate=cert, private_key=key, chain=(ca.certificate, *ca.chain))


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: PrivateKey,
    start: datetime,
    end: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _leaf_extensions(
    builder: x509.CertificateBuilder,
    *,
    key: PrivateKey,
    sans: list[x509.GeneralName],
    extended_key_usages: tuple[x509.ObjectIdentifier, ...],
) -> x509.CertificateBuilder:
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    builder = builder.add_extension(
        _key_usage(digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
        critical=True,
    )
    if extended_key_usages:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(extended_key_usages)), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder


def _window(
    not_before: datetime | None, validity: timedelta, *, issuer: x509.Certificate | None
) -> tuple[datetime, datetime]:
    if validity <= timedelta(0):
        raise ValueError(f"validity must be positive, got {validity}")
    if not_before is None:
        now = datetime.now(UTC)
        start, end = now - CLOCK_SKEW, now + validity
    else:
        start = utc(not_before)
        end = start + validity
    if issuer is not None:
        end = min(end, issuer.not_valid_after_utc)
        if end <= start:
            raise ValueError(
                f"issuer {issuer.subject.rfc4514_string()!r} expires at "
                f"{issuer.not_valid_after_utc.isoformat()}, before the new certificate's "
                f"notBefore {start.isoformat()}"
            )
    return start, end


def _name(common_name: str, organizations: Sequence[str]) -> x509.Name:
    if isinstance(organizations, str):
        raise TypeError("organizations must be a sequence of strings, not a single string")
    if not common_name or len(common_name) > _CN_MAX:
        raise ValueError(
            f"common name must be 1 to {_CN_MAX} characters, got {len(common_name)}: "
            f"{common_name!r}"
        )
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    for org in organizations:
        if not org:
            raise ValueError("organization (group) names must not be empty")
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attributes)


def _sans(
    *, dns_names: Sequence[str], ip_addresses: Sequence[str], uris: Sequence[str]
) -> list[x509.GeneralName]:
    for label, values in (("dns_names", dns_names), ("ip_addresses", ip_addresses), ("uris", uris)):
        if isinstance(values, str):
            raise TypeError(f"{label} must be a sequence of strings, not a single string")
    sans: list[x509.GeneralName] = []
    for dns in dns_names:
        if not dns or not dns.isascii() or any(c.isspace() for c in dns):
            raise ValueError(f"invalid DNS name {dns!r}")
        sans.append(x509.DNSName(dns))
    for ip in ip_addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise ValueError(f"invalid IP address {ip!r}") from exc
    for uri in uris:
        if "://" not in uri and not uri.startswith(("urn:", "spiffe:")):
            raise ValueError(f"invalid URI {uri!r} (expected scheme://...)")
        sans.append(x509.UniformResourceIdentifier(uri))
    return sans


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _ca_key_usage() -> x509.KeyUsage:
    return _key_usage(key_cert_sign=True, crl_sign=True)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
