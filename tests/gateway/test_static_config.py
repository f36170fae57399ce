"""The planes file, with files on disk: what it accepts, and how each mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest

import certs
from gateway.static_config import ConfigError, load_static_planes


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    (tmp_path / "ca.crt").write_bytes(certs.create_ca("agents").certificate_pem())
    return "ca.crt"


def load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "planes.yaml"
    path.write_text(text)
    return [str(trust.plane) for trust in load_static_planes(path)]


def test_entries_by_file_and_inline(tmp_path: Path, ca_file: str) -> None:
    pem = (tmp_path / ca_file).read_text().replace("\n", "\n    ")
    text = (
        f"planes:\n- plane: a/one\n  clientCA: {ca_file}\n  requireIdentity: false\n"
        f"- plane: b/two\n  clientCAData: |\n    {pem}\n"
    )
    path = tmp_path / "planes.yaml"
    path.write_text(text)
    one, two = load_static_planes(path, require_identity=True)
    assert (str(one.plane), one.require_identity, len(one.client_cas)) == ("a/one", False, 1)
    assert (str(two.plane), two.require_identity, len(two.client_cas)) == ("b/two", True, 1)
    assert load(tmp_path, "") == []
    assert load(tmp_path, "planes: []\n") == []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("- plane: a/b\n", "must be a mapping with a `planes` list"),
        ("plane: a/b\n", "plane: unknown field"),
        ("planes: {plane: a/b}\n", "planes: must be a list"),
        ("planes: [a/b]\n", "planes[0]: must be a mapping"),
        ("planes:\n- {plane: a/b, clientCA: ca.crt, clientCa: x}\n", "planes[0].clientCa: unknown"),
        ("planes:\n- {clientCA: ca.crt}\n", "planes[0].plane: missing"),
        ("planes:\n- {plane: a/b}\n", "planes[0]: give exactly one of clientCA"),
        ("planes:\n- {plane: a/b, clientCA: x, clientCAData: y}\n", "give exactly one"),
        ("planes:\n- {plane: a/b, clientCA: ca.crt, requireIdentity: 'no'}\n", "must be a bool"),
        ("planes:\n- {plane: 7, clientCA: ca.crt}\n", "planes[0].plane: must be a string"),
        ("planes:\n- {plane: nope, clientCA: ca.crt}\n", "planes[0].plane: "),
        ("planes:\n- {plane: a/b, clientCA: ca.crt}\n- {plane: a/b, clientCA: ca.crt}\n", "twice"),
        ("planes: [\n", "while parsing"),
    ],
)
def test_each_mistake_is_named_where_it_is(
    tmp_path: Path, ca_file: str, text: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=r"planes\.yaml: ") as raised:
        load(tmp_path, text)
    assert named in str(raised.value)


def test_an_unreadable_ca_lists_the_plane_with_its_issue(tmp_path: Path) -> None:
    path = tmp_path / "planes.yaml"
    path.write_text("planes:\n- {plane: a/b, clientCA: missing.crt}\n")
    (trust,) = load_static_planes(path)
    assert trust.client_cas == ()
    assert "client CA unusable" in trust.issues[0]
