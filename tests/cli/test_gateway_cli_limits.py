"""`planelink gateway` flags for the listeners' limits: backlog, connection budgets, deadlines."""

from __future__ import annotations

import argparse

import pytest

from gateway.admission import AdmissionSettings
from gateway.agent_listener import AgentListenerSettings
from gateway.app import GatewaySettings
from gateway.callers import CallerSettings
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


def test_defaults_are_the_settings_defaults() -> None:
    settings = parse()
    assert settings.agents.admission == settings.callers.admission == AdmissionSettings()
    assert settings.agents.upgrade_timeout == AgentListenerSettings().upgrade_timeout
    assert settings.callers.head_timeout == CallerSettings().head_timeout
    assert settings.callers.idle_timeout == CallerSettings().idle_timeout


def test_flags_and_environment_set_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse("--listen-backlog", "4096", "--max-handshakes", "8")
    assert settings.agents.backlog == settings.callers.backlog == 4096
    assert settings.agents.admission.max_concurrent_handshakes == 8
    monkeypatch.setenv("PLANELINK_GATEWAY_MAX_HANDSHAKES", "16")
    assert parse().agents.admission.max_concurrent_handshakes == 16


def test_flags_and_environment_set_the_budgets_and_deadlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = parse(
        "--max-connections", "900",
        "--max-unauthenticated", "300",
        "--max-unauthenticated-per-ip", "7",
        "--client-hello-timeout", "1.5",
        "--tls-handshake-timeout", "4",
        "--upgrade-timeout", "3",
        "--head-timeout", "6",
        "--idle-timeout", "45",
    )  # fmt: skip
    for admission in (settings.agents.admission, settings.callers.admission):
        assert admission.max_connections == 900
        assert admission.max_unauthenticated == 300
        assert admission.max_unauthenticated_per_ip == 7
        assert admission.client_hello_timeout == 1.5
        assert admission.tls_handshake_timeout == 4
    assert settings.agents.upgrade_timeout == 3
    assert (settings.callers.head_timeout, settings.callers.idle_timeout) == (6, 45)
    monkeypatch.setenv("PLANELINK_GATEWAY_MAX_UNAUTHENTICATED_PER_IP", "3")
    monkeypatch.setenv("PLANELINK_GATEWAY_IDLE_TIMEOUT", "20")
    from_env = parse()
    assert from_env.callers.admission.max_unauthenticated_per_ip == 3
    assert from_env.callers.idle_timeout == 20


def test_help_documents_every_new_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_gateway_parser(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["gateway", "--help"])
    shown = capsys.readouterr().out
    for flag in (
        "--max-connections",
        "--max-unauthenticated",
        "--max-unauthenticated-per-ip",
        "--client-hello-timeout",
        "--tls-handshake-timeout",
        "--upgrade-timeout",
        "--head-timeout",
        "--idle-timeout",
    ):
        assert flag in shown
