"""Hostile connections on the accept path of both ports: floods of silent or slow sockets, an
oversized upgrade request, a caller certificate from the wrong CA.

Each test runs a real in-process gateway with small limits and short deadlines, and speaks to
it over raw sockets (TLS where the case needs it) from loopback addresses 127.0.0.2 and up, so
that one machine acts as many source addresses. Waits scale with PLANELINK_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from structlog.testing import capture_logs

import certs
from gateway.admission import AdmissionSettings
from gateway.app import Gateway, GatewaySettings
from tests.kit.gateway_lab import PLANE_A, DialAgent, Pki, caller_session, fake_agent
from tests.kit.waits import scaled
from tunnel.contract import AGENT_CONNECT_PATH, REJECTION_HEADER

WITHIN = scaled(5)
"""How long a legitimate peer may take to get in, or a refusal to arrive, on a loaded machine."""


class GatewayFactory(Protocol):
    """What the `start_gateway` fixture is."""

    def __call__(
        self,
        *,
        admission: dict[str, Any] | None = None,
        callers: dict[str, Any] | None = None,
        agents: dict[str, Any] | None = None,
    ) -> Awaitable[Gateway]: ...


@pytest.fixture
async def start_gateway(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> AsyncIterator[GatewayFactory]:
    """`await start_gateway(admission=..., callers=..., agents=...)`: a gateway whose settings
    are the lab's with these fields replaced (each a dict of field values)."""
    started: list[Gateway] = []

    async def start(
        *,
        admission: dict[str, Any] | None = None,
        callers: dict[str, Any] | None = None,
        agents: dict[str, Any] | None = None,
    ) -> Gateway:
        base = loopback_gateway_settings(pki.directory)
        limits = dataclasses.replace(AdmissionSettings(), **(admission or {}))
        settings = dataclasses.replace(
            base,
            agents=dataclasses.replace(base.agents, admission=limits, **(agents or {})),
            callers=dataclasses.replace(base.callers, admission=limits, **(callers or {})),
        )
        gateway = Gateway(settings)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


def refused(gateway: Gateway, port: str, reason: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "planelink_gateway_connections_refused_total", {"port": port, "reason": reason}
    )
    return value or 0.0


def caller_errors(gateway: Gateway, reason: str) -> float:
    value = gateway.metrics.registry.get_sample_value(
        "planelink_gateway_caller_errors_total", {"reason": reason}
    )
    return value or 0.0


_ADDRESSES = itertools.cycle(f"127.0.{a}.{b}" for a in range(1, 4) for b in range(2, 251))


