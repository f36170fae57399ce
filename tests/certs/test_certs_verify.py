"""verify_client_certificate(): what the gateway accepts, and the reason for each refusal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

import certs
from certs import RejectionReason

PAST = datetime(2020, 1, 1, tzinfo=UTC)


def rejected(
    reason: RejectionReason, call: Callable[..., object], *args: object, **kwargs: object
) -> str:
    """Run ``call``, assert it raises CertificateRejected with ``reason``; return the message."""
    with pytest.raises(certs.CertificateRejected) as info:
        call(*args, **kwargs)
    assert info.value.reason is reason, str(info.value)
    assert str(info.value) == f"{reason.value}: {info.value.message}"
    return info.value.message


def fingerprints(cert: x509.Certificate) -> str:
    """How a message tells a CA from its namesakes: the start of its SHA-256 fingerprint (as
    `certs inspect` prints it) and of its key id."""
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()[:23]
    key_id = x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    return f"[SHA-256 {fingerprint}..., key id {key_id.hex(':').upper()[:23]}...]"


def key_id_of_issuer(cert: x509.Certificate) -> str:
    """The key id `cert` names its issuer's key by (what the issuer's SKI must equal)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    return f"[key id {aki.key_identifier.hex(':').upper()[:23]}...]"


def test_accepts_ca_issued_agent(
    ca: certs.CertificateBundle, agent: certs.CertificateBundle, plane: certs.PlaneRef
) -> None:
    info = certs.verify_client_certificate(
        agent.certificate, trusted=[ca.certificate], expected_identity=certs.plane_uri(plane)
    )
    assert info == certs.describe(agent.certificate)


@pytest.mark.parametrize("encoding", [serialization.Encoding.DER, serialization.Encoding.PEM])
def test_accepts_bytes(
    ca: certs.CertificateBundle,
    agent: certs.CertificateBundle,
    encoding: serialization.Encoding,
) -> None:
    data = agent.certificate.public_bytes(encoding)
    info = certs.verify_client_certificate(data, trusted=[ca.certificate])
    assert info.uris == ("planelink://plane/my-org/prod",)


def test_accepts_with_several_trusted(
    ca: certs.CertificateBundle, other_ca: certs.CertificateBundle, agent: certs.CertificateBundle
) -> None:
    certs.verify_client_certificate(
        agent.certificate, trusted=[other_ca.certificate, ca.certificate]
    )


def test_accepts_without_eku_and_without_san(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_client(ca, common_name="legacy", extended_key_usages=())
    info = certs.verify_client_certificate(
        leaf.certificate, trusted=[ca.certificate], expected_identity="legacy"
    )
    assert info.extended_key_usages is None


def test_accepts_rsa_leaf(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_agent(ca, plane="a/b", key_type=certs.KeyType.RSA_2048)
    certs.verify_client_certificate(leaf.certificate, trusted=[ca.certificate])


def test_accepts_via_intermediate() -> None:
    root = certs.create_ca("root", path_length=1)
    inter = certs.issue_intermediate_ca(root, common_name="intermediate")
    leaf = certs.issue_agent(inter, plane="a/b")
    certs.verify_client_certificate(
        leaf.certificate, trusted=[root.certificate], intermediates=[inter.certificate]
    )
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[root.certificate],
    )
    assert (
        f"issued by 'CN=intermediate' {key_id_of_issuer(leaf.certificate)}, which is not a "
        f"trusted CA (trusted: 'CN=root' {fingerprints(root.certificate)})"
    ) in message


def test_accepts_pinned_self_signed() -> None:
    pinned = certs.self_signed_client(common_name="cluster-agent", uris=["planelink://plane/a/b"])
    info = certs.verify_client_certificate(
        pinned.certificate,
        trusted=[pinned.certificate],
        expected_identity="planelink://plane/a/b",
    )
    assert info.self_signed


def test_accepts_pinned_self_signed_ca_certificate() -> None:
    # cert-manager's self-signed issuer with isCA: true - the webpki EE profile would refuse it,
    # but trusting the exact bytes is what ca.crt == tls.crt means.
    pinned = certs.create_ca("cluster-agent")
    certs.verify_client_certificate(pinned.certificate, trusted=[pinned.certificate])


def test_pinned_self_signed_still_checks_expiry_and_eku() -> None:
    expired = certs.self_signed_client(
        common_name="old", not_before=PAST, validity=timedelta(days=1)
    )
    message = rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        expired.certificate,
        trusted=[expired.certificate],
    )
    assert "expired at 2020-01-02T00:00:00Z" in message
    server_only = certs.self_signed_client(
        common_name="srv", extended_key_usages=[certs.SERVER_AUTH]
    )
    rejected(
        RejectionReason.NOT_CLIENT_AUTH,
        certs.verify_client_certificate,
        server_only.certificate,
        trusted=[server_only.certificate],
    )


