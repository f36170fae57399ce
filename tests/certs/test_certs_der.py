"""certs.der reads what cryptography reads, refuses malformed DER with DerError, and
certs.ssl_first loads an agent's files with the same results and errors as certs.tls_files."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

import certs
from certs import der, ssl_first, tls_files

_KEY = ec.generate_private_key(ec.SECP256R1())
_UNICODE = st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_categories=("Cs", "Cc"))
_ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_PRINTABLE = st.sampled_from("ABCXYZabcxyz0189 '()+,-./:=?")
_ATTRIBUTES = st.sampled_from(
    [
        (NameOID.COMMON_NAME, _UNICODE),
        (NameOID.ORGANIZATION_NAME, _UNICODE),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, _UNICODE),
        (NameOID.LOCALITY_NAME, _UNICODE),
        (NameOID.STATE_OR_PROVINCE_NAME, _UNICODE),
        (NameOID.STREET_ADDRESS, _UNICODE),
        (NameOID.USER_ID, _UNICODE),
        (NameOID.DOMAIN_COMPONENT, _ASCII),  # cryptography writes an IA5String
        (NameOID.SERIAL_NUMBER, _PRINTABLE),  # a PrintableString, printed as its dotted OID
        (x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), _UNICODE),
    ]
)
_ATTRIBUTE = _ATTRIBUTES.flatmap(
    lambda pair: st.tuples(st.just(pair[0]), st.text(alphabet=pair[1], min_size=1, max_size=20))
)
_RDN = st.lists(_ATTRIBUTE, min_size=1, max_size=2, unique_by=lambda pair: pair[0])
_NAME = st.lists(_RDN, min_size=1, max_size=4).map(
    lambda rdns: x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in r]) for r in rdns]
    )
)


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    *,
    serial: int = 1,
    not_before: datetime = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    not_after: datetime = datetime(2034, 1, 2, 3, 4, 5, tzinfo=UTC),
    extensions: tuple[tuple[x509.ExtensionType, bool], ...] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .public_key(_KEY.public_key())
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(_KEY, hashes.SHA256())


def _same(certificate: x509.Certificate) -> None:
    fields = der.read_certificate(certificate.public_bytes(serialization.Encoding.DER))
    assert fields == ssl_first.fields_of(certificate)
    assert fields.serial_number == certificate.serial_number
    assert fields.subject == certificate.subject.rfc4514_string()
    assert fields.issuer == certificate.issuer.rfc4514_string()
    assert fields.not_valid_before_utc == certificate.not_valid_before_utc
    assert fields.not_valid_after_utc == certificate.not_valid_after_utc
    assert (fields.subject_der == fields.issuer_der) == (certificate.subject == certificate.issuer)


@settings(max_examples=30, deadline=None)
@given(
    subject=_NAME,
    issuer=_NAME,
    serial=st.integers(min_value=1, max_value=(1 << 159) - 1),
    start=st.datetimes(min_value=datetime(1951, 1, 1), max_value=datetime(2200, 1, 1)),
    days=st.integers(min_value=0, max_value=40000),
    ca=st.booleans(),
    usages=st.lists(
        st.sampled_from([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
        max_size=2,
        unique=True,
    ),
    uris=st.lists(st.from_regex(r"\Aplanelink://plane/[a-z]{1,8}/[a-z]{1,8}\Z"), max_size=2),
    dns=st.lists(st.from_regex(r"\A[a-z]{1,10}\.example\Z"), max_size=2),
)
def test_every_field_is_what_cryptography_reads(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    serial: int,
    start: datetime,
    days: int,
    ca: bool,
    usages: list[x509.ObjectIdentifier],
    uris: list[str],
    dns: list[str],
) -> None:
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=ca, path_length=None), True)
    ]
    if usages:
        extensions.append((x509.ExtendedKeyUsage(usages), False))
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns]
    if names:
        extensions.append((x509.SubjectAlternativeName(names), False))
    extensions.append((x509.KeyUsage(True, *[False] * 8), True))  # a value that is no SEQUENCE
    not_before = start.replace(microsecond=0, tzinfo=UTC)
    certificate = _certificate(
        subject,
        issuer,
        serial=serial,
        not_before=not_before,
        not_after=not_before + timedelta(days=days),
        extensions=tuple(extensions),
    )
    _same(certificate)
    fields = der.read_certificate(certificate.public_bytes(serialization.Encoding.DER))
    assert fields.is_ca is ca
    assert fields.extended_key_usages == tuple(u.dotted_string for u in usages)
    assert (fields.uris, fields.dns_names) == (tuple(uris), tuple(dns))


def test_the_certificates_planelink_issues_read_the_same(ca: certs.CertificateBundle) -> None:
    agent = certs.issue_agent(ca, plane=certs.parse_plane_ref("my-org/prod"))
    server = certs.issue_server(ca, common_name="gw", dns_names=["gw.example"], ip_addresses=[])
    for bundle in (ca, agent, server, certs.create_ca("x", organizations=["a, b", "#c "])):
        _same(bundle.certificate)


def test_escaping_is_cryptographys() -> None:
    for value in ('a,b+c;d<e>f"g\\h', "#lead", " lead", "trail ", " ", "nul\0x"):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])
        assert der.escape_rfc4514(value) == name.rfc4514_string().removeprefix("CN=")


def _good() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a")])
    return _certificate(name, name).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "truncated"),
        (b"\x30", "truncated"),
        (b"\x30\x05\x02\x01", "runs past the end"),
        (b"\x30\x80\x00\x00", "indefinite length"),
        (b"\x30\x81\x05\x02\x01\x01\x02\x00", "not minimally encoded"),
        (b"\x30\x85\x00\x00\x00\x00\x01", "a length of 5 bytes"),
        (b"\x1f\x01\x00", "high tag number"),
        (b"\x31\x00", "expected tag 0x30"),
        (b"\x30\x00\x00", "after the certificate"),
        (b"\x30\x00", "0 elements where 3 belong"),
        (_good()[:-1], "runs past the end"),
        (_good() + b"\x00", "after the certificate"),
        (b"\x30\x84" + (70000).to_bytes(4, "big") + bytes(70000), "at most 65536"),
    ],
)
def test_malformed_der_is_one_error(data: bytes, says: str) -> None:
    with pytest.raises(der.DerError, match=says):
        der.read_certificate(data)


def test_a_name_of_an_unread_string_type_is_refused() -> None:
    good = _good()
    utf8 = b"\x06\x03\x55\x04\x03\x0c\x01a"  # CN as UTF8String: make it a BMPString
    assert utf8 in good
    with pytest.raises(der.DerError, match="string tag 0x1e"):
        der.read_certificate(good.replace(utf8, b"\x06\x03\x55\x04\x03\x1e\x01a"))


def test_a_printable_string_holds_only_its_characters() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")])
    good = _certificate(name, name).public_bytes(serialization.Encoding.DER)
    assert der.read_certificate(good).subject == "C=DE"
    with pytest.raises(der.DerError, match="PrintableString"):
        der.read_certificate(good.replace(b"\x13\x02DE", b"\x13\x02D{"))


def test_oids_and_key_algorithms() -> None:
    assert der.oid(bytes.fromhex("2a864886f70d010101")) == der.RSA_ENCRYPTION
    assert der.oid(bytes.fromhex("8837")) == "2.999"
    with pytest.raises(der.DerError):
        der.oid(bytes.fromhex("2a80"))
    with pytest.raises(der.DerError):
        der.oid(bytes.fromhex("2a86"))
    pkcs8 = _KEY.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert der.private_key_algorithm(pkcs8) == der.EC_PUBLIC_KEY


# ssl_first against tls_files, on files

_DER = serialization.Encoding.DER


def _files(directory: Path, crt: bytes, key: bytes, ca: bytes) -> tuple[certs.CredentialFile, ...]:
    setting = certs.FileSetting("--x", "X")
    found = []
    for name, data in (("tls.crt", crt), ("tls.key", key), ("ca.crt", ca)):
        path = directory / name
        path.write_bytes(data)
        found.append(certs.CredentialFile(path, setting))
    return tuple(found)


def _both(
    files: tuple[certs.CredentialFile, ...],
) -> tuple[object, object]:
    crt, key, ca = files
    results: list[object] = []
    for module in (tls_files, ssl_first):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            cas = module.load_verify_locations(context, ca)
            chain = module.load_cert_chain(
                context, crt, key, role=certs.FileRole.CLIENT_CERTIFICATE
            )
        except certs.WrongFileError as error:
            results.append(str(error))
            continue
        read = [c if isinstance(c, der.CertificateFields) else ssl_first.fields_of(c) for c in cas]
        first = chain if isinstance(chain, der.CertificateFields) else ssl_first.fields_of(chain)
        results.append((read, first))
    return results[0], results[1]


def test_good_files_read_the_same(tmp_path: Path, ca: certs.CertificateBundle) -> None:
    agent = certs.issue_agent(ca, plane=certs.parse_plane_ref("my-org/prod"))
    files = _files(tmp_path, agent.certificate_pem(), agent.private_key_pem(), ca.certificate_pem())
    checked, quick = _both(files)
    assert isinstance(quick, tuple)
    assert checked == quick


def test_wrong_files_say_the_same(tmp_path: Path, ca: certs.CertificateBundle) -> None:
    agent = certs.issue_agent(ca, plane=certs.parse_plane_ref("my-org/prod"))
    other = certs.issue_agent(ca, plane=certs.parse_plane_ref("my-org/other"))
    crt, key, anchor = agent.certificate_pem(), agent.private_key_pem(), ca.certificate_pem()
    encrypted = agent.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_certificate = _certificate(agent.certificate.subject, ca.certificate.subject).public_bytes(
        serialization.Encoding.PEM
    )
    ed_key = ed.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cases = {
        "key as certificate": (key, key, anchor),
        "certificate as key": (crt, crt, anchor),
        "another's key": (crt, other.private_key_pem(), anchor),
        "encrypted key": (crt, encrypted, anchor),
        "leaf as CA": (crt, key, crt),
        "empty CA": (crt, key, b""),
        "DER certificate": (agent.certificate.public_bytes(_DER), key, anchor),
        "ed25519 key": (ed_certificate, ed_key, anchor),
    }
    for case, (certificate, private_key, bundle) in cases.items():
        directory = tmp_path / case.replace(" ", "-").replace("'", "")
        directory.mkdir()
        checked, quick = _both(_files(directory, certificate, private_key, bundle))
        assert isinstance(checked, str), case
        assert quick == checked, case
