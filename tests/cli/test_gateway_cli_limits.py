"""`planelink gateway` flags for the listeners' limits: listen backlog and handshakes at once."""

from __future__ import annotations

import argparse

import pytest

from gateway.app import GatewaySettings
from planelink.gateway_cli import add_gateway_parser, settings_from

REQUIRED = ["gateway", "--tls-cert", "t.crt", "--tls-key", "t.key", "--caller-ca", "ca.crt"]


def parse(*args: str) -> GatewaySettings:
    parser = argparse.ArgumentParser()
    add_gateway_parser(parser.add_subparsers())
    return settings_from(parser.parse_args([*REQUIRED, *args]))


def test_defaults_queue_a_restart_storm() -> None:
    settings = parse()
    assert settings.agents.backlog == settings.callers.backlog == 1024
    assert settings.agents.admission.max_concurrent_handshakes == 64


def test_flags_and_environment_set_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse("--listen-backlog", "4096", "--max-handshakes", "8")
    assert settings.agents.backlog == settings.callers.backlog == 4096
    assert settings.agents.admission.max_concurrent_handshakes == 8
    monkeypatch.setenv("PLANELINK_GATEWAY_MAX_HANDSHAKES", "16")
    assert parse().agents.admission.max_concurrent_handshakes == 16