async def silent_socket(
    port: int, address: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection that never sends a byte, from `address` (default: the next of many)."""
    return await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(address or next(_ADDRESSES), 0)
    )


async def closed_by_gateway(reader: asyncio.StreamReader) -> bytes:
    """What the gateway sent before it closed the connection (reset counts as closed)."""
    received = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


# -- the caller port: slow and idle callers -------------------------------------------------------


async def test_a_slowloris_caller_is_cut_at_the_head_deadline_with_408(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    head_timeout = scaled(1.0)
    gateway = await start_gateway(callers={"head_timeout": head_timeout})
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.callers.port, ssl=pki.caller_ssl()
    )
    head = b"GET /planes/ns-a/plane-a/k8s/api HTTP/1.1\r\nHost: x\r\n"
    started = time.monotonic()

    async def trickle() -> None:
        for byte in head:  # one byte at a time, never the final blank line
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(head_timeout / 10)

    trickling = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(closed_by_gateway(reader), head_timeout + WITHIN)
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, ssl.SSLError):
            await trickling
        writer.close()
    assert time.monotonic() - started >= head_timeout
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"reason":"Timeout"' in answer
    assert refused(gateway, "caller", "head_timeout") == 1


async def test_an_idle_keep_alive_connection_is_closed(
    start_gateway: GatewayFactory, pki: Pki, connect_agent_to: ConnectAgentTo
) -> None:
    idle_timeout = scaled(1.0)
    gateway = await start_gateway(callers={"idle_timeout": idle_timeout})
    async with connect_agent_to(gateway, PLANE_A):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.callers.port, ssl=pki.caller_ssl()
        )
        # One request answered and kept alive, then silence.
        writer.write(f"GET /planes/{PLANE_A}/k8s/missing HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
        assert answer.startswith(b"HTTP/1.1 404 ")
        assert b"close" not in answer.lower()
        quiet_since = time.monotonic()
        await asyncio.wait_for(closed_by_gateway(reader), idle_timeout + WITHIN)
        assert time.monotonic() - quiet_since >= idle_timeout * 0.9
        writer.close()
    assert refused(gateway, "caller", "idle_timeout") == 1


ConnectAgentTo = Callable[[Gateway, certs.PlaneRef], contextlib.AbstractAsyncContextManager[object]]


@pytest.fixture
def connect_agent_to(pki: Pki, dial_agent: DialAgent) -> ConnectAgentTo:
    def connect(
        gateway: Gateway, plane: certs.PlaneRef
    ) -> contextlib.AbstractAsyncContextManager[object]:
        return fake_agent(dial_agent, gateway, pki, plane)

    return connect


# -- limits ---------------------------------------------------------------------------------------


async def test_the_per_address_limit_bites_for_one_address_and_not_another(
    start_gateway: GatewayFactory,
) -> None:
    per_ip = 4
    gateway = await start_gateway(
        admission={"max_unauthenticated_per_ip": per_ip, "client_hello_timeout": 60.0}
    )
    port = gateway.callers.port
    other_reader, other = await silent_socket(port, "127.0.9.3")
    held = [(await silent_socket(port, "127.0.9.2"))[1] for _ in range(per_ip)]
    reader, extra = await silent_socket(port, "127.0.9.2")
    try:
        assert await asyncio.wait_for(closed_by_gateway(reader), WITHIN) == b""
        budget = gateway.callers.acceptor.budget
        assert budget.unauthenticated_from("127.0.9.2") == per_ip
        assert budget.unauthenticated_from("127.0.9.3") == 1
        assert refused(gateway, "caller", "per_ip_limit") == 1
        assert refused(gateway, "caller", "evicted") == 0
        assert not other_reader.at_eof()
    finally:
        await close_all([other, extra, *held])


async def test_a_silent_socket_is_closed_at_the_client_hello_deadline(
    start_gateway: GatewayFactory,
) -> None:
    hello_timeout = scaled(0.5)
    gateway = await start_gateway(admission={"client_hello_timeout": hello_timeout})
    started = time.monotonic()
    reader, writer = await silent_socket(gateway.agent_listener.port)
    await asyncio.wait_for(closed_by_gateway(reader), hello_timeout + WITHIN)
    assert time.monotonic() - started >= hello_timeout * 0.9
    writer.close()
    assert refused(gateway, "agent", "client_hello_timeout") == 1
    assert gateway.agent_listener.acceptor.budget.total == 0


async def test_an_agent_gets_in_while_silent_sockets_flood_the_agent_port(
    start_gateway: GatewayFactory, connect_agent_to: ConnectAgentTo
) -> None:
    # The deadline for a ClientHello is long: eviction alone must make room.
    budget_size = 50
    gateway = await start_gateway(
        admission={"max_unauthenticated": budget_size, "client_hello_timeout": 120.0}
    )
    port = gateway.agent_listener.port
    flood: list[asyncio.StreamWriter] = []
    stop = asyncio.Event()

    async def keep_flooding() -> None:
        # Reopened as fast as they are dropped, from many source addresses.
        while not stop.is_set():
            _, writer = await silent_socket(port)
            flood.append(writer)
            await asyncio.sleep(0)

    for _ in range(3 * budget_size):
        flood.append((await silent_socket(port))[1])
    flooding = asyncio.create_task(keep_flooding())
    try:
        started = time.monotonic()
        async with asyncio.timeout(WITHIN):
            async with connect_agent_to(gateway, PLANE_A):
                took = time.monotonic() - started
                assert len(gateway.agents.agents(PLANE_A)) == 1
    finally:
        stop.set()
        await flooding
        await close_all(flood)
    assert took < WITHIN
    assert refused(gateway, "agent", "evicted") >= 2 * budget_size
    assert gateway.agent_listener.acceptor.budget.unauthenticated <= budget_size


async def test_an_idle_flood_of_the_caller_port_leaves_healthz_and_callers_working(
    start_gateway: GatewayFactory, pki: Pki, connect_agent_to: ConnectAgentTo
) -> None:
    budget_size = 100
    gateway = await start_gateway(
        admission={
            "max_connections": 200,
            "max_unauthenticated": budget_size,
            "client_hello_timeout": 120.0,
        }
    )
    flood = [(await silent_socket(gateway.callers.port))[1] for _ in range(3 * budget_size)]
    try:
        async with connect_agent_to(gateway, PLANE_A):
            async with asyncio.timeout(WITHIN):
                async with aiohttp.ClientSession() as operator:
                    url = f"http://127.0.0.1:{gateway.operator_port}/healthz"
                    async with operator.get(url) as health:
                        assert health.status == 200
                async with (
                    caller_session(gateway, pki) as caller,
                    caller.get("/planes/ns-a/plane-a/k8s/echo") as response,
                ):
                    assert response.status == 200
        budget = gateway.callers.acceptor.budget
        assert budget.unauthenticated <= budget_size
        assert budget.total <= 200
    finally:
        await close_all(flood)


# -- the agent port: the upgrade request ----------------------------------------------------------


async def test_an_upgrade_request_with_ten_thousand_headers_is_refused_at_once(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    gateway = await start_gateway()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        gateway.agent_listener.port,
        ssl=pki.agent_ssl(pki.agent_cert(PLANE_A)),
    )
    head = (
        f"GET {AGENT_CONNECT_PATH}?plane={PLANE_A} HTTP/1.1\r\nHost: gateway\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    ).encode() + b"".join(b"X-Filler-%d: x\r\n" % n for n in range(10_000))
    started = time.monotonic()
    with capture_logs() as logs:
        writer.write(head + b"\r\n")
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.drain()
        answer = await asyncio.wait_for(closed_by_gateway(reader), WITHIN)
    writer.close()
    assert time.monotonic() - started < WITHIN
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert f"{REJECTION_HEADER}: UpgradeRequestTooLarge".encode() in answer
    assert any(entry.get("reason") == "UpgradeRequestTooLarge" for entry in logs)


async def test_an_agent_that_never_sends_its_upgrade_request_is_dropped(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    upgrade_timeout = scaled(0.5)
    gateway = await start_gateway(agents={"upgrade_timeout": upgrade_timeout})
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        gateway.agent_listener.port,
        ssl=pki.agent_ssl(pki.agent_cert(PLANE_A)),
    )
    await asyncio.wait_for(closed_by_gateway(reader), upgrade_timeout + WITHIN)
    writer.close()
    assert refused(gateway, "agent", "upgrade_timeout") == 1


async def talk_to(port: int, context: ssl.SSLContext) -> BaseException | None:
    """Send one request and read; the error the TLS layer raised, if any."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    except (ssl.SSLError, ConnectionError) as error:
        return error
    try:
        writer.write(b"GET /planes/ns-a/plane-a/k8s/api HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.read(1)
    except (ssl.SSLError, ConnectionError) as error:
        return error
    finally:
        writer.close()
    return None


def stranger_caller_ssl(pki: Pki) -> ssl.SSLContext:
    """A caller's TLS context with a client certificate from a CA the gateway does not know."""
    stranger = certs.issue_client(certs.create_ca("not the caller CA"), common_name="mallory")
    context = ssl.create_default_context(cadata=pki.gateway_ca.certificate_pem().decode())
    cert, key = pki.directory / "mallory.crt", pki.directory / "mallory.key"
    cert.write_bytes(stranger.certificate_pem())
    key.write_bytes(stranger.private_key_pem())
    context.load_cert_chain(cert, key)
    return context


# -- TLS: a certificate from the wrong CA ---------------------------------------------------------


async def test_a_caller_certificate_from_the_wrong_ca_gets_an_alert_a_log_line_and_a_metric(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    gateway = await start_gateway()
    context = stranger_caller_ssl(pki)
    with capture_logs() as logs:
        error = await asyncio.wait_for(talk_to(gateway.callers.port, context), WITHIN)
    # TLS 1.3 finishes the client's side of the handshake before the server verifies: the
    # alert then arrives on the first read (kubectl: "tls: unknown certificate authority").
    assert isinstance(error, ssl.SSLError)
    assert "ALERT_UNKNOWN_CA" in str(error)
    refusals = [entry for entry in logs if entry["event"] == "caller refused in the TLS handshake"]
    assert [entry["reason"] for entry in refusals] == ["Untrusted"]
    assert refusals[0]["remote"].startswith("127.0.0.1:")
    assert caller_errors(gateway, "Untrusted") == 1
    assert refused(gateway, "caller", "tls_failed") == 1


async def test_an_agent_certificate_from_an_unknown_ca_gets_an_alert_too(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    gateway = await start_gateway()
    stranger = certs.issue_agent(certs.create_ca("nobody's agents"), plane=PLANE_A)
    with capture_logs() as logs:
        error = await asyncio.wait_for(
            talk_to(gateway.agent_listener.port, pki.agent_ssl(stranger)), WITHIN
        )
    assert isinstance(error, ssl.SSLError)
    assert "ALERT_UNKNOWN_CA" in str(error)
    assert any(entry.get("reason") == "Untrusted" for entry in logs)
    assert refused(gateway, "agent", "tls_failed") == 1


async def test_a_flood_of_failed_handshakes_is_counted_in_full_and_logged_once(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    gateway = await start_gateway()
    context = stranger_caller_ssl(pki)
    with capture_logs() as logs:
        for _ in range(5):
            await asyncio.wait_for(talk_to(gateway.callers.port, context), WITHIN)
    lines = [entry for entry in logs if entry["event"] == "caller refused in the TLS handshake"]
    assert len(lines) == 1
    assert caller_errors(gateway, "Untrusted") == 5
    assert refused(gateway, "caller", "tls_failed") == 5
