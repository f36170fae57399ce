"""PEM decoding and safe file writing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import certs


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bundle_pem_round_trip(agent: certs.CertificateBundle) -> None:
    loaded = certs.CertificateBundle.from_pem(agent.chain_pem(), agent.private_key_pem())
    assert loaded.certificate == agent.certificate
    assert loaded.chain == agent.chain
    assert loaded.private_key_pem() == agent.private_key_pem()
    assert agent.private_key_pem().startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_bundle_key_mismatch(agent: certs.CertificateBundle, ca: certs.CertificateBundle) -> None:
    with pytest.raises(certs.KeyMismatchError, match="does not match certificate 'CN=my-org/prod'"):
        certs.CertificateBundle.from_pem(agent.certificate_pem(), ca.private_key_pem())


def test_load_pem_certificates_bundle(
    agent: certs.CertificateBundle, ca: certs.CertificateBundle
) -> None:
    data = b"# comment\n" + agent.private_key_pem() + agent.chain_pem() + b"trailing text\n"
    assert certs.load_pem_certificates(data) == [agent.certificate, ca.certificate]


def test_load_pem_certificates_crlf(ca: certs.CertificateBundle) -> None:
    data = ca.certificate_pem().replace(b"\n", b"\r\n")
    assert certs.load_pem_certificates(data) == [ca.certificate]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no PEM data found"),
        (b"\x00\x01garbage", "no PEM data found"),
        (b"-----BEGIN CERTIFICATE-----\nabc\n", "no PEM data found"),
        (
            b"-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n",
            r"no CERTIFICATE PEM block found: the data holds a public key, not a private key",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n",
            "certificate #1 in the PEM data does not decode",
        ),
    ],
)
def test_load_pem_certificates_garbage(data: bytes, message: str) -> None:
    with pytest.raises(certs.PemError, match=message):
        certs.load_pem_certificates(data)


def test_load_pem_certificates_rejects_str() -> None:
    with pytest.raises(certs.PemError, match="expected PEM bytes, got str"):
        certs.load_pem_certificates("-----BEGIN CERTIFICATE-----")  # type: ignore[arg-type]  # a str, as tested


def test_load_certificate_der(ca: certs.CertificateBundle) -> None:
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    assert certs.load_certificate(der) == ca.certificate
    with pytest.raises(certs.PemError, match="neither a PEM nor a DER certificate"):
        certs.load_certificate(b"nope")


@pytest.mark.parametrize(
    "fmt",
    [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
)
@pytest.mark.parametrize("key_type", [certs.KeyType.ECDSA_P256, certs.KeyType.RSA_2048])
def test_load_private_key_formats(
    key_type: certs.KeyType, fmt: serialization.PrivateFormat
) -> None:
    key = certs.generate_private_key(key_type)
    data = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
    assert certs.private_key_pem(certs.load_private_key(data)) == certs.private_key_pem(key)


def test_load_encrypted_private_key() -> None:
    key = certs.generate_private_key()
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    assert certs.load_private_key(data, password=b"s3cret").public_key() == key.public_key()
    with pytest.raises(certs.PemError, match="private key"):
        certs.load_private_key(data)
    with pytest.raises(certs.PemError, match="wrong password"):
        certs.load_private_key(data, password=b"wrong")


def test_load_private_key_unsupported_type() -> None:
    data = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(certs.PemError, match="unsupported private key type"):
        certs.load_private_key(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no private key PEM block found"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "does not decode"),
    ],
)
def test_load_private_key_garbage(data: bytes, message: str) -> None:
    with pytest.raises(certs.PemError, match=message):
        certs.load_private_key(data)


def test_write_pem_files(tmp_path: Path, agent: certs.CertificateBundle) -> None:
    out = tmp_path / "new" / "dir"
    cert_path, key_path = certs.write_pem_files(agent, out, cert_name="tls.crt", key_name="tls.key")
    assert (cert_path, key_path) == (out / "tls.crt", out / "tls.key")
    assert mode(key_path) == 0o600
    assert mode(cert_path) == 0o644
    assert cert_path.read_bytes() == agent.chain_pem()
    assert key_path.read_bytes() == agent.private_key_pem()
    assert sorted(p.name for p in out.iterdir()) == ["tls.crt", "tls.key"]  # no temp files left
    loaded = certs.CertificateBundle.from_files(cert_path, key_path)
    assert (loaded.certificate, loaded.chain) == (agent.certificate, agent.chain)
    assert loaded.private_key_pem() == agent.private_key_pem()


def test_write_pem_files_refuses_overwrite(
    tmp_path: Path, agent: certs.CertificateBundle, ca: certs.CertificateBundle
) -> None:
    (tmp_path / "tls.key").write_bytes(b"precious")
    with pytest.raises(certs.OutputExistsError, match=r"refusing to overwrite existing file\(s\)"):
        certs.write_pem_files(agent, tmp_path, cert_name="tls.crt", key_name="tls.key")
    # Nothing was written: not even the certificate whose name was free.
    assert not (tmp_path / "tls.crt").exists()
    assert (tmp_path / "tls.key").read_bytes() == b"precious"
    certs.write_pem_files(ca, tmp_path, cert_name="tls.crt", key_name="tls.key", overwrite=True)
    assert (tmp_path / "tls.key").read_bytes() == ca.private_key_pem()
    assert mode(tmp_path / "tls.key") == 0o600


def test_write_pem_files_same_names(tmp_path: Path, ca: certs.CertificateBundle) -> None:
    with pytest.raises(ValueError, match="must differ"):
        certs.write_pem_files(ca, tmp_path, cert_name="x.pem", key_name="x.pem")


def test_overwrite_tightens_mode_of_existing_key(
    tmp_path: Path, ca: certs.CertificateBundle
) -> None:
    key = tmp_path / "ca.key"
    key.write_bytes(b"old")
    key.chmod(0o644)
    certs.write_pem_files(ca, tmp_path, cert_name="ca.crt", key_name="ca.key", overwrite=True)
    assert mode(key) == 0o600


def test_write_file(tmp_path: Path) -> None:
    path = certs.write_file(tmp_path / "a.yaml", b"x", mode=0o640)
    assert mode(path) == 0o640
    with pytest.raises(
        certs.OutputExistsError, match=r"refusing to overwrite existing file .*a\.yaml"
    ):
        certs.write_file(path, b"y", mode=0o640)
    assert isinstance(certs.OutputExistsError("x"), FileExistsError)
    assert path.read_bytes() == b"x"
