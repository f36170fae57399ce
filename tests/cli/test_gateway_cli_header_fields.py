"""`planelink gateway --max-header-fields`: the bound on a caller request's header fields."""

from __future__ import annotations

import pytest

from tests.cli.test_gateway_cli_limits import parse


def test_header_fields_default_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse().callers.max_header_fields == 256
    assert parse("--max-header-fields", "64").callers.max_header_fields == 64
    monkeypatch.setenv("PLANELINK_GATEWAY_MAX_HEADER_FIELDS", "32")
    assert parse().callers.max_header_fields == 32
