"""The attacks that already hold, under load: `python -m bench.hostile_known [--seconds N]`.

Starts the bench stack (the fast upstream, a `planelink gateway` process, a real agent for
plane `bench/fast`) with a second plane `bench/hostile` that has no agent of its own. Then,
for `--seconds`:

- hostile agents of `bench/hostile`, each with a valid certificate and a proper HELLO, send
  one malformed tunnel frame (`MALFORMED_FRAMES`, in turn) and are timed until the gateway
  closes their socket;
- hostile callers write requests with ambiguous framing (`SMUGGLING`) on raw TLS sockets and
  must get a 400 and a closed connection;
- a legitimate caller GETs a small object from `bench/fast` back to back.

It prints, as JSON: the gateway's VmRSS before, at its peak and after (and the growth), how
long each hostile agent took to be dropped (median, max), how many hostile requests were
refused, and the p50/p99 of the small GETs unloaded and under attack (and their ratio). The
attackers run back to back in this process, so most of the load they add is TLS handshakes
(the gateway's and theirs, on the same cores): the figures describe a loaded machine, not
the speed of a refusal.

This module also holds the malformed frames (`MALFORMED_FRAMES`) that the security suite
(`tests/security/test_known_frames.py`) sends; it never changes a running gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.client import Latencies, closed_loop, session
from bench.processes import FAST, Stack, rss_bytes
from bench.workloads import SMALL
from certs import PlaneRef, plane_ref
from protocol import Connection, ErrorCode, Role
from protocol.frames import (
    HEADER,
    MAX_STREAM_ID,
    Data,
    Flag,
    FrameType,
    Ping,
    Replicas,
    Request,
    Reset,
    WindowUpdate,
    encode_data_header,
)
from tunnel.contract import AGENT_CONNECT_PATH, IDENTITY_AGENT_ID, IDENTITY_PLANE, SUBPROTOCOL

MIB = 1024 * 1024
HOSTILE = plane_ref("bench", "hostile")

FrameBuilder = Callable[[int], bytes]
"""Bytes of one WebSocket message for a tunnel of the given protocol version."""


def _four_gib_frame(version: int) -> bytes:
    # A DATA header announcing 2**32-1 payload bytes, and no payload.
    return HEADER.pack(version, FrameType.DATA, 0, 0, 2, 2**32 - 1)


def _window_overflow(version: int) -> bytes:
    # Two maximal connection credits: the gateway's send window would pass 2**31-1.
    grant = WindowUpdate(0, MAX_STREAM_ID).encode(version)
    return grant + grant


def _odd_request(version: int) -> bytes:
    # Odd stream ids are the gateway's to open; an agent may open only even ones.
    return Request(stream_id=1, method=b"GET", path=b"/api").encode(version)


def _unknown_type(version: int) -> bytes:
    return HEADER.pack(version, 0x7F, 0, 0, 0, 0)


def _data_on_unopened_stream(version: int) -> bytes:
    return encode_data_header(4, 3, end_stream=False, version=version) + b"abc"


def _data_on_gateway_stream_never_opened(version: int) -> bytes:
    return Data(1, b"stolen", end_stream=True).encode(version)


def _reset_of_stream_never_opened(version: int) -> bytes:
    return Reset(1, ErrorCode.CANCEL, "hang up someone else's stream").encode(version)


def _undefined_flag(version: int) -> bytes:
    frame = bytearray(Ping(b"12345678").encode(version))
    frame[2] = Flag.UPGRADE  # PING carries no flags
    return bytes(frame)


def _replicas_from_an_agent(version: int) -> bytes:
    # Only a gateway names the live replicas: an agent that tries to steer others' tunnels
    # (or the gateway's) is cut off.
    return Replicas((b"forged-replica",)).encode(version)


MALFORMED_FRAMES: dict[str, tuple[FrameBuilder, ErrorCode]] = {
    # case: (the message a verified agent sends, the GOAWAY code the gateway ends it with)
    "4GiB-frame-header": (_four_gib_frame, ErrorCode.FRAME_SIZE_ERROR),
    "window-overflow": (_window_overflow, ErrorCode.FLOW_CONTROL_ERROR),
    "wrong-stream-parity": (_odd_request, ErrorCode.PROTOCOL_ERROR),
    "unknown-frame-type": (_unknown_type, ErrorCode.UNKNOWN_FRAME_TYPE),
    "data-on-unopened-stream": (_data_on_unopened_stream, ErrorCode.PROTOCOL_ERROR),
    "data-on-gateway-stream": (_data_on_gateway_stream_never_opened, ErrorCode.PROTOCOL_ERROR),
    "reset-of-unopened-stream": (_reset_of_stream_never_opened, ErrorCode.PROTOCOL_ERROR),
    "undefined-flag": (_undefined_flag, ErrorCode.PROTOCOL_ERROR),
    "replicas-from-agent": (_replicas_from_an_agent, ErrorCode.PROTOCOL_ERROR),
}

SMUGGLING = (
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"Content-Length: 5\r\nContent-Length: 60\r\n\r\nhello",
    b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"Content-Length: +5\r\n\r\nhello",
)


async def hostile_agent_round(stack: Stack, agent_ssl: ssl.SSLContext, case: str | None) -> float:
    """One hostile agent: connect, HELLO, one malformed frame; seconds until it is cut off.
    With no `case` (the control), the agent closes its WebSocket cleanly instead."""
    url = f"wss://127.0.0.1:{stack.ports['agent']}{AGENT_CONNECT_PATH}?plane={HOSTILE}"
    connection = Connection(
        Role.AGENT, identity={IDENTITY_PLANE: str(HOSTILE), IDENTITY_AGENT_ID: f"hostile-{case}"}
    )
    async with connect(
        url,
        ssl=agent_ssl,
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        ping_interval=None,
    ) as websocket:
        for message in connection.data_to_send():
            await websocket.send(message)
        while connection.peer is None:
            received = await websocket.recv()
            assert isinstance(received, bytes)
            connection.receive_data(received)
        started = time.perf_counter()
        if case is None:
            await websocket.close()
            return time.perf_counter() - started
        encode, _ = MALFORMED_FRAMES[case]
        await websocket.send(encode(connection.peer.version))
        try:
            while True:
                await websocket.recv()
        except ConnectionClosed:
            return time.perf_counter() - started


async def smuggling_round(
    stack: Stack,
    caller_ssl: ssl.SSLContext,
    headers: bytes,
    *,
    method: str = "POST",
    answer_status: int = 400,
) -> bool:
    """One hostile request; True if it was answered `answer_status` and the connection
    closed."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", stack.ports["caller"], ssl=caller_ssl, server_hostname="127.0.0.1"
    )
    try:
        writer.write(
            f"{method} /planes/{FAST}/k8s{SMALL} HTTP/1.1\r\nHost: gateway\r\n".encode() + headers
        )
        answer = await reader.read()  # to EOF: the gateway must close
    finally:
        writer.close()
    return answer.startswith(f"HTTP/1.1 {answer_status} ".encode())


