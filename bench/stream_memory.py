"""What one open stream costs in the tunnel itself, without the TLS connections around it.

Run: ``python -m bench.stream_memory [--streams N]``

The end-to-end `watches` workload measures a watch as users see it: in the gateway a caller's
TLS connection (HTTP/1.1 carries one request at a time) and in the agent a TLS connection to
the API server, around one tunnel stream. This measures the stream alone: two `TunnelSession`s
(gateway and agent) over an in-memory channel, N watch-like streams opened, each answered with
a head and one event and then left open, as a watch waits for its next event. Python's
allocations are traced (`tracemalloc`) before and after, per side: what the session, the
protocol's stream state, the `TunnelStream`, and (agent side) the handler task hold per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc

from protocol import Connection, RequestReceived, Role, Settings
from tunnel import TunnelSession, TunnelStream, memory_channel_pair

EVENT = b'{"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"x"}}}\n'


async def measure(streams: int) -> dict[str, float]:
    settings = Settings(max_concurrent_streams=streams + 16)
    gateway_end, agent_end = memory_channel_pair(max_messages=1024)
    hold = asyncio.Event()
    answered = asyncio.Semaphore(0)

    async def handler(stream: TunnelStream, request: RequestReceived) -> None:
        stream.respond(200, [(b"content-type", b"application/json")])
        await stream.write(EVENT)
        answered.release()
        await hold.wait()  # a watch waiting for its next event

    gateway = TunnelSession(gateway_end, Connection(Role.GATEWAY, settings=settings))
    agent = TunnelSession(
        agent_end, Connection(Role.AGENT, settings=settings), request_handler=handler
    )
    tasks = [asyncio.create_task(gateway.run()), asyncio.create_task(agent.run())]
    await gateway.wait_ready()
    await agent.wait_ready()
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    opened = []
    for _ in range(streams):
        stream = gateway.open_stream(method="GET", path="/api/v1/configmaps?watch=true")
        opened.append(stream)
    for _ in range(streams):
        await answered.acquire()
    for stream in opened:
        await stream.response()
        got = b""
        while len(got) < len(EVENT):  # DATA may be split where a message fills up
            got += await stream.read()
        assert got == EVENT, (got, stream.stream_id)
    gc.collect()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hold.set()
    gateway.close("done")
    agent.close("done")
    await asyncio.gather(*tasks)
    # Both sessions live in this process: split by what each side allocates is not traced, so
    # report the pair and half of it (the two sides hold symmetric state, plus the agent's task).
    pair = (after - before) / streams
    return {"streams": streams, "bytesPerStreamBothSides": pair, "bytesPerStreamPerSide": pair / 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stream_memory", description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.streams))
    print(
        f"{result['streams']:,} open streams: {result['bytesPerStreamBothSides'] / 1024:.1f} KiB "
        f"per stream for gateway + agent together, "
        f"~{result['bytesPerStreamPerSide'] / 1024:.1f} KiB per side"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
