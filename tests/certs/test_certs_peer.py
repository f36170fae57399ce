"""`planelink certs peer` and `certs.issue_peer`: the replicas' own CA and their certificate."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import certs
from planelink import certs_cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = certs_cli.main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def usages(certificate: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def dns_names(certificate: x509.Certificate) -> list[str]:
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sans.get_values_for_type(x509.DNSName)


def test_a_peer_certificate_serves_both_ways_under_the_fixed_name() -> None:
    ca = certs.create_ca("peers")
    peer = certs.issue_peer(ca)
    assert usages(peer.certificate) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert dns_names(peer.certificate) == [certs.PEER_SERVER_NAME]
    certs.verify_client_certificate(peer.certificate, trusted=[ca.certificate])


def test_the_command_creates_the_peer_ca_once_and_reuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "peer-ca"
    code, _, err = run(capsys, "peer", "--ca", str(ca_dir), "--out", str(tmp_path / "one"))
    assert code == 0
    assert "created the peer CA" in err
    assert stat.S_IMODE((ca_dir / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "one" / "tls.key").stat().st_mode) == 0o600
    first_ca = (ca_dir / "ca.crt").read_bytes()
    code, _, err = run(capsys, "peer", "--ca", str(ca_dir), "--out", str(tmp_path / "two"))
    assert code == 0
    assert "created" not in err
    assert (ca_dir / "ca.crt").read_bytes() == first_ca
    assert (tmp_path / "two" / "ca.crt").read_bytes() == first_ca
    leaf = x509.load_pem_x509_certificates((tmp_path / "two" / "tls.crt").read_bytes())[0]
    assert dns_names(leaf) == [certs.PEER_SERVER_NAME]
    trusted = x509.load_pem_x509_certificate(first_ca)
    certs.verify_client_certificate(leaf, trusted=[trusted])


def test_the_command_prints_the_shared_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "peer", "--ca", str(tmp_path / "ca"), "--format", "secret")
    assert code == 0
    secret = yaml.safe_load(out)
    assert secret["metadata"]["name"] == certs.PEER_SECRET_NAME
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}


def test_half_a_ca_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "ca.crt").write_bytes(certs.create_ca("x").certificate_pem())
    code, _, err = run(capsys, "peer", "--ca", str(ca_dir), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "only one of ca.crt and ca.key" in err
    assert not (tmp_path / "out").exists()