def _agent_ssl(pki: Path, plane: PlaneRef) -> ssl.SSLContext:
    tls = pki / "agents" / plane.namespace / plane.name
    context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    context.load_cert_chain(tls / "tls.crt", tls / "tls.key")
    return context


def _percentiles(latencies: Latencies) -> dict[str, float]:
    return {"p50_ms": latencies.ms(50), "p99_ms": latencies.ms(99), "errors": latencies.errors}


_CONTROL_REQUEST = b"Connection: close\r\n\r\n"
"""The control's caller: a well-framed request on a fresh connection, closed after."""


async def run(seconds: float, requests: int, *, control: bool = False) -> dict[str, object]:
    async with Stack(extra_planes=(HOSTILE,)) as stack:
        pki = stack.workdir / "pki"
        target = stack.through[FAST]
        agent_ssl = _agent_ssl(pki, HOSTILE)
        gateway = stack.pid("gateway")
        async with session(target, 4) as http:
            await closed_loop(target, SMALL, concurrency=4, requests=200, client=http)  # warm
            unloaded, _ = await closed_loop(
                target, SMALL, concurrency=4, requests=requests, client=http
            )
            rss_before = rss_bytes(gateway)
            drops: list[float] = []
            refused = [0, 0]  # refused as expected, hostile requests sent
            deadline = time.perf_counter() + seconds

            async def agents() -> None:
                cases: list[str | None] = [None] if control else list(MALFORMED_FRAMES)
                while time.perf_counter() < deadline:
                    case = cases[len(drops) % len(cases)]
                    drops.append(await hostile_agent_round(stack, agent_ssl, case))

            heads = (_CONTROL_REQUEST,) if control else SMUGGLING

            async def callers() -> None:
                while time.perf_counter() < deadline:
                    headers = heads[refused[1] % len(heads)]
                    refused[1] += 1
                    refused[0] += await smuggling_round(
                        stack,
                        target.ssl,
                        headers,
                        method="GET" if control else "POST",
                        answer_status=200 if control else 400,
                    )

            async def sample_rss() -> None:
                while time.perf_counter() < deadline:
                    peak[0] = max(peak[0], rss_bytes(gateway))
                    await asyncio.sleep(0.25)

            peak = [rss_before]
            attack = asyncio.gather(agents(), callers(), sample_rss())
            loaded, _ = await closed_loop(
                target, SMALL, concurrency=4, duration=seconds, client=http
            )
            await attack
            rss_after = rss_bytes(gateway)
    return {
        "mode": "control (clean connects and requests)" if control else "hostile",
        "seconds": seconds,
        "gateway_rss_mib": {
            "before": rss_before / MIB,
            "peak": peak[0] / MIB,
            "after": rss_after / MIB,
            "growth": (rss_after - rss_before) / MIB,
        },
        "hostile_agents": len(drops),
        "drop_ms": {
            "median": statistics.median(drops) * 1000,
            "max": max(drops) * 1000,
        },
        "hostile_requests": {"sent": refused[1], "answered_as_expected_and_closed": refused[0]},
        "small_get_unloaded": _percentiles(unloaded),
        "small_get_under_attack": _percentiles(loaded),
        "p99_ratio": loaded.percentile(99) / unloaded.percentile(99),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile_known", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="attack for (default 20)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="unloaded small GETs (default 2000)"
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="the same loops of connections, but well-behaved: agents that close cleanly "
        "after HELLO and callers with a valid request (what the connections alone cost)",
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.seconds, args.requests, control=args.control))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
