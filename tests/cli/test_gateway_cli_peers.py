"""`planelink gateway` flags of the peer listener: off unless --peer-certificate is given."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.app import GatewaySettings
from gateway.peers import PeerSettings
from planelink.gateway_cli import add_gateway_parser, settings_from

REQUIRED = ["gateway", "--tls-cert", "t.crt", "--tls-key", "t.key", "--caller-ca", "ca.crt"]
PEER = ["--peer-certificate", "p.crt", "--peer-key", "p.key", "--peer-ca", "p-ca.crt"]


def parse(*args: str) -> GatewaySettings:
    parser = argparse.ArgumentParser()
    add_gateway_parser(parser.add_subparsers())
    return settings_from(parser.parse_args([*REQUIRED, *args]))


def test_without_a_peer_certificate_there_is_no_peer_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    assert parse().peers is None


def test_the_peer_flags_make_the_peer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    settings = parse(*PEER, "--bind", "10.0.0.1")
    assert settings.peers == PeerSettings(
        certificate=Path("p.crt"),
        key=Path("p.key"),
        ca=Path("p-ca.crt"),
        host="10.0.0.1",
        port=8444,
        advertise_host="10.1.2.3",
    )
    monkeypatch.setenv("PLANELINK_GATEWAY_PEER_PORT", "9444")
    settings = parse(*PEER, "--peer-host", "127.0.0.1", "--peer-advertise", "peer.local")
    assert settings.peers is not None
    assert (settings.peers.host, settings.peers.port) == ("127.0.0.1", 9444)
    assert settings.peers.advertise_host == "peer.local"


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--peer-certificate", "p.crt", "--peer-ca", "p-ca.crt"], "needs --peer-key"),
        (["--peer-key", "p.key"], "need --peer-certificate"),
    ],
)
def test_half_the_peer_flags_are_refused(args: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse(*args)


def test_the_replica_id_is_the_identity_with_or_without_a_control_plane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "gw-7f9c-x2")
    assert parse().replica_id == "gw-7f9c-x2"
    assert parse("--identity", "r2").replica_id == "r2"