def test_rejects_self_signed_not_pinned() -> None:
    one = certs.self_signed_client(common_name="one")
    two = certs.self_signed_client(common_name="two")
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        one.certificate,
        trusted=[two.certificate],
    )
    assert (
        "is self-signed and is not one of the 1 trusted certificate(s) "
        f"('CN=two' {fingerprints(two.certificate)})"
    ) in message


def test_rejects_expired(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_agent(ca, plane="a/b", not_before=PAST, validity=timedelta(days=30))
    message = rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[ca.certificate],
    )
    assert message.startswith("client certificate 'CN=a/b' (serial ")
    assert "expired at 2020-01-31T00:00:00Z, " in message
    assert " days before the verification time 20" in message


def test_rejects_not_yet_valid(ca: certs.CertificateBundle) -> None:
    start = datetime.now(UTC) + timedelta(days=2)
    leaf = certs.issue_agent(ca, plane="a/b", not_before=start)
    message = rejected(
        RejectionReason.NOT_YET_VALID,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[ca.certificate],
    )
    assert "is not valid before" in message
    assert "check the clocks" in message
    # ...and it is accepted once its time has come.
    certs.verify_client_certificate(
        leaf.certificate, trusted=[ca.certificate], at=start + timedelta(seconds=1)
    )


def test_validity_bounds_are_inclusive(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_agent(ca, plane="a/b")
    info = certs.describe(leaf.certificate)
    for moment in (info.not_before, info.not_after):
        certs.verify_client_certificate(leaf.certificate, trusted=[ca.certificate], at=moment)
    rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[ca.certificate],
        at=info.not_after + timedelta(seconds=1),
    )


def test_naive_at_is_utc(ca: certs.CertificateBundle, agent: certs.CertificateBundle) -> None:
    naive_future = (agent.certificate.not_valid_after_utc + timedelta(days=1)).replace(tzinfo=None)
    rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        agent.certificate,
        trusted=[ca.certificate],
        at=naive_future,
    )


def test_rejects_wrong_ca(
    other_ca: certs.CertificateBundle, agent: certs.CertificateBundle
) -> None:
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        agent.certificate,
        trusted=[other_ca.certificate],
    )
    assert (
        f"was issued by 'CN=planelink test CA' {key_id_of_issuer(agent.certificate)}, which is "
        "not a trusted CA"
    ) in message
    assert f"(trusted: 'CN=some other CA' {fingerprints(other_ca.certificate)})" in message


def test_rejects_recreated_ca_with_same_name(agent: certs.CertificateBundle) -> None:
    impostor = certs.create_ca("planelink test CA")
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        agent.certificate,
        trusted=[impostor.certificate],
    )
    # Two CAs of one name: the key ids tell them apart.
    named = key_id_of_issuer(agent.certificate)
    assert f"names issuer 'CN=planelink test CA' {named}, but its signature does not verify" in (
        message
    )
    assert f"('CN=planelink test CA' {fingerprints(impostor.certificate)})" in message
    assert named.removeprefix("[key id ") not in fingerprints(impostor.certificate)


def test_rejects_when_issuing_ca_not_yet_valid() -> None:
    old_ca = certs.create_ca("old CA", not_before=PAST, validity=timedelta(days=3650))
    # The leaf is valid from before the CA is: verify at a moment in between.
    early_leaf = certs.issue_client(
        old_ca, common_name="c", not_before=PAST - timedelta(days=10), validity=timedelta(days=30)
    )
    message = rejected(
        RejectionReason.NOT_YET_VALID,
        certs.verify_client_certificate,
        early_leaf.certificate,
        trusted=[old_ca.certificate],
        at=PAST - timedelta(days=1),
    )
    assert "chains to trusted CA 'CN=old CA', which is not valid before 2020-01-01T00:00:00Z" in (
        message
    )


