"""Deciding whether a peer certificate is acceptable, with a precise reason when it is not.

This is what the gateway runs on an agent's client certificate against the DataPlane's
``spec.agent.clientCA``. Two trust models are supported:

* **CA-issued leaf** - the leaf chains (optionally through ``intermediates``) to a certificate in
  ``trusted``. Chain building and signature checks use ``cryptography.x509.verification``
  (webpki profile, client verifier) with the leaf policy relaxed the way Go's crypto/tls is:
  SAN, EKU and AuthorityKeyIdentifier may be absent. The EKU is then checked here explicitly so
  the refusal names the cause.
* **Pinned certificate** - the leaf's exact DER bytes are in ``trusted`` (cert-manager's
  self-signed Secret where ``ca.crt == tls.crt``). No chain is built; the validity window, the
  EKU and (for a self-signed one) the self-signature are checked.

Checks run in a fixed order and the first failure is reported: decoding (MALFORMED), the leaf's
validity window (EXPIRED / NOT_YET_VALID), EKU (NOT_CLIENT_AUTH), chain (UNTRUSTED, or
EXPIRED / NOT_YET_VALID when it is the issuing CA that is out of its window), identity
(IDENTITY_MISMATCH). This module never reads files or sockets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification

from certs._time import human_duration, iso, utc_or_now
from certs.errors import CertificateRejected, PemError, RejectionReason
from certs.identity import PLANE_URI_PREFIX
from certs.inspect import CertificateInfo, describe
from certs.keys import key_id, short_hex
from certs.pem import load_certificate

_NOISE = re.compile(r"\s*\(encountered processing <Certificate.*\)\s*$", re.DOTALL)
_MAX_LISTED = 3
_MAX_DEPTH = 8


def verify_client_certificate(
    leaf: x509.Certificate | bytes,
    *,
    trusted: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
    expected_identity: str | None = None,
) -> CertificateInfo:
    """Accept ``leaf`` as a TLS client certificate, or raise :class:`CertificateRejected`.

    ``leaf`` may be a parsed certificate or PEM/DER bytes (e.g. what
    ``ssl.SSLObject.getpeercert(binary_form=True)`` returns). ``trusted`` are the CA
    certificates (or pinned certificates) from ``spec.agent.clientCA``; ``intermediates`` are
    untrusted certificates the peer sent along. ``at`` is the verification time (default: now;
    a naive datetime is taken as UTC).

    ``expected_identity``, if given, must equal one of the certificate's SANs (URI exactly, DNS
    case-insensitively, IP address) - or its subject CN when it has no SAN at all. For an agent
    pass ``plane_uri(plane)`` (see :mod:`certs.identity`); a certificate without SANs then matches
    on the CN ``<namespace>/<name>``, and a refusal names the plane the certificate names.

    Returns the leaf's :class:`CertificateInfo` on success.
    """
    moment = utc_or_now(at)
    cert, info = _parse(leaf)
    who = f"client certificate {info.label}"
    _check_window(info, moment, who=who)
    _check_client_auth(info)
    _check_trust(cert, info, trusted=trusted, intermediates=intermediates, moment=moment, who=who)
    if expected_identity is not None:
        _check_identity(info, expected_identity)
    return info


def verify_certificate_chain(
    leaf: x509.Certificate | bytes,
    *,
    trusted: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: datetime | None = None,
    kind: str = "certificate",
) -> CertificateInfo:
    """Check only that ``leaf`` is in its validity window and chains to ``trusted``.

    Like :func:`verify_client_certificate` without the EKU and identity checks: suitable for
    "was this issued by that CA?" questions about any certificate (server, client, CA).
    ``kind`` is how a refusal names the certificate (e.g. "the gateway's certificate").
    """
    moment = utc_or_now(at)
    cert, info = _parse(leaf)
    who = f"{kind} {info.label}"
    _check_window(info, moment, who=who)
    _check_trust(cert, info, trusted=trusted, intermediates=intermediates, moment=moment, who=who)
    return info


# --- the individual checks ---------------------------------------------------------------------


def _parse(leaf: x509.Certificate | bytes) -> tuple[x509.Certificate, CertificateInfo]:
    if isinstance(leaf, bytes | bytearray):
        try:
            leaf = load_certificate(bytes(leaf))
        except PemError as exc:
            raise CertificateRejected(
                RejectionReason.MALFORMED, f"client certificate does not decode: {exc}"
            ) from exc
    try:
        return leaf, describe(leaf)
    except ValueError as exc:
        raise CertificateRejected(
            RejectionReason.MALFORMED,
            f"client certificate {leaf.subject.rfc4514_string()!r} is malformed: {exc}",
        ) from exc


def _check_window(info: CertificateInfo, moment: datetime, *, who: str) -> None:
    if moment > info.not_after:
        raise CertificateRejected(
            RejectionReason.EXPIRED,
            f"{who} expired at {iso(info.not_after)}, "
            f"{human_duration(moment - info.not_after)} before the verification time "
            f"{iso(moment)}",
        )
    if moment < info.not_before:
        raise CertificateRejected(
            RejectionReason.NOT_YET_VALID,
            f"{who} is not valid before {iso(info.not_before)}, "
            f"{human_duration(info.not_before - moment)} after the verification time "
            f"{iso(moment)} (check the clocks of issuer and verifier)",
        )


def _check_client_auth(info: CertificateInfo) -> None:
    if info.allows_client_auth:
        return
    usages = ", ".join(info.extended_key_usages or ()) or "empty"
    raise CertificateRejected(
        RejectionReason.NOT_CLIENT_AUTH,
        f"client certificate {info.label} is not for client authentication: its extended key "
        f"usage is [{usages}] and does not include clientAuth",
    )


def _check_trust(
    cert: x509.Certificate,
    info: CertificateInfo,
    *,
    trusted: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    moment: datetime,
    who: str,
) -> None:
    if not trusted:
        raise CertificateRejected(
            RejectionReason.UNTRUSTED,
            f"{who} cannot be verified: no trusted CA certificate is configured",
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    if any(t.public_bytes(serialization.Encoding.DER) == der for t in trusted):
        _check_pinned(cert, info)
        return
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(trusted)))
        .time(moment)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=_leaf_policy(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, list(intermediates))
    except verification.VerificationError as exc:
        raise _diagnose(
            cert,
            trusted=trusted,
            intermediates=intermediates,
            moment=moment,
            detail=str(exc),
            who=who,
        ) from exc


def _check_pinned(cert: x509.Certificate, info: CertificateInfo) -> None:
    if cert.subject == cert.issuer and not info.self_signed:
        raise CertificateRejected(
            RejectionReason.MALFORMED,
            f"pinned self-signed client certificate {info.label} has an invalid signature",
        )


def _check_identity(info: CertificateInfo, expected: str) -> None:
    wanted = expected.strip()
    if wanted in info.uris or wanted in info.ip_addresses:
        return
    if wanted.lower() in (d.lower() for d in info.dns_names):
        return
    if not (info.uris or info.dns_names or info.ip_addresses) and info.common_name in (
        wanted,
        _plane_of(wanted),
    ):
        return  # no SAN at all: the CN is the name (for a plane, "<namespace>/<name>")
    names = ", ".join(info.identities) or "nothing"
    raise CertificateRejected(
        RejectionReason.IDENTITY_MISMATCH,
        f"client certificate {info.label} identifies as [{names}], expected {wanted!r}"
        + _plane_mismatch(info, wanted),
    )


def _plane_of(identity: str) -> str | None:
    """``<namespace>/<name>`` for a plane URI, None for any other identity."""
    if identity.startswith(PLANE_URI_PREFIX):
        return identity.removeprefix(PLANE_URI_PREFIX)
    return None


def _plane_mismatch(info: CertificateInfo, wanted: str) -> str:
    """For an agent: which plane its certificate names, and which it claimed."""
    claimed = _plane_of(wanted)
    if claimed is None:
        return ""
    named = [plane for uri in info.uris if (plane := _plane_of(uri)) is not None]
    if named:
        return f": it names plane {', '.join(named)}, but the agent claimed plane {claimed}"
    return (
        f": it names no plane, but the agent claimed plane {claimed} (an agent certificate names "
        f"its plane in the URI SAN {wanted}, as `planelink certs issue-agent` writes it)"
    )


def _leaf_policy() -> verification.ExtensionPolicy:
    agnostic = verification.Criticality.AGNOSTIC
    return (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, agnostic, None)
        .may_be_present(x509.ExtendedKeyUsage, agnostic, None)
        .may_be_present(x509.AuthorityKeyIdentifier, agnostic, None)
    )


def _diagnose(
    cert: x509.Certificate,
    *,
    trusted: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    moment: datetime,
    detail: str,
    who: str,
) -> CertificateRejected:
    """Turn a verifier failure into the most specific reason and message we can establish.

    Walks up from the leaf, one issuer at a time, the way a chain builder would, and reports
    the first link that is missing, does not verify, or is outside its validity window.
    """
    untrusted = RejectionReason.UNTRUSTED
    if cert.subject == cert.issuer:
        return CertificateRejected(
            untrusted,
            f"{who} is self-signed and is not one of the {len(trusted)} trusted "
            f"certificate(s) ({_names(trusted)})",
        )
    current, seen = cert, {cert.public_bytes(serialization.Encoding.DER)}
    for _ in range(_MAX_DEPTH):
        via = "" if current is cert else f" via {_subject(current)}"
        anchors = [c for c in trusted if _signed_by(current, c)]
        if anchors:
            out_of_window = _window_problem(anchors[0], moment, who=who, role="trusted CA")
            return out_of_window or CertificateRejected(
                untrusted, f"{who} does not chain to a trusted CA{via}: {_NOISE.sub('', detail)}"
            )
        links = [
            c
            for c in intermediates
            if c.public_bytes(serialization.Encoding.DER) not in seen and _signed_by(current, c)
        ]
        if not links:
            return _missing_issuer(
                current, who=who, via=via, trusted=trusted, intermediates=intermediates
            )
        link = links[0]
        if link.subject == link.issuer:
            return CertificateRejected(
                untrusted,
                f"{who} chains{via} to root {_identified(link)}, which is not a trusted CA "
                f"(trusted: {_names(trusted)})",
            )
        out_of_window = _window_problem(link, moment, who=who, role="intermediate CA")
        if out_of_window:
            return out_of_window
        current = link
        seen.add(link.public_bytes(serialization.Encoding.DER))
    return CertificateRejected(
        untrusted, f"{who} does not chain to a trusted CA: {_NOISE.sub('', detail)}"
    )


def _missing_issuer(
    cert: x509.Certificate,
    *,
    who: str,
    via: str,
    trusted: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
) -> CertificateRejected:
    issuer = _issuer(cert)
    namesakes = [c for c in (*trusted, *intermediates) if c.subject == cert.issuer]
    if namesakes:
        return CertificateRejected(
            RejectionReason.UNTRUSTED,
            f"{who}{via} names issuer {issuer}, but its signature does not verify with the key "
            f"of the trusted CA of that name ({_names(namesakes)}): two CAs share the name (was "
            "the CA re-created? re-issue the certificate or trust the CA that issued it)",
        )
    return CertificateRejected(
        RejectionReason.UNTRUSTED,
        f"{who} was issued{via} by {issuer}, which is not a trusted CA "
        f"(trusted: {_names(trusted)})",
    )


def _window_problem(
    ca: x509.Certificate, moment: datetime, *, who: str, role: str
) -> CertificateRejected | None:
    if moment > ca.not_valid_after_utc:
        return CertificateRejected(
            RejectionReason.EXPIRED,
            f"{who} chains to {role} {_subject(ca)}, which expired at "
            f"{iso(ca.not_valid_after_utc)}",
        )
    if moment < ca.not_valid_before_utc:
        return CertificateRejected(
            RejectionReason.NOT_YET_VALID,
            f"{who} chains to {role} {_subject(ca)}, which is not valid before "
            f"{iso(ca.not_valid_before_utc)}",
        )
    return None


def _subject(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _identified(cert: x509.Certificate) -> str:
    """A CA's subject with what tells it from another of the same name: the start of its
    SHA-256 fingerprint (as `certs inspect` prints it) and of its key id."""
    fingerprint = short_hex(cert.fingerprint(hashes.SHA256()))
    return f"{_subject(cert)} [SHA-256 {fingerprint}..., key id {key_id(cert.public_key())}...]"


def _issuer(cert: x509.Certificate) -> str:
    """The issuer `cert` names, with the id of the key that signed it when it says so."""
    issuer = repr(cert.issuer.rfc4514_string())
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return issuer
    if aki.key_identifier is None:
        return issuer
    return f"{issuer} [key id {short_hex(aki.key_identifier)}...]"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names(certs: Sequence[x509.Certificate]) -> str:
    names = [_identified(c) for c in certs[:_MAX_LISTED]]
    if len(certs) > _MAX_LISTED:
        names.append(f"and {len(certs) - _MAX_LISTED} more")
    return ", ".join(names)
