"""Property tests: whatever goes into a certificate comes back out of describe() and verify()."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

import certs
from certs._time import human_duration

DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
DNS_NAME = st.lists(DNS_LABEL, min_size=1, max_size=4).map(".".join)
IP = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: str(ipaddress.ip_address(a)))
)
PRINTABLE = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64
)


@settings(max_examples=25, deadline=None)
@given(
    common_name=PRINTABLE,
    dns_names=st.lists(DNS_NAME, max_size=3),
    ip_addresses=st.lists(IP, max_size=3),
    days=st.integers(min_value=1, max_value=3000),
)
def test_server_round_trip(
    ca: certs.CertificateBundle,
    common_name: str,
    dns_names: list[str],
    ip_addresses: list[str],
    days: int,
) -> None:
    if not dns_names and not ip_addresses:
        dns_names = ["example.com"]
    bundle = certs.issue_server(
        ca,
        common_name=common_name,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        validity=timedelta(days=days),
    )
    info = certs.describe(bundle.certificate)
    assert info.common_name == common_name
    assert info.dns_names == tuple(dns_names)
    assert info.ip_addresses == tuple(ip_addresses)
    assert info.not_after - info.not_before == timedelta(days=days) + certs.CLOCK_SKEW
    assert certs.verify_certificate_chain(bundle.certificate, trusted=[ca.certificate]) == info


@settings(max_examples=25, deadline=None)
@given(
    common_name=PRINTABLE,
    groups=st.lists(PRINTABLE, max_size=4),
)
def test_client_round_trip(
    ca: certs.CertificateBundle, common_name: str, groups: list[str]
) -> None:
    bundle = certs.issue_client(ca, common_name=common_name, organizations=groups)
    info = certs.verify_client_certificate(
        bundle.certificate, trusted=[ca.certificate], expected_identity=common_name
    )
    assert info.common_name == common_name
    assert info.organizations == tuple(groups)


@given(seconds=st.integers(min_value=0, max_value=10**9))
def test_human_duration_uses_the_largest_whole_unit(seconds: int) -> None:
    text = human_duration(timedelta(seconds=seconds))
    count, unit = text.split(" ")
    assert int(count) >= 1 or seconds == 0
    assert unit.rstrip("s") in {"day", "hour", "minute", "second"}
    assert unit.endswith("s") == (int(count) != 1)


def test_secret_files_decodes_data_and_string_data() -> None:
    manifest = {
        "kind": "Secret",
        "data": {"tls.crt": "aGVsbG8="},
        "stringData": {"ca.crt": "plain"},
    }
    assert certs.secret_files(manifest) == {"tls.crt": b"hello", "ca.crt": b"plain"}
    assert certs.secret_files({"kind": "ConfigMap"}) is None
    assert certs.secret_files(["not", "a", "mapping"]) is None


@given(name=st.text(max_size=300))
def test_validate_secret_name(name: str) -> None:
    parts = name.split(".")
    ok = 0 < len(name) <= 253 and all(
        p
        and p[0].isalnum()
        and p[-1].isalnum()
        and all(c.isascii() and (c.islower() or c.isdigit() or c == "-") for c in p)
        for p in parts
    )
    try:
        certs.validate_secret_name(name)
    except ValueError:
        assert not ok
    else:
        assert ok
