"""`planelink gateway` flags for what callers see: the wait for a returning agent, the access
log."""

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


def test_the_access_log_is_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse().callers.access_log
    assert not parse("--no-access-log").callers.access_log
    monkeypatch.setenv("PLANELINK_GATEWAY_ACCESS_LOG", "false")
    assert not parse().callers.access_log
    assert parse("--access-log").callers.access_log  # the flag wins


def test_agent_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse().callers.agent_wait == 3.0
    assert parse("--agent-wait", "0").callers.agent_wait == 0.0
    monkeypatch.setenv("PLANELINK_GATEWAY_AGENT_WAIT", "7.5")
    assert parse().callers.agent_wait == 7.5
    with pytest.raises(ValueError, match="--agent-wait"):
        parse("--agent-wait", "-1")


def test_http2_is_offered_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    callers = parse().callers
    assert callers.http2
    assert callers.http2_limits.max_concurrent_streams == 1000
    assert not parse("--no-http2").callers.http2
    monkeypatch.setenv("PLANELINK_GATEWAY_HTTP2", "false")
    assert not parse().callers.http2
    limits = parse("--http2-max-streams", "250").callers.http2_limits
    assert limits.max_concurrent_streams == 250
    assert limits.connection_window == callers.http2_limits.connection_window
    with pytest.raises(ValueError, match="--http2-max-streams"):
        parse("--http2-max-streams", "0")
