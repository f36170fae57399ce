"""`planelink gateway` flags for direct-mode planes: HTTP/2 to their API servers, on by default."""

from __future__ import annotations

import argparse

import pytest

from gateway.app import GatewaySettings
from gateway.direct import DirectSettings
from planelink.gateway_cli import add_gateway_parser, settings_from

REQUIRED = ["gateway", "--tls-cert", "t.crt", "--tls-key", "t.key", "--caller-ca", "ca.crt"]


def parse(*args: str, environ: dict[str, str] | None = None) -> GatewaySettings:
    parser = argparse.ArgumentParser()
    add_gateway_parser(parser.add_subparsers())
    return settings_from(parser.parse_args([*REQUIRED, *args]), environ or {})


def test_direct_planes_use_http2_by_default() -> None:
    assert parse().direct == DirectSettings()
    assert parse().direct.upstream_http2


@pytest.mark.parametrize(
    ("args", "environ", "expected"),
    [
        (["--no-direct-upstream-http2"], {}, False),
        ([], {"PLANELINK_GATEWAY_DIRECT_UPSTREAM_HTTP2": "false"}, False),
        (["--direct-upstream-http2"], {"PLANELINK_GATEWAY_DIRECT_UPSTREAM_HTTP2": "0"}, True),
    ],
)
def test_a_flag_or_the_environment_turns_it_off(
    args: list[str], environ: dict[str, str], expected: bool
) -> None:
    assert parse(*args, environ=environ).direct.upstream_http2 is expected
