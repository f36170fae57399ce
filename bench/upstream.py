"""A fast, minimal HTTPS upstream that speaks just enough Kubernetes-shaped HTTP.

Run alone: ``python -m bench.upstream --port P --cert C --key K``. It runs in its own process so
that the tunnel, not the upstream, is what the benchmarks measure. Endpoints:

* ``GET /api/v1/namespaces/bench/configmaps/small``: a small JSON object (~200 bytes);
* ``GET /bytes/{n}``: a stream of ``n`` bytes in 256 KiB chunks (``?watch=true`` is accepted so
  the gateway treats it as long-running);
* ``GET /api/v1/namespaces/bench/configmaps?watch=true&events=N&interval=S``: a watch-like
  chunked stream of ``N`` JSON event lines, one every ``S`` seconds (``events=0``: forever).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl

from aiohttp import web

SMALL = json.dumps(
    {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "small", "namespace": "bench", "resourceVersion": "1"},
        "data": {"key": "value"},
    }
).encode()
CHUNK = bytes(256 * 1024)


async def small(request: web.Request) -> web.Response:
    return web.Response(body=SMALL, content_type="application/json")


async def stream_bytes(request: web.Request) -> web.StreamResponse:
    remaining = int(request.match_info["n"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = remaining
    await response.prepare(request)
    view = memoryview(CHUNK)
    while remaining > 0:
        if _gone(request):
            break
        piece = view[: min(remaining, len(CHUNK))]
        await response.write(piece)
        # When the client's socket fails, asyncio drops further writes with a warning, and
        # the TLS transport says it is closing only once connection_lost() has run: a loop
        # whose writes never wait must yield, or it spins forever encrypting into nothing
        # (and the upstream answers no one else).
        await asyncio.sleep(0)
        remaining -= len(piece)
    await response.write_eof()
    return response


async def watch(request: web.Request) -> web.StreamResponse:
    if request.query.get("watch") not in ("true", "1"):
        return web.json_response({"kind": "ConfigMapList", "items": []})
    events = int(request.query.get("events", "0"))
    interval = float(request.query.get("interval", "1"))
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    while events == 0 or sent < events:
        if _gone(request):
            break
        event = {"type": "MODIFIED", "object": {"kind": "ConfigMap", "n": sent}}
        await response.write(json.dumps(event).encode() + b"\n")
        sent += 1
        await asyncio.sleep(interval)
    await response.write_eof()
    return response


def _gone(request: web.Request) -> bool:
    """The client closed the connection (the agent aborts it when its caller goes away)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", small)
    app.router.add_get("/api/v1/namespaces/bench/configmaps/small", small)
    app.router.add_get("/bytes/{n}", stream_bytes)
    app.router.add_get("/api/v1/namespaces/bench/configmaps", watch)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=args.port,
        ssl_context=context,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
