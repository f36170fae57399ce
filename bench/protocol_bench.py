"""Throughput of the tunnel protocol core on one core, no sockets.

Run: ``python -m bench.protocol_bench [--quick] [--profile CASE]``

Cases (each is an encode + decode round trip):

* ``codec-256``: ``Data(...).encode()`` then ``decode_message()``, one frame per message;
* ``codec-256-batch64``: the same with 64 frames per message;
* ``codec-64k``: 64 KiB frames;
* ``conn-256``: two ``Connection`` objects: ``send_data`` 256 bytes -> ``data_to_send`` ->
  ``receive_data`` -> ``events_received`` -> ``consumed``, one frame per message (an
  interactive exec session: every keystroke is its own message);
* ``conn-256-x64``: 64 streams each sending 256 bytes per round, pulled together (a busy
  gateway: many streams' frames batched into one message);
* ``conn-64k``: 64 KiB chunks on one stream.

Prints a table and a JSON document (frames/s and MB/s, MB = 10**6 bytes).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from collections.abc import Callable

from protocol import Connection, DataReceived, Role, SendLimits, Settings
from protocol.frames import Data, decode_message

BIG = Settings(
    max_frame_size=65_536,
    max_message_size=4 << 20,
    initial_stream_window=2**31 - 1,
    connection_window=2**31 - 1,
    max_concurrent_streams=1024,
)
LIMITS = SendLimits(max_stream_buffer=8 << 20, max_connection_buffer=64 << 20)


def pair() -> tuple[Connection, Connection]:
    gateway = Connection(Role.GATEWAY, settings=BIG, limits=LIMITS)
    agent = Connection(Role.AGENT, settings=BIG, limits=LIMITS)
    for msg in gateway.data_to_send():
        agent.receive_data(msg)
    for msg in agent.data_to_send():
        gateway.receive_data(msg)
    gateway.events_received()
    agent.events_received()
    return gateway, agent


def open_streams(gateway: Connection, agent: Connection, count: int) -> list[int]:
    sids = [gateway.send_request(method=b"GET", path=b"/", end_stream=True) for _ in range(count)]
    for msg in gateway.data_to_send():
        agent.receive_data(msg)
    agent.events_received()
    for sid in sids:
        agent.send_response(sid, status=200)
    for msg in agent.data_to_send():
        gateway.receive_data(msg)
    gateway.events_received()
    return sids


def codec(size: int, per_message: int, frames: int) -> tuple[int, int]:
    payload = b"x" * size
    rounds = frames // per_message
    for _ in range(rounds):
        message = b"".join([Data(1, payload).encode(1) for _ in range(per_message)])
        for _version, frame in decode_message(message, max_frame_size=65_536):
            assert len(frame.data) == size  # type: ignore[union-attr]
    return rounds * per_message, rounds * per_message * size


def connection(size: int, streams: int, frames: int) -> tuple[int, int]:
    gateway, agent = pair()
    sids = open_streams(gateway, agent, streams)
    payload = b"x" * size
    send, pull = agent.send_data, agent.data_to_send
    receive, events, consumed = gateway.receive_data, gateway.events_received, gateway.consumed
    delivered = 0
    count = 0
    for _ in range(frames // streams):
        for sid in sids:
            send(sid, payload)
        for msg in pull():
            receive(msg)
        for event in events():
            if type(event) is DataReceived:
                n = len(event.data)
                consumed(event.stream_id, n)
                delivered += n
                count += 1
    for msg in gateway.data_to_send():  # window updates go back, as they would on a socket
        agent.receive_data(msg)
    assert delivered == (frames // streams) * streams * size
    return count, delivered


CASES: dict[str, Callable[[int], tuple[int, int]]] = {
    "codec-256": lambda n: codec(256, 1, n),
    "codec-256-batch64": lambda n: codec(256, 64, n),
    "codec-64k": lambda n: codec(65_536, 1, n // 20),
    "conn-256": lambda n: connection(256, 1, n),
    "conn-256-x64": lambda n: connection(256, 64, n),
    "conn-64k": lambda n: connection(65_536, 1, n // 20),
}


def measure(name: str, frames: int, repeat: int) -> dict[str, float | int | str]:
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        count, nbytes = CASES[name](frames)
        elapsed = time.perf_counter() - start
        if best is None or elapsed < best[0]:
            best = (elapsed, count, nbytes)
    assert best is not None
    elapsed, count, nbytes = best
    return {
        "case": name,
        "frames": count,
        "seconds": round(elapsed, 4),
        "frames_per_s": round(count / elapsed),
        "mb_per_s": round(nbytes / elapsed / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, one repetition")
    parser.add_argument("--profile", choices=sorted(CASES), help="cProfile one case instead")
    args = parser.parse_args(argv)
    frames = 20_000 if args.quick else 200_000
    repeat = 1 if args.quick else 3
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(CASES[args.profile], frames)
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
        return 0
    results = [measure(name, frames, repeat) for name in CASES]
    print(f"{'case':<20} {'frames':>9} {'seconds':>8} {'frames/s':>11} {'MB/s':>9}")
    for r in results:
        print(
            f"{r['case']:<20} {r['frames']:>9} {r['seconds']:>8} "
            f"{r['frames_per_s']:>11,} {r['mb_per_s']:>9,}"
        )
    print(json.dumps({"python": sys.version.split()[0], "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
