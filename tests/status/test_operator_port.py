"""The operator port in raw HTTP/1.1 (`http1.service` under `gateway.operator`): what a probe, a
scraper or a stray client gets for each method, path and framing."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.kit.waits import scaled


async def exchange(url: str, request: bytes) -> bytes:
    """Send `request` on a new connection; everything read until the gateway closes it."""
    host, _, port = url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    try:
        async with asyncio.timeout(scaled(10)):
            return await reader.read()
    finally:
        writer.close()


def split(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    return status, headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".encode()


async def test_probes_answer_json(operator_url: str) -> None:
    status, headers, body = split(await exchange(operator_url, get("/healthz")))
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"status": "ok"}
    status, _, body = split(await exchange(operator_url, get("/readyz?verbose=1")))
    assert status == "HTTP/1.1 200 OK"  # the query is not part of the path
    assert json.loads(body)["status"] == "ready"


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (get("/nowhere"), "HTTP/1.1 404 Not Found"),
        (get("/healthz/"), "HTTP/1.1 404 Not Found"),
        (get("/planes", "POST"), "HTTP/1.1 405 Method Not Allowed"),
        (get("/metrics", "DELETE"), "HTTP/1.1 405 Method Not Allowed"),
    ],
)
async def test_other_paths_and_methods_are_refused(
    operator_url: str, request_bytes: bytes, status_line: str
) -> None:
    status, headers, _ = split(await exchange(operator_url, request_bytes))
    assert status == status_line
    if "405" in status_line:
        assert headers["allow"] == "GET, HEAD"


async def test_head_has_the_length_but_no_body(operator_url: str) -> None:
    _, got, body = split(await exchange(operator_url, get("/planes")))
    status, headers, empty = split(await exchange(operator_url, get("/planes", "HEAD")))
    assert status == "HTTP/1.1 200 OK"
    assert empty == b""
    assert int(headers["content-length"]) == int(got["content-length"]) == len(body)


async def test_requests_share_a_kept_alive_connection(operator_url: str) -> None:
    host, _, port = operator_url.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for path in ("/healthz", "/readyz", "/planes"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
            async with asyncio.timeout(scaled(10)):
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers, _ = split(head)
                await reader.readexactly(int(headers["content-length"]))
            assert status == "HTTP/1.1 200 OK"
            assert "connection" not in headers
    finally:
        writer.close()


async def test_a_request_with_a_body_is_answered_and_its_connection_ends(
    operator_url: str,
) -> None:
    # The body is never read: the connection cannot carry another request after it.
    posted = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nContent-Length: 5\r\n\r\nhello"
    status, headers, body = split(await exchange(operator_url, posted))
    assert status == "HTTP/1.1 200 OK"
    assert headers["connection"] == "close"
    assert json.loads(body) == {"status": "ok"}


async def test_the_console_page_is_html_under_its_policy(operator_url: str) -> None:
    for path in ("/", "/ui"):
        status, headers, body = split(await exchange(operator_url, get(path)))
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert headers["cache-control"] == "no-store"
        assert body.startswith(b"<!DOCTYPE html>")
