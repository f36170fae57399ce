"""A request head the gateway accepts but the tunnel cannot carry: 431, not a generic 400.

The agent's MAX_HEADER_BLOCK_SIZE (64 KiB by default) counts six bytes of framing per field
where the caller's head counts four, so a head of many fields just under the gateway's own
bound (`CallerSettings.max_head_bytes`, 64 KiB) is too large for the agent.
"""

from __future__ import annotations

import asyncio
import json

from gateway.app import Gateway
from protocol import Settings
from tests.kit.gateway_lab import PLANE_A, AgentFactory, Pki

PATH = "/api/v1/namespaces"
URL = f"/planes/{PLANE_A.namespace}/{PLANE_A.name}/k8s{PATH}"


def _fields(count: int, value_size: int) -> list[tuple[bytes, bytes]]:
    return [(b"x-f%03d" % i, b"v" * value_size) for i in range(count)]


async def test_a_head_larger_than_the_agent_accepts_is_431(
    gateway: Gateway, pki: Pki, connect_agent: AgentFactory
) -> None:
    fields = [(b"Host", b"gw"), *_fields(250, 251)]
    # What the gateway's reader counts, and the REQUEST payload it would put on the tunnel
    # (method, target, path, then each forwarded field with its u16 and u32 lengths).
    head_size = len(URL) + sum(len(name) + len(value) + 4 for name, value in fields)
    tunnel_size = 1 + 3 + 1 + 4 + len(PATH) + sum(6 + len(n) + len(v) for n, v in fields[1:])
    limit = Settings().max_header_block_size
    assert head_size <= 64 * 1024 < tunnel_size
    assert tunnel_size > limit

    head = b"\r\n".join(
        [f"GET {URL} HTTP/1.1".encode(), *(name + b": " + value for name, value in fields)]
    )
    async with connect_agent(PLANE_A):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            gateway.callers.port,
            ssl=pki.caller_ssl(),
            server_hostname="localhost",
        )
        try:
            writer.write(head + b"\r\n\r\n")
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.transport.abort()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 431 "), answer[:300]
    status = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert status["code"] == 431
    assert status["reason"] == "BadRequest"
    assert "MAX_HEADER_BLOCK_SIZE" in status["message"]
