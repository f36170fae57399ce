"""A file given for the wrong TLS role: bytes in, one line naming file, contents, fix out."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

import certs
from certs import FileRole, FileSetting, WrongFileError

KEY_SETTING = FileSetting("--tls-key", "PLANELINK_GATEWAY_TLS_KEY", "tls.secretName")
CERT_SETTING = FileSetting("--tls-cert", "PLANELINK_GATEWAY_TLS_CERT", "tls.secretName")
CA_SETTING = FileSetting("--caller-ca", "PLANELINK_GATEWAY_CALLER_CA", "callerCA.secretName")


def key_error(data: bytes) -> str:
    with pytest.raises(WrongFileError) as caught:
        certs.private_key_for(data, path="pki/tls.key", setting=KEY_SETTING)
    return str(caught.value)


def certificate_error(data: bytes, role: FileRole = FileRole.SERVER_CERTIFICATE) -> str:
    setting = CA_SETTING if role is FileRole.CA_BUNDLE else CERT_SETTING
    with pytest.raises(WrongFileError) as caught:
        certs.certificates_for(data, role, path="pki/some.pem", setting=setting)
    return str(caught.value)


def test_a_certificate_given_as_the_key_is_named_with_its_subject(
    agent: certs.CertificateBundle,
) -> None:
    message = key_error(agent.chain_pem())
    assert message.startswith("--tls-key pki/tls.key: expected an unencrypted private key (PEM)")
    assert "holds a certificate (subject 'CN=my-org/prod', issued by 'CN=planelink test CA')" in (
        message
    )
    assert "followed by 1 more certificate(s)" in message
    assert "--tls-key / PLANELINK_GATEWAY_TLS_KEY / chart value tls.secretName" in message


def test_a_key_given_as_a_ca_says_it_is_a_private_key(ca: certs.CertificateBundle) -> None:
    message = certificate_error(ca.private_key_pem(), FileRole.CA_BUNDLE)
    assert "--caller-ca pki/some.pem: expected CA certificates (PEM)" in message
    assert "the file holds a private key" in message
    assert "callerCA.secretName" in message


def test_an_empty_file(tmp_path: Path) -> None:
    assert "holds nothing (the file is empty)" in key_error(b"\n  \n")
    assert "holds nothing (the file is empty)" in certificate_error(b"")


def test_text_that_is_not_pem_is_counted_never_quoted() -> None:
    message = certificate_error(b"s3cret-token-value\n")
    assert "no PEM data (19 bytes without a '-----BEGIN ...-----' line)" in message
    assert "s3cret" not in message


def test_der_certificate_gets_the_conversion_command(ca: certs.CertificateBundle) -> None:
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    message = certificate_error(der, FileRole.CA_BUNDLE)
    assert "a DER-encoded certificate (subject 'CN=planelink test CA'), not PEM" in message
    assert "openssl x509 -inform der" in message


@pytest.mark.parametrize(
    ("encoding", "form", "password", "expected"),
    [
        (
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            None,
            ("a DER-encoded private key, not PEM", "openssl pkey -inform der"),
        ),
        (
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            b"password",
            ("the file holds an encrypted private key", "decrypt it first"),
        ),
        (  # the legacy form: "Proc-Type: 4,ENCRYPTED" headers in a BEGIN EC PRIVATE KEY block
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            b"password",
            ("the file holds an encrypted private key", "decrypt it first"),
        ),
    ],
)
def test_keys_planelink_cannot_read_as_they_are(
    ca: certs.CertificateBundle,
    encoding: serialization.Encoding,
    form: serialization.PrivateFormat,
    password: bytes | None,
    expected: tuple[str, str],
) -> None:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    message = key_error(ca.private_key.private_bytes(encoding, form, encryption))
    for words in expected:
        assert words in message


def test_csr_instead_of_certificate(ca: certs.CertificateBundle) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
        .sign(ca.private_key, hashes.SHA256())
    )
    message = certificate_error(csr.public_bytes(serialization.Encoding.PEM))
    assert "a certificate signing request (CSR) for subject 'CN=gateway'" in message
    assert "expected a server certificate (PEM" in message


def test_public_key_instead_of_private_key(ca: certs.CertificateBundle) -> None:
    public = ca.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "the file holds a public key, not a private key" in key_error(public)


def test_a_leaf_given_as_ca_names_its_issuer(agent: certs.CertificateBundle) -> None:
    message = certificate_error(agent.certificate_pem(), FileRole.CA_BUNDLE)
    assert "holds a certificate (subject 'CN=my-org/prod'" in message
    assert "give the CA that issued it, 'CN=planelink test CA'" in message


def test_a_pinned_self_signed_certificate_is_a_valid_ca_bundle(
    plane: certs.PlaneRef,
) -> None:
    pinned = certs.self_signed_client(common_name="pinned")
    found = certs.certificates_for(
        pinned.certificate_pem(), FileRole.CA_BUNDLE, path="p", setting=CA_SETTING
    )
    assert found == [pinned.certificate]


def test_right_files_pass(agent: certs.CertificateBundle, ca: certs.CertificateBundle) -> None:
    chain = certs.certificates_for(
        agent.chain_pem(), FileRole.CLIENT_CERTIFICATE, path="c", setting=CERT_SETTING
    )
    key = certs.private_key_for(agent.private_key_pem(), path="k", setting=KEY_SETTING)
    certs.check_key_matches(
        chain[0],
        key,
        certificate_path="c",
        key_path="k",
        certificate_setting=CERT_SETTING,
        key_setting=KEY_SETTING,
    )
    assert chain == [agent.certificate, ca.certificate]


def test_a_key_of_another_certificate(
    agent: certs.CertificateBundle, ca: certs.CertificateBundle
) -> None:
    with pytest.raises(WrongFileError) as caught:
        certs.check_key_matches(
            agent.certificate,
            ca.private_key,
            certificate_path="pki/tls.crt",
            key_path="pki/tls.key",
            certificate_setting=CERT_SETTING,
            key_setting=KEY_SETTING,
        )
    assert str(caught.value) == (
        "--tls-key pki/tls.key: expected the private key of --tls-cert pki/tls.crt (subject "
        "'CN=my-org/prod'), but the file holds the private key of another certificate; give "
        "the key and certificate of one pair (a renewal writes both) (set with --tls-key / "
        "PLANELINK_GATEWAY_TLS_KEY / chart value tls.secretName)"
    )


# -- the files, then ssl -------------------------------------------------------------------------


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = certs.CredentialFile(tmp_path / "nope.crt", CA_SETTING)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(WrongFileError) as caught:
        certs.load_verify_locations(context, missing)
    assert str(caught.value).startswith(
        f"--caller-ca {tmp_path / 'nope.crt'}: expected CA certificates (PEM), but "
        "there is no such file"
    )


def test_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(WrongFileError, match="but it is a directory"):
        certs.load_certificate_file(
            certs.CredentialFile(tmp_path, CERT_SETTING), FileRole.SERVER_CERTIFICATE
        )


def test_load_cert_chain_checks_then_loads(
    tmp_path: Path, agent: certs.CertificateBundle, ca: certs.CertificateBundle
) -> None:
    cert_file, key_file = certs.write_pem_files(
        agent, tmp_path, cert_name="tls.crt", key_name="tls.key"
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    loaded = certs.load_cert_chain(
        context,
        certs.CredentialFile(cert_file, CERT_SETTING),
        certs.CredentialFile(key_file, KEY_SETTING),
        role=FileRole.CLIENT_CERTIFICATE,
    )
    assert loaded == agent.certificate
    # The same two files swapped: the key file is named, not OpenSSL's "PEM lib".
    with pytest.raises(WrongFileError) as caught:
        certs.load_cert_chain(
            context,
            certs.CredentialFile(key_file, CERT_SETTING),
            certs.CredentialFile(cert_file, KEY_SETTING),
            role=FileRole.CLIENT_CERTIFICATE,
        )
    assert f"--tls-cert {key_file}: expected a client certificate" in str(caught.value)
    assert "holds a private key" in str(caught.value)
    assert "PEM lib" not in str(caught.value)
