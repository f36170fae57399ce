"""Issuing certificates and reading them back with describe()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import certs


def test_create_ca_profile(ca: certs.CertificateBundle) -> None:
    info = certs.describe(ca.certificate)
    assert info.is_ca
    assert info.path_length == 0
    assert info.self_signed
    assert info.subject == info.issuer == "CN=planelink test CA"
    assert info.key_usages == ("keyCertSign", "cRLSign")
    assert info.extended_key_usages is None
    assert info.key_type == "ECDSA P-256"
    assert info.key_size == 256
    assert ca.chain == ()
    assert ca.is_ca
    assert ca.root is ca.certificate
    assert ca.chain_pem() == ca.certificate_pem()
    ext = ca.certificate.extensions
    assert ext.get_extension_for_class(x509.BasicConstraints).critical
    assert ext.get_extension_for_class(x509.KeyUsage).critical
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_ca_validity_and_backdating() -> None:
    before = datetime.now(UTC)
    bundle = certs.create_ca("short", validity=timedelta(days=2))
    info = certs.describe(bundle.certificate)
    # not_before is backdated by the clock-skew margin; not_after is a full validity from now.
    assert before - certs.CLOCK_SKEW - timedelta(seconds=2) <= info.not_before
    assert info.not_before <= before - certs.CLOCK_SKEW + timedelta(seconds=2)
    assert info.not_after - before >= timedelta(days=2) - timedelta(seconds=2)


def test_explicit_not_before_is_used_verbatim() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    bundle = certs.create_ca("future", not_before=start, validity=timedelta(days=10))
    assert bundle.certificate.not_valid_before_utc == start
    assert bundle.certificate.not_valid_after_utc == start + timedelta(days=10)


def test_naive_not_before_is_utc() -> None:
    bundle = certs.create_ca("naive", not_before=datetime(2030, 1, 1), validity=timedelta(days=1))
    assert bundle.certificate.not_valid_before_utc == datetime(2030, 1, 1, tzinfo=UTC)


def test_issue_server(ca: certs.CertificateBundle) -> None:
    server = certs.issue_server(
        ca,
        common_name="gateway",
        dns_names=["gateway.example.com", "localhost"],
        ip_addresses=["127.0.0.1", "::1"],
    )
    info = certs.describe(server.certificate)
    assert info.common_name == "gateway"
    assert info.issuer == "CN=planelink test CA"
    assert info.dns_names == ("gateway.example.com", "localhost")
    assert info.ip_addresses == ("127.0.0.1", "::1")
    assert info.extended_key_usages == ("serverAuth",)
    assert info.key_usages == ("digitalSignature",)
    assert not info.is_ca
    assert not info.self_signed
    assert server.chain == (ca.certificate,)
    assert server.root is ca.certificate
    assert server.chain_pem() == server.certificate_pem() + ca.certificate_pem()
    server.certificate.verify_directly_issued_by(ca.certificate)
    aki = server.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert aki.value.key_identifier == ca_ski.value.digest


def test_issue_server_requires_a_name(ca: certs.CertificateBundle) -> None:
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        certs.issue_server(ca, common_name="x")


def test_issue_client_kubernetes_user_and_groups(ca: certs.CertificateBundle) -> None:
    client = certs.issue_client(ca, common_name="admin", organizations=["system:masters", "ops"])
    info = certs.describe(client.certificate)
    assert info.common_name == "admin"
    assert info.organizations == ("system:masters", "ops")
    assert info.extended_key_usages == ("clientAuth",)
    assert info.dns_names == info.uris == info.ip_addresses == ()
    assert info.identities == ("admin",)


def test_issue_client_without_eku(ca: certs.CertificateBundle) -> None:
    client = certs.issue_client(ca, common_name="any", extended_key_usages=())
    info = certs.describe(client.certificate)
    assert info.extended_key_usages is None
    assert info.allows_client_auth
    assert info.allows_server_auth


def test_issue_agent_identity(agent: certs.CertificateBundle, plane: certs.PlaneRef) -> None:
    info = certs.describe(agent.certificate)
    assert info.common_name == "my-org/prod"
    assert info.uris == ("planelink://plane/my-org/prod",)
    assert info.extended_key_usages == ("clientAuth",)
    assert certs.planes_in_certificate(agent.certificate) == (plane,)


def test_issue_agent_accepts_string_and_extra_dns(ca: certs.CertificateBundle) -> None:
    bundle = certs.issue_agent(ca, plane="team-a/edge-1", dns_names=["agent.edge-1.internal"])
    info = certs.describe(bundle.certificate)
    assert info.uris == ("planelink://plane/team-a/edge-1",)
    assert info.dns_names == ("agent.edge-1.internal",)


def test_issue_agent_long_plane_ref_shortens_cn_only(ca: certs.CertificateBundle) -> None:
    ref = certs.plane_ref(namespace="n" * 63, name="m" * 63)
    info = certs.describe(certs.issue_agent(ca, plane=ref).certificate)
    assert info.common_name is not None
    assert len(info.common_name) == 64
    assert info.common_name.endswith("...")
    assert info.uris == (certs.plane_uri(ref),)


def test_self_signed_client() -> None:
    bundle = certs.self_signed_client(common_name="cluster-agent", dns_names=["cluster-agent"])
    info = certs.describe(bundle.certificate)
    assert info.self_signed
    assert not info.is_ca
    assert info.extended_key_usages == ("clientAuth",)
    assert bundle.chain == ()
    assert bundle.root_pem() == bundle.certificate_pem()


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [
        (certs.KeyType.ECDSA_P256, "ECDSA P-256", 256),
        (certs.KeyType.RSA_2048, "RSA", 2048),
        (certs.KeyType.RSA_3072, "RSA", 3072),
        (certs.KeyType.RSA_4096, "RSA", 4096),
    ],
)
def test_key_types(
    ca: certs.CertificateBundle, key_type: certs.KeyType, kind: str, size: int
) -> None:
    bundle = certs.issue_server(ca, common_name="s", dns_names=["s"], key_type=key_type)
    info = certs.describe(bundle.certificate)
    assert (info.key_type, info.key_size) == (kind, size)
    expected_usages = (
        ("digitalSignature", "keyEncipherment") if key_type.is_rsa else ("digitalSignature",)
    )
    assert info.key_usages == expected_usages
    key_class = rsa.RSAPrivateKey if key_type.is_rsa else ec.EllipticCurvePrivateKey
    assert isinstance(bundle.private_key, key_class)


def test_rsa_ca_can_issue() -> None:
    rsa_ca = certs.create_ca("rsa ca", key_type=certs.KeyType.RSA_2048)
    leaf = certs.issue_client(rsa_ca, common_name="c")
    leaf.certificate.verify_directly_issued_by(rsa_ca.certificate)
    certs.verify_client_certificate(leaf.certificate, trusted=[rsa_ca.certificate])


@pytest.mark.parametrize("text", ["rsa-2048", "RSA_2048", "rsa_2048", " Rsa-2048 "])
def test_key_type_parse(text: str) -> None:
    assert certs.KeyType.parse(text) is certs.KeyType.RSA_2048


def test_key_type_parse_unknown() -> None:
    with pytest.raises(ValueError, match="choose one of: ecdsa-p256, rsa-2048"):
        certs.KeyType.parse("dsa")


def test_serial_numbers_are_random(ca: certs.CertificateBundle) -> None:
    serials = {certs.issue_client(ca, common_name="c").certificate.serial_number for _ in range(5)}
    assert len(serials) == 5
    assert all(0 < s < 2**159 for s in serials)


def test_leaf_is_clamped_to_issuer_expiry() -> None:
    short_ca = certs.create_ca("short-lived", validity=timedelta(days=1))
    leaf = certs.issue_client(short_ca, common_name="c", validity=timedelta(days=365))
    assert leaf.certificate.not_valid_after_utc == short_ca.certificate.not_valid_after_utc


def test_issue_after_issuer_expiry_is_refused() -> None:
    old_ca = certs.create_ca(
        "old", not_before=datetime(2000, 1, 1, tzinfo=UTC), validity=timedelta(days=1)
    )
    with pytest.raises(ValueError, match="expires at 2000-01-02"):
        certs.issue_client(old_ca, common_name="c")


def test_leaf_cannot_issue(agent: certs.CertificateBundle) -> None:
    with pytest.raises(ValueError, match="is not a CA certificate"):
        certs.issue_client(agent, common_name="c")


def test_intermediate_ca() -> None:
    root = certs.create_ca("root", path_length=1)
    inter = certs.issue_intermediate_ca(root, common_name="intermediate")
    leaf = certs.issue_agent(inter, plane="a/b")
    assert inter.chain == (root.certificate,)
    assert leaf.chain == (inter.certificate, root.certificate)
    assert leaf.root is root.certificate
    assert certs.describe(inter.certificate).is_ca


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"common_name": ""}, "common name must be 1 to 64 characters"),
        ({"common_name": "x" * 65}, "common name must be 1 to 64 characters"),
        ({"common_name": "c", "organizations": [""]}, "must not be empty"),
        ({"common_name": "c", "dns_names": ["bad name"]}, "invalid DNS name"),
        ({"common_name": "c", "dns_names": ["bücher.de"]}, "invalid DNS name"),
        ({"common_name": "c", "uris": ["no-scheme"]}, "invalid URI"),
        ({"common_name": "c", "validity": timedelta(0)}, "validity must be positive"),
    ],
)
def test_issue_client_rejects_bad_input(
    ca: certs.CertificateBundle, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        certs.issue_client(ca, **kwargs)


def test_bad_ip_address(ca: certs.CertificateBundle) -> None:
    with pytest.raises(ValueError, match=r"invalid IP address '300\.1\.1\.1'"):
        certs.issue_server(ca, common_name="s", ip_addresses=["300.1.1.1"])


def test_single_string_instead_of_list_is_refused(ca: certs.CertificateBundle) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        certs.issue_server(ca, common_name="s", dns_names="example.com")
    with pytest.raises(TypeError, match="not a single string"):
        certs.issue_client(ca, common_name="s", organizations="system:masters")


def test_describe_render(agent: certs.CertificateBundle) -> None:
    info = certs.describe(agent.certificate)
    text = info.render()
    assert "Subject:        CN=my-org/prod" in text
    assert "URIs:           planelink://plane/my-org/prod" in text
    assert "Ext. key usage: clientAuth" in text
    assert "valid, 364 days left" in text
    assert info.sha256_fingerprint in text
    assert str(info) == text
    later = info.not_after + timedelta(days=3)
    assert "EXPIRED 3 days ago" in info.render(at=later)
    assert "NOT YET VALID" in info.render(at=info.not_before - timedelta(hours=2))
    assert info.remaining(at=info.not_after) == timedelta(0)
    assert info.is_valid_at(info.not_before)
    assert not info.is_valid_at(later)


def test_fingerprint_format(ca: certs.CertificateBundle) -> None:
    fp = certs.describe(ca.certificate).sha256_fingerprint
    parts = fp.split(":")
    assert len(parts) == 32
    assert all(len(p) == 2 and p == p.upper() for p in parts)


def test_eku_name_unknown_oid() -> None:
    assert certs.eku_name(x509.ObjectIdentifier("1.2.3.4")) == "1.2.3.4"
