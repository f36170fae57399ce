"""Callers over HTTP/2: the caller port offers h2 in ALPN, and each stream of a connection is a
request relayed as an HTTP/1.1 one is (routing, refusals, request ids, metrics), with its own
flow control and its own failures."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h2.errors
import pytest
from hyperframe.frame import HeadersFrame, RstStreamFrame
from structlog.testing import capture_logs

from gateway.app import Gateway, GatewaySettings
from http2.server import ServerLimits
from protocol import RequestReceived
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair, default_handler
from tests.kit.h2_caller import H2Caller, StreamWasReset
from tests.kit.waits import eventually, scaled
from tunnel import TunnelStream

A = "/planes/ns-a/plane-a/k8s"
B = "/planes/ns-b/plane-b/k8s"
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"gw")]


@pytest.fixture
def idle_timeout() -> float:
    return scaled(30)


@pytest.fixture
def loopback_gateway_settings(
    loopback_gateway_settings: Callable[[Path], GatewaySettings], idle_timeout: float
) -> Callable[[Path], GatewaySettings]:
    def settings(directory: Path) -> GatewaySettings:
        base = loopback_gateway_settings(directory)
        limits = ServerLimits(rapid_reset_budget=50, max_concurrent_streams=1000)
        callers = replace(base.callers, idle_timeout=idle_timeout, http2_limits=limits)
        return replace(base, callers=callers)

    return settings


async def h2_caller(gateway: Gateway, pki: Pki) -> H2Caller:
    return await H2Caller.connect(gateway.callers.port, pki.caller_ssl())


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_requests_on_one_connection_are_relayed_like_http1_ones(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]), await h2_caller(gateway, pki) as caller:
        with capture_logs() as logs:
            status, headers, body = await caller.get(f"{A}/echo", headers=[(b"x-mine", b"1")])
        await eventually(
            lambda: any(line["event"] == "access" for line in logs), within=10, message="logged"
        )
        (access,) = [line for line in logs if line["event"] == "access"]
        assert (access["protocol"], access["status"]) == ("http2", 200)
        assert status == 200
        assert headers[b"x-seen-x-mine"] == b"1"
        request_id = headers[b"planelink-request-id"]
        assert headers[b"x-seen-planelink-request-id"] == request_id
        assert body == b""
        # A body goes to the agent and comes back (the echo), in pieces larger than a frame.
        payload = bytes(range(256)) * 1000
        stream = caller.request(f"{A}/echo", method="PUT", body=payload)
        assert (await caller.response(stream))[0] == 200
        assert await caller.body(stream) == payload
        # Refusals are Status answers on their stream; the connection goes on.
        status, headers, body = await caller.get("/planes/nope/nope/k8s/api")
        assert status == 404
        assert json.loads(body)["reason"] == "NotFound"
        assert headers[b"warning"].startswith(b'299 - "dataplane nope/nope not found')
        status, _, _ = await caller.get(f"{A}/echo", headers=[(b"impersonate-user", b"root")])
        assert status == 403
        assert (await caller.get(f"{A}/echo"))[0] == 200
    assert sample(gateway, "planelink_gateway_requests_by_protocol_total", protocol="http2") == 5
    assert sample(gateway, "planelink_gateway_caller_connections_total", protocol="http2") == 1
    assert sample(gateway, "planelink_gateway_requests_by_protocol_total", protocol="http1") == 0


async def test_an_unread_watch_stalls_nothing_else_on_its_connection(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    limits = gateway.settings.callers.http2_limits
    async with connect_agent(planes[0]), await h2_caller(gateway, pki) as caller:
        unread = caller.request(f"{A}/big=50000000")
        assert (await caller.response(unread))[0] == 200
        # It fills its window, no more: the agent's stream waits on the tunnel's credit.
        await eventually(lambda: caller.buffered(unread) >= 65_535, within=10, message="one window")
        for _ in range(20):
            assert (await caller.get(f"{A}/echo"))[0] == 200
        assert caller.buffered(unread) <= 65_535
        # Read, it goes on.
        got = 0
        while got < 1_000_000:
            got += len(await caller.read(unread))
        caller.reset(unread)
    assert limits.max_concurrent_streams == 1000


async def test_a_caller_reset_ends_its_agent_stream_alone(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    ended: list[str] = []

    async def handler(stream: TunnelStream, request: RequestReceived) -> None:
        try:
            await default_handler(stream, request)
        finally:  # the agent's handler is cancelled when its stream is reset
            ended.append(request.path.decode())

    async with (
        connect_agent(planes[0], handler=handler),
        await h2_caller(gateway, pki) as caller,
    ):
        watches = [caller.request(f"{A}/forever?watch=1&n={n}") for n in range(50)]
        for watch in watches:
            assert (await caller.response(watch))[0] == 200
            assert await caller.read(watch) == b'{"type":"ADDED"}\n'
        caller.reset(watches[7])
        await eventually(lambda: ended == ["/forever?watch=1&n=7"], within=10, message="one ended")
        assert sample(gateway, "planelink_gateway_streams_active", plane="ns-a/plane-a") == 49
        assert (await caller.get(f"{A}/echo"))[0] == 200
    # The connection's end ends the others.
    await eventually(
        lambda: sorted(ended) == sorted([*(f"/forever?watch=1&n={n}" for n in range(50)), "/echo"]),
        within=10,
        message="all ended",
    )
    await eventually(
        lambda: sample(gateway, "planelink_gateway_streams_active", plane="ns-a/plane-a") == 0,
        within=10,
        message="no stream active",
    )


async def test_an_agent_answer_that_breaks_its_length_resets_its_stream_alone(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async def handler(stream: TunnelStream, request: RequestReceived) -> None:
        if request.path == b"/lying":
            stream.respond(200, [(b"content-length", b"3")])
            await stream.write(b"abcdef")
            stream.end()
            return
        await default_handler(stream, request)

    async with (
        connect_agent(planes[0], handler=handler),
        await h2_caller(gateway, pki) as caller,
    ):
        watch = caller.request(f"{A}/forever?watch=1")
        lying = caller.request(f"{A}/lying")
        assert (await caller.response(lying))[0] == 200
        with pytest.raises(StreamWasReset) as reset:
            await caller.body(lying)
        assert reset.value.code == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert await caller.read(watch) == b'{"type":"ADDED"}\n'
        assert (await caller.get(f"{A}/echo"))[0] == 200
    relay_errors = "planelink_gateway_relay_errors_total"
    assert sample(gateway, relay_errors, plane="ns-a/plane-a", reason="agent_response") == 1


async def test_a_rapid_reset_flood_ends_its_connection_and_no_other(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]),
        await h2_caller(gateway, pki) as bystander,
        await h2_caller(gateway, pki) as attacker,
    ):
        watch = bystander.request(f"{A}/forever?watch=1")
        assert await bystander.read(watch) == b'{"type":"ADDED"}\n'
        await attacker.settings_acked.wait()
        flood = bytearray()
        for n in range(200):
            stream_id = 2 * n + 1
            headers = HeadersFrame(stream_id, flags=["END_HEADERS", "END_STREAM"])
            headers.data = attacker.h2.encoder.encode([*GET, (b":path", f"{A}/echo".encode())])
            flood += headers.serialize() + RstStreamFrame(stream_id, error_code=8).serialize()
        attacker.send_raw(bytes(flood))
        goaway = await attacker.wait_goaway()
        assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert (await bystander.get(f"{A}/echo"))[0] == 200
        assert not bystander.closed.is_set()
    errors = "planelink_gateway_http2_connection_errors_total"
    assert sample(gateway, errors, code="ENHANCE_YOUR_CALM") == 1


@pytest.mark.parametrize("idle_timeout", [scaled(0.5)])
async def test_an_idle_connection_gets_a_goaway_and_is_closed(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]), await h2_caller(gateway, pki) as caller:
        assert (await caller.get(f"{A}/echo"))[0] == 200
        goaway = await caller.wait_goaway()
        assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        async with asyncio.timeout(scaled(10)):
            await caller.closed.wait()
    await eventually(lambda: gateway.callers.active_connections == 0, within=10, message="closed")


async def test_a_stop_sends_goaway_and_lets_the_open_request_finish(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]), await h2_caller(gateway, pki) as caller:
        upload = caller.request(f"{A}/echo", method="PUT", end=False)
        assert (await caller.response(upload))[0] == 200
        stopping = asyncio.create_task(gateway.callers.stop(grace=scaled(10)))
        goaway = await caller.wait_goaway()
        assert (goaway.error_code, goaway.last_stream_id) == (0, upload)
        await caller.send(upload, b"last words", end=True)
        assert await caller.body(upload) == b"last words"
        await stopping


async def test_http2_can_be_turned_off(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> None:
    settings = loopback_gateway_settings(pki.directory)
    gateway = Gateway(replace(settings, callers=replace(settings.callers, http2=False)))
    await gateway.start()
    try:
        context = pki.caller_ssl()
        context.set_alpn_protocols(["h2", "http/1.1"])
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.callers.port, ssl=context)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        writer.close()
    finally:
        await gateway.stop()


@pytest.mark.parametrize("version", ["--http2", "--http1.1"])
async def test_curl_speaks_either_version(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair, version: str
) -> None:
    tmp_path = pki.directory
    curl = shutil.which("curl")
    assert curl is not None, "curl is installed by scripts/test"
    (tmp_path / "ca.crt").write_bytes(pki.gateway_ca.certificate_pem())
    pki.caller_ssl()  # writes caller.crt and caller.key
    async with connect_agent(planes[0]):
        done = await asyncio.to_thread(
            subprocess.run,
            [
                curl, "-sS", version, "--cacert", str(tmp_path / "ca.crt"),
                "--cert", str(tmp_path / "caller.crt"), "--key", str(tmp_path / "caller.key"),
                "-w", "\n%{http_version} %{http_code}", "--data-binary", "hello",
                "-X", "PUT", f"https://127.0.0.1:{gateway.callers.port}{A}/echo",
            ],
            capture_output=True,
            timeout=scaled(30),
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body, _, outcome = done.stdout.decode().rpartition("\n")
    assert body == "hello"
    assert outcome == ("2 200" if version == "--http2" else "1.1 200")


async def test_refused_uploads_give_their_body_back_to_the_connection_window(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    limits = gateway.settings.callers.http2_limits
    async with connect_agent(planes[0]), await h2_caller(gateway, pki) as caller:
        body = b"u" * 64 * 1024
        refused = 3 * limits.connection_window // len(body)  # three windows' worth
        for _ in range(refused):
            stream = caller.request("/planes/nope/nope/k8s/api/v1/pods", method="POST", body=body)
            assert (await caller.response(stream))[0] == 404
        payload = b"p" * 512 * 1024
        stream = caller.request(f"{A}/echo", method="PUT", body=payload)
        assert (await caller.response(stream))[0] == 200
        assert await caller.body(stream) == payload
