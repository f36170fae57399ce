"""`planelink gateway` flags and environment for caller authentication."""

from __future__ import annotations

import argparse

import pytest

from gateway.auth import CallerAuthMode, CallerAuthSettings
from planelink.gateway_cli import add_gateway_parser, settings_from

REQUIRED = ["gateway", "--tls-cert", "t.crt", "--tls-key", "t.key", "--caller-ca", "ca.crt"]


def parse(*args: str) -> CallerAuthSettings:
    parser = argparse.ArgumentParser()
    add_gateway_parser(parser.add_subparsers())
    return settings_from(parser.parse_args([*REQUIRED, *args])).callers.auth


def test_certificates_only_is_the_default() -> None:
    assert parse() == CallerAuthSettings()


def test_flags_set_every_auth_setting() -> None:
    settings = parse(
        "--caller-auth", "token", "--authorize", "--authorize-verb", "use", "--impersonate-callers"
    )
    assert settings == CallerAuthSettings(
        mode=CallerAuthMode.TOKEN, authorize=True, verb="use", impersonate=True
    )


def test_the_environment_sets_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANELINK_GATEWAY_CALLER_AUTH", "both")
    monkeypatch.setenv("PLANELINK_GATEWAY_IMPERSONATE_CALLERS", "true")
    monkeypatch.setenv("PLANELINK_GATEWAY_AUTHORIZE_VERB", "get")
    settings = parse()
    assert (settings.mode, settings.impersonate, settings.verb) == (
        CallerAuthMode.BOTH,
        True,
        "get",
    )
    assert settings.authorizes
    assert settings.accepts_certificates
    assert settings.accepts_tokens