def test_rejects_when_issuing_ca_expired_but_leaf_is_not() -> None:
    ca_start = datetime.now(UTC) - timedelta(days=10)
    short_ca = certs.create_ca("short CA", not_before=ca_start, validity=timedelta(days=20))
    leaf = certs.issue_client(short_ca, common_name="c")
    # Trust a CA certificate that has already expired, same key and name (an un-renewed CA).
    expired_ca_cert = (
        x509.CertificateBuilder()
        .subject_name(short_ca.certificate.subject)
        .issuer_name(short_ca.certificate.subject)
        .public_key(short_ca.private_key.public_key())
        .serial_number(1)
        .not_valid_before(ca_start)
        .not_valid_after(ca_start + timedelta(days=1))
    )
    for ext in short_ca.certificate.extensions:
        expired_ca_cert = expired_ca_cert.add_extension(ext.value, critical=ext.critical)
    expired = expired_ca_cert.sign(short_ca.private_key, hashes.SHA256())
    message = rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[expired],
    )
    assert "chains to trusted CA 'CN=short CA', which expired at" in message


def test_rejects_server_auth_only(ca: certs.CertificateBundle) -> None:
    server = certs.issue_server(ca, common_name="gw", dns_names=["gw.example.com"])
    message = rejected(
        RejectionReason.NOT_CLIENT_AUTH,
        certs.verify_client_certificate,
        server.certificate,
        trusted=[ca.certificate],
    )
    assert "its extended key usage is [serverAuth] and does not include clientAuth" in message


def test_rejects_any_extended_key_usage(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_client(
        ca, common_name="c", extended_key_usages=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]
    )
    rejected(
        RejectionReason.NOT_CLIENT_AUTH,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[ca.certificate],
    )


def test_chain_only_verification_ignores_eku(ca: certs.CertificateBundle) -> None:
    server = certs.issue_server(ca, common_name="gw", dns_names=["gw.example.com"])
    info = certs.verify_certificate_chain(server.certificate, trusted=[ca.certificate])
    assert info.extended_key_usages == ("serverAuth",)


def test_rejects_ca_certificate_as_client(ca: certs.CertificateBundle) -> None:
    # A CA certificate is not a client certificate unless pinned explicitly.
    inter_root = certs.create_ca("root", path_length=1)
    inter = certs.issue_intermediate_ca(inter_root, common_name="intermediate")
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        inter.certificate,
        trusted=[inter_root.certificate],
    )
    assert "basicConstraints.cA must not be asserted" in message
    assert "encountered processing" not in message


@pytest.mark.parametrize(
    "identity",
    ["planelink://plane/other/prod", "my-org/prod", "prod", "planelink://plane/my-org/prod/"],
)
def test_rejects_identity_mismatch(
    ca: certs.CertificateBundle, agent: certs.CertificateBundle, identity: str
) -> None:
    # The CN "my-org/prod" is informational: a certificate with SANs is matched on SANs only.
    message = rejected(
        RejectionReason.IDENTITY_MISMATCH,
        certs.verify_client_certificate,
        agent.certificate,
        trusted=[ca.certificate],
        expected_identity=identity,
    )
    assert f"identifies as [planelink://plane/my-org/prod], expected {identity!r}" in message


def test_identity_matches_dns_case_insensitively(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_agent(ca, plane="a/b", dns_names=["Agent.Example.COM"])
    certs.verify_client_certificate(
        leaf.certificate, trusted=[ca.certificate], expected_identity="agent.example.com"
    )
    certs.verify_client_certificate(
        leaf.certificate, trusted=[ca.certificate], expected_identity="planelink://plane/a/b"
    )


def test_cn_identity_when_no_san(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_client(ca, common_name="cluster-agent")
    certs.verify_client_certificate(
        leaf.certificate, trusted=[ca.certificate], expected_identity="cluster-agent"
    )
    rejected(
        RejectionReason.IDENTITY_MISMATCH,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[ca.certificate],
        expected_identity="someone-else",
    )


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"hello world",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        b"\x30\x82\x01\x00garbage",
    ],
)
def test_rejects_garbage(ca: certs.CertificateBundle, garbage: bytes) -> None:
    message = rejected(
        RejectionReason.MALFORMED,
        certs.verify_client_certificate,
        garbage,
        trusted=[ca.certificate],
    )
    assert message.startswith("client certificate does not decode:")


