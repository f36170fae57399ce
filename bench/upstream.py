"""A fast, minimal HTTPS upstream that speaks just enough Kubernetes-shaped HTTP.

Run alone: ``python -m bench.upstream --port P --cert C --key K``. It runs in its own process so
that the tunnel, not the upstream, is what the benchmarks measure. It offers ``h2`` and
``http/1.1`` in ALPN, as kube-apiserver does: a client that picks h2 is served by
`bench.upstream_h2` (same endpoints), any other by aiohttp. Endpoints:

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

from bench.upstream_h2 import DEFAULT_MAX_STREAMS, H2UpstreamProtocol

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


class _AlpnDispatch(asyncio.Protocol):
    """Hands a connection, once its TLS handshake is done, to the protocol ALPN picked."""

    def __init__(self, http1: web.Server, max_streams: int) -> None:
        self._http1 = http1
        self._max_streams = max_streams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = transport.get_extra_info("ssl_object")
        picked = tls.selected_alpn_protocol() if tls is not None else None
        protocol: asyncio.BaseProtocol
        if picked == "h2":
            protocol = H2UpstreamProtocol(SMALL, max_streams=self._max_streams)
        else:
            protocol = self._http1()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


async def serve(
    port: int, context: ssl.SSLContext, *, max_streams: int = DEFAULT_MAX_STREAMS
) -> asyncio.Server:
    """The upstream on 127.0.0.1:`port` (HTTP/1.1 and h2 by ALPN); returns the listening server."""
    context.set_alpn_protocols(["h2", "http/1.1"])
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    http1 = runner.server
    assert http1 is not None
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _AlpnDispatch(http1, max_streams), "127.0.0.1", port, ssl=context, backlog=4096
    )


async def _run(port: int, context: ssl.SSLContext, max_streams: int) -> None:
    server = await serve(port, context, max_streams=max_streams)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument(
        "--h2-max-streams",
        type=int,
        default=DEFAULT_MAX_STREAMS,
        help="SETTINGS_MAX_CONCURRENT_STREAMS offered to HTTP/2 clients",
    )
    args = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    asyncio.run(_run(args.port, context, args.h2_max_streams))


if __name__ == "__main__":
    main()
