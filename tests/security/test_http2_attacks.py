"""The HTTP/2 attacks that hit real servers, against the gateway's caller port: each ends in a
clear GOAWAY or stream reset, leaves the gateway's memory where it was, and a bystander caller
(a watch and GETs on its own connection) does not notice.

The frames are written raw where h2's client would refuse to send them."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import h2.errors
import h2.settings
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from gateway.app import Gateway, GatewaySettings
from http2.server import ServerLimits
from tests.kit.gateway_lab import AgentFactory, Pki, PlanePair
from tests.kit.h2_caller import H2Caller, StreamWasReset
from tests.kit.waits import eventually, scaled

A = "/planes/ns-a/plane-a/k8s"
LIMITS = ServerLimits(
    max_concurrent_streams=100,
    max_header_list_size=16 * 1024,
    rapid_reset_budget=50,
    control_frame_budget=50,
)
CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


@pytest.fixture
def loopback_gateway_settings(
    loopback_gateway_settings: Callable[[Path], GatewaySettings],
) -> Callable[[Path], GatewaySettings]:
    def settings(directory: Path) -> GatewaySettings:
        base = loopback_gateway_settings(directory)
        return replace(base, callers=replace(base.callers, http2_limits=LIMITS))

    return settings


@asynccontextmanager
async def bystander(gateway: Gateway, pki: Pki) -> AsyncIterator[H2Caller]:
    """A caller with a watch open, checked to still get answers once the attack is over."""
    async with await H2Caller.connect(gateway.callers.port, pki.caller_ssl()) as caller:
        watch = caller.request(f"{A}/forever?watch=1")
        assert await caller.read(watch) == b'{"type":"ADDED"}\n'
        yield caller
        assert (await caller.get(f"{A}/echo"))[0] == 200
        assert not caller.closed.is_set()
        assert caller.goaway is None


@contextmanager
def gateway_memory(bound: int) -> Iterator[None]:
    """The Python heap grows by at most `bound` bytes over the block (the attack included)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        yield
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before <= bound, f"the heap grew by {after - before} bytes"


async def attacker(gateway: Gateway, pki: Pki) -> H2Caller:
    caller = await H2Caller.connect(gateway.callers.port, pki.caller_ssl())
    async with asyncio.timeout(scaled(10)):
        await caller.settings_acked.wait()
    return caller


def head(caller: H2Caller, stream_id: int, *, flags: tuple[str, ...] = ("END_STREAM",)) -> bytes:
    frame = HeadersFrame(stream_id, flags=["END_HEADERS", *flags])
    frame.data = caller.h2.encoder.encode(
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"gw"),
            (b":path", f"{A}/echo".encode()),
        ]
    )
    return frame.serialize()


def errors(gateway: Gateway, code: str) -> float:
    name = "planelink_gateway_http2_connection_errors_total"
    return gateway.metrics.registry.get_sample_value(name, {"code": code}) or 0.0


async def test_rapid_reset(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]), bystander(gateway, pki):
        with gateway_memory(2 * 1024 * 1024):
            async with await attacker(gateway, pki) as caller:
                flood = b"".join(
                    head(caller, n) + RstStreamFrame(n, error_code=8).serialize()
                    for n in range(1, 2000, 2)
                )
                caller.send_raw(flood)
                assert (await caller.wait_goaway()).error_code == CALM
    assert errors(gateway, "ENHANCE_YOUR_CALM") == 1


async def test_continuation_flood(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]), bystander(gateway, pki):
        with gateway_memory(2 * 1024 * 1024):
            async with await attacker(gateway, pki) as caller:
                start = HeadersFrame(1)  # no END_HEADERS: a header block without end
                start.data = caller.h2.encoder.encode([(b":method", b"GET")])
                caller.send_raw(start.serialize())
                piece = ContinuationFrame(1)
                piece.data = b"\x00" * 16_000
                for _ in range(400):  # 6.4 MB of block, were it all read
                    caller.send_raw(piece.serialize())
                assert (await caller.wait_goaway()).error_code == CALM
    assert errors(gateway, "ENHANCE_YOUR_CALM") == 1


@pytest.mark.parametrize("frame", ["settings", "ping"])
async def test_control_frame_flood(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair, frame: str
) -> None:
    async with (
        connect_agent(planes[0]),
        bystander(gateway, pki),
        await attacker(gateway, pki) as caller,
    ):
        one = (
            SettingsFrame(0).serialize()
            if frame == "settings"
            else PingFrame(0, opaque_data=b"12345678").serialize()
        )
        caller.send_raw(one * 10_000)
        assert (await caller.wait_goaway()).error_code == CALM
    assert errors(gateway, "ENHANCE_YOUR_CALM") == 1


async def test_an_oversized_header_list(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]),
        bystander(gateway, pki),
        await attacker(gateway, pki) as caller,
    ):
        # Over the advertised list size: answered 431 on its stream, the connection lives.
        big = caller.request(f"{A}/echo", headers=[(b"x-big", b"a" * 20_000)])
        assert (await caller.response(big))[0] == 431
        assert (await caller.get(f"{A}/echo"))[0] == 200
        # Over twice it: the connection ends.
        caller.request(f"{A}/echo", headers=[(b"x-big", b"a" * 40_000)])
        assert (await caller.wait_goaway()).error_code == CALM


async def test_too_many_concurrent_streams(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]),
        bystander(gateway, pki),
        await attacker(gateway, pki) as caller,
    ):
        watches = [caller.request(f"{A}/forever?watch=1&n={n}") for n in range(100)]
        for watch in watches:
            assert (await caller.response(watch))[0] == 200
        # The stream past the limit is refused on its own (a client retries it later). h2's
        # client keeps to the advertised limit: told a larger one, it sends the stream.
        caller.h2.remote_settings = type(caller.h2.remote_settings)(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000}
        )
        over = caller.request(f"{A}/echo")
        with pytest.raises(StreamWasReset) as reset:
            await caller.response(over)
        assert reset.value.code == h2.errors.ErrorCodes.REFUSED_STREAM
        caller.reset(watches[0])
        assert (await caller.get(f"{A}/echo"))[0] == 200
        assert caller.goaway is None


async def test_a_zero_window_stalls_only_its_own_streams(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    """A caller that opens big answers and never opens its window: the gateway holds what the
    windows allowed and no more, and stops the agent's side through the tunnel's credit."""
    async with connect_agent(planes[0]), bystander(gateway, pki):
        with gateway_memory(8 * 1024 * 1024):
            async with await attacker(gateway, pki) as caller:
                stalled = [caller.request(f"{A}/big=100000000") for _ in range(20)]
                for stream in stalled:
                    assert (await caller.response(stream))[0] == 200
                await eventually(
                    lambda: all(caller.buffered(s) >= 65_535 for s in stalled),
                    within=10,
                    message="every stalled stream got one window",
                )
                # A window update for the connection alone moves nothing more.
                caller.send_raw(WindowUpdateFrame(0, window_increment=1 << 20).serialize())
                assert (await caller.get(f"{A}/echo"))[0] == 200
                assert all(caller.buffered(s) == 65_535 for s in stalled)