def test_rejects_truncated_der(ca: certs.CertificateBundle, agent: certs.CertificateBundle) -> None:
    der = agent.certificate.public_bytes(serialization.Encoding.DER)
    rejected(
        RejectionReason.MALFORMED,
        certs.verify_client_certificate,
        der[:-10],
        trusted=[ca.certificate],
    )


def test_rejects_with_no_trusted_certificates(agent: certs.CertificateBundle) -> None:
    message = rejected(
        RejectionReason.UNTRUSTED, certs.verify_client_certificate, agent.certificate, trusted=[]
    )
    assert "no trusted CA certificate is configured" in message


def test_check_order_expired_before_untrusted(other_ca: certs.CertificateBundle) -> None:
    stranger_ca = certs.create_ca("stranger", not_before=PAST)
    leaf = certs.issue_client(
        stranger_ca, common_name="c", not_before=PAST, validity=timedelta(days=1)
    )
    rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[other_ca.certificate],
    )


def test_rejection_reasons_are_condition_reasons() -> None:
    assert {r.value for r in RejectionReason} == {
        "Expired",
        "NotYetValid",
        "Untrusted",
        "NotClientAuth",
        "IdentityMismatch",
        "Malformed",
    }


def reissued(
    cert: x509.Certificate,
    *,
    signer: certs.PrivateKey,
    public_key: certs.PrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A copy of ``cert`` (same subject, issuer, key and extensions) with another validity."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(public_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    return builder.sign(signer, hashes.SHA256())


def test_rejects_expired_intermediate() -> None:
    root = certs.create_ca("root", path_length=1)
    inter = certs.issue_intermediate_ca(root, common_name="intermediate")
    leaf = certs.issue_agent(inter, plane="a/b")
    stale = reissued(
        inter.certificate,
        signer=root.private_key,
        public_key=inter.private_key,
        not_before=PAST,
        not_after=PAST + timedelta(days=1),
    )
    message = rejected(
        RejectionReason.EXPIRED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[root.certificate],
        intermediates=[stale],
    )
    assert "chains to intermediate CA 'CN=intermediate', which expired at 2020-01-02" in (message)


def test_rejects_chain_to_untrusted_root_sent_by_peer(
    agent: certs.CertificateBundle, other_ca: certs.CertificateBundle
) -> None:
    # The peer sends its whole chain, root included; that root is still not trusted.
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        agent.certificate,
        trusted=[other_ca.certificate],
        intermediates=list(agent.chain),
    )
    root = agent.chain[-1]
    assert (
        f"chains to root 'CN=planelink test CA' {fingerprints(root)}, which is not a trusted CA"
    ) in message


def test_rejects_intermediate_from_untrusted_root() -> None:
    root = certs.create_ca("root", path_length=1)
    inter = certs.issue_intermediate_ca(root, common_name="intermediate")
    leaf = certs.issue_agent(inter, plane="a/b")
    stranger = certs.create_ca("stranger")
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[stranger.certificate],
        intermediates=[inter.certificate],
    )
    assert (
        f"was issued via 'CN=intermediate' by 'CN=root' {key_id_of_issuer(inter.certificate)}, "
        "which is not a trusted CA"
    ) in message


def test_path_length_is_enforced() -> None:
    root = certs.create_ca("root")  # path length 0: may not sign CAs
    inter = certs.issue_intermediate_ca(root, common_name="intermediate")
    leaf = certs.issue_agent(inter, plane="a/b")
    message = rejected(
        RejectionReason.UNTRUSTED,
        certs.verify_client_certificate,
        leaf.certificate,
        trusted=[root.certificate],
        intermediates=[inter.certificate],
    )
    assert "does not chain to a trusted CA via 'CN=intermediate'" in message
    assert "path length" in message
