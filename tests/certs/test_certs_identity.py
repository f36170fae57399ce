"""PlaneRef: parsing, validation and the URI written into agent certificates."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

import certs

LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@given(namespace=LABEL, name=LABEL)
def test_parse_round_trips(namespace: str, name: str) -> None:
    ref = certs.plane_ref(namespace=namespace, name=name)
    assert certs.parse_plane_ref(str(ref)) == ref
    assert certs.plane_ref_from_uri(certs.plane_uri(ref)) == ref
    assert certs.plane_uri(ref) == f"planelink://plane/{namespace}/{name}"
    assert len(certs.plane_common_name(ref)) <= 64


@given(text=st.text(alphabet=string.ascii_letters + string.digits + "-./_ ", max_size=140))
def test_parse_accepts_exactly_two_dns1123_labels(text: str) -> None:
    parts = text.split("/")
    valid = len(parts) == 2 and all(
        0 < len(p) <= 63
        and p == p.lower()
        and all(c in string.ascii_lowercase + string.digits + "-" for c in p)
        and p[0] != "-"
        and p[-1] != "-"
        for p in parts
    )
    if valid:
        assert str(certs.parse_plane_ref(text)) == text
    else:
        with pytest.raises(certs.InvalidPlaneRefError):
            certs.parse_plane_ref(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must have the form <namespace>/<name>"),
        ("prod", "must have the form <namespace>/<name>"),
        ("a/b/c", "must have the form <namespace>/<name>"),
        ("/prod", "namespace must not be empty"),
        ("org/", "name must not be empty"),
        ("My-Org/prod", "namespace 'My-Org' is not a DNS-1123 label"),
        ("org/-prod", "name '-prod' is not a DNS-1123 label"),
        ("org/prod.eu", "name 'prod.eu' is not a DNS-1123 label"),
        ("org/" + "x" * 64, "is 64 characters long; a DNS-1123 label has at most 63"),
    ],
)
def test_parse_errors_say_why(text: str, message: str) -> None:
    with pytest.raises(certs.InvalidPlaneRefError, match=message):
        certs.parse_plane_ref(text)


def test_invalid_plane_ref_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        certs.plane_ref(namespace="UPPER", name="x")


@pytest.mark.parametrize("uri", ["https://plane/a/b", "planelink://plane/a", "planelink://x/a/b"])
def test_from_uri_rejects_other_uris(uri: str) -> None:
    with pytest.raises(certs.InvalidPlaneRefError):
        certs.plane_ref_from_uri(uri)


def test_planes_in_certificate_ignores_other_uris(ca: certs.CertificateBundle) -> None:
    leaf = certs.issue_client(
        ca,
        common_name="c",
        uris=[
            "spiffe://cluster.local/ns/a/sa/b",
            "planelink://plane/Bad/x",
            "planelink://plane/a/b",
        ],
    )
    assert certs.planes_in_certificate(leaf.certificate) == (certs.plane_ref("a", "b"),)
    assert certs.planes_in_certificate(ca.certificate) == ()
