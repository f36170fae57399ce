"""The operator port with a bearer token: /planes, /metrics and the console (its page and data)
refuse callers without it, the kubelet's probes never need it, and a rotated token file takes
effect at once.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Gateway, GatewaySettings
from gateway.operator import OperatorTokenError
from planelink.cli import build_parser
from planelink.gateway_cli import settings_from
from planelink.status_cli import GatewayUnreachable, fetch_planes
from tests.kit.gateway_lab import Pki
from tests.kit.waits import scaled

TOKEN = "s3cret-operator-token"
GUARDED = ["/planes", "/metrics", "/", "/ui", "/console", "/console/view", "/history"]


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "operator-token" / "token"
    path.parent.mkdir()
    path.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` may leave it
    return path


@pytest.fixture
async def guarded_gateway(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings], token_file: Path
) -> AsyncIterator[Gateway]:
    settings = loopback_gateway_settings(pki.directory)
    gateway = Gateway(dataclasses.replace(settings, operator_token_file=token_file))
    await gateway.start()
    yield gateway
    await gateway.stop()


async def _status(
    gateway: Gateway, path: str, token: str | None = None, *, authorization: str | None = None
) -> int:
    if token is not None:
        authorization = f"Bearer {token}"
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{gateway.operator_port}{path}", headers=headers) as answer,
    ):
        if answer.status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer ")
            assert (await answer.json())["status"] == "unauthorized"
        return answer.status


def _refusals(gateway: Gateway) -> float:
    value = gateway.metrics.registry.get_sample_value("planelink_gateway_operator_refusals_total")
    return value or 0.0


@pytest.mark.parametrize("path", GUARDED)
async def test_without_the_token_nothing_but_the_probes_answers(
    guarded_gateway: Gateway, path: str
) -> None:
    assert await _status(guarded_gateway, path) == 401
    assert await _status(guarded_gateway, path, "wrong") == 401
    assert await _status(guarded_gateway, path, TOKEN + "x") == 401
    assert _refusals(guarded_gateway) == 3
    assert await _status(guarded_gateway, path, TOKEN) == 200


async def test_only_a_bearer_token_counts(guarded_gateway: Gateway) -> None:
    basic = "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    for authorization in (basic, TOKEN, f"Bearer{TOKEN}", f"Token {TOKEN}", "Bearer "):
        assert await _status(guarded_gateway, "/planes", authorization=authorization) == 401
    assert await _status(guarded_gateway, "/planes", authorization=f"bearer {TOKEN}") == 200


async def test_the_probes_never_need_it(guarded_gateway: Gateway) -> None:
    assert await _status(guarded_gateway, "/healthz") == 200
    assert await _status(guarded_gateway, "/readyz") == 200
    assert _refusals(guarded_gateway) == 0


def _replace(token_file: Path, token: str | None) -> None:
    """Write a new token (with a newer mtime even on a coarse clock), or remove the file."""
    if token is None:
        token_file.unlink()
        return
    token_file.write_text(token)
    stat = token_file.stat()
    os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def test_a_rotated_token_takes_effect_without_a_restart(
    guarded_gateway: Gateway, token_file: Path
) -> None:
    assert await _status(guarded_gateway, "/planes", TOKEN) == 200
    _replace(token_file, "the-next-token")
    assert await _status(guarded_gateway, "/planes", TOKEN) == 401
    assert await _status(guarded_gateway, "/planes", "the-next-token") == 200
    # A token file removed mid-rotation keeps the last good token rather than opening the port.
    _replace(token_file, None)
    assert await _status(guarded_gateway, "/planes") == 401
    assert await _status(guarded_gateway, "/planes", "the-next-token") == 200


async def test_without_a_token_file_the_port_is_open_as_before(gateway: Gateway) -> None:
    assert await _status(gateway, "/planes") == 200


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_a_missing_or_empty_token_file_stops_the_gateway_from_starting(
    pki: Pki,
    loopback_gateway_settings: Callable[[Path], GatewaySettings],
    tmp_path: Path,
    content: str | None,
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    settings = dataclasses.replace(
        loopback_gateway_settings(pki.directory), operator_token_file=path
    )
    with pytest.raises(OperatorTokenError, match=str(path)):
        Gateway(settings)


def test_the_flag_and_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, token_file: Path
) -> None:
    base = ["gateway", "--tls-cert", "c", "--tls-key", "k", "--caller-ca", "ca"]
    args = build_parser().parse_args([*base, "--operator-token-file", str(token_file)])
    assert settings_from(args).operator_token_file == token_file
    monkeypatch.setenv("PLANELINK_GATEWAY_OPERATOR_TOKEN_FILE", str(token_file))
    assert settings_from(build_parser().parse_args(base)).operator_token_file == token_file
    monkeypatch.delenv("PLANELINK_GATEWAY_OPERATOR_TOKEN_FILE")
    assert settings_from(build_parser().parse_args(base)).operator_token_file is None


async def test_planelink_status_sends_the_token(guarded_gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{guarded_gateway.operator_port}"
    with pytest.raises(GatewayUnreachable, match=r"HTTP 401.*--token-file"):
        await asyncio.to_thread(fetch_planes, base, timeout=scaled(5.0))
    report = await asyncio.to_thread(fetch_planes, base, timeout=scaled(5.0), token=TOKEN)
    assert len(report["planes"]) == 2
