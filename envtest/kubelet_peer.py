"""A stand-in kubelet: an API server for what a real one leaves to the kubelet.

A real kube-apiserver hands `pods/exec`, `pods/log` and `pods/portforward` to a kubelet, which
envtest does not run, so tests of those paths point an agent at this peer instead
(`write_kubeconfig` writes the kubeconfig to reach it with). It serves one running pod and, like
the kubelet behind a real API server:

- answers `pods/<name>/exec` over WebSocket with the `v5.channel.k8s.io` (or
  `v4.channel.k8s.io`) subprotocol kubectl speaks: channel 1 is stdout, channel 3 the final
  Status. What it "runs" is an echo: the command's arguments come back on stdout, then stdin's
  bytes until stdin closes (v5's close message on channel 255), then the Status (with
  stdin, the arguments wait for the first stdin message: see `_echo_exec`);
- answers `pods/<name>/log` with the pod's log; with `follow=true` it streams a chunked body
  that emits each line when the test releases it (`release_log_line`) and ends when the test
  says so (`end_log_stream`), so a test can see lines arrive while the stream is still open;
- answers `pods/<name>/portforward` with the portforward.k8s.io protocol over SPDY/3.1, either
  as a plain `Upgrade: SPDY/3.1` (kubectl with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`) or
  tunnelled in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl's default
  since 1.31). Each forwarded connection is an error stream and a data stream sharing a
  `requestid`; the data stream of a port in `echo_ports` is an echo service.

The server is a small HTTP/1.1 loop of its own rather than aiohttp or websockets: it must both
stream a chunked body a line at a time and hand a connection over to a non-WebSocket upgrade
(SPDY), which neither exposes. A WebSocket upgrade (exec, or tunnelled port-forward) it hands to
websockets' sans-I/O `ServerProtocol`, which checks the handshake, answers it and does the
framing; only the subprotocol is chosen here, as websockets cannot parse port-forward's (it
holds a "/").
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import yaml
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

import certs
from kubeobject.kubeconfig import Credentials, build_kubeconfig

EXEC_SUBPROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
_STDIN, _STDOUT, _STATUS, _CLOSE = 0, 1, 3, 255  # exec's channels (255: v5's close)
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TUNNELLED_PORTFORWARD_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class FakePod:
    namespace: str = "default"
    name: str = "shell"
    container: str = "main"

    def manifest(self) -> dict[str, object]:
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": "0000"},
            "spec": {"containers": [{"name": self.container, "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {"name": self.container, "ready": True, "state": {"running": {}}}
                ],
            },
        }


@dataclass(frozen=True)
class ForwardedConnection:
    """One connection kubectl forwarded: its data stream, as the peer saw it open."""

    transport: str
    """"spdy" (plain upgrade) or "websocket" (SPDY tunnelled in WebSocket messages)."""
    port: int
    request_id: str


class KubeletPeer:
    """`async with KubeletPeer(workdir) as peer:` serves on 127.0.0.1 at `peer.url`."""

    def __init__(
        self,
        workdir: Path,
        *,
        pod: FakePod | None = None,
        log_lines: Sequence[str] = ("first", "second", "third"),
        echo_ports: Iterable[int] = (8080,),
    ) -> None:
        self.pod = pod or FakePod()
        self.log_lines = tuple(log_lines)
        self.echo_ports = frozenset(echo_ports)
        ca = certs.create_ca("kubelet-peer")
        serving = certs.issue_server(ca, common_name="kubelet-peer", ip_addresses=["127.0.0.1"])
        self.ca_file = workdir / "kubelet-peer-ca.crt"
        self.ca_file.write_bytes(ca.certificate_pem())
        (workdir / "kubelet-peer.crt").write_bytes(serving.chain_pem())
        (workdir / "kubelet-peer.key").write_bytes(serving.private_key_pem())
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(workdir / "kubelet-peer.crt", workdir / "kubelet-peer.key")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._log_feed: asyncio.Queue[str | None] = asyncio.Queue()
        self.exec_requests: list[str] = []
        """The target (path and query) of every accepted `pods/<name>/exec` upgrade, in order."""
        self.log_queries: list[dict[str, list[str]]] = []
        """The query of every `pods/<name>/log` request, in order."""
        self.portforward_upgrades: list[str] = []
        """The transport of every accepted port-forward upgrade: "spdy" or "websocket"."""
        self.forwarded: list[ForwardedConnection] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"

    def write_kubeconfig(self, path: Path, credentials: Credentials | None = None) -> Path:
        """Write a kubeconfig that reaches this (running) peer to `path`, and return `path`. The
        peer checks no credentials: whatever `credentials` say (a random token by default), it
        answers."""
        kubeconfig = build_kubeconfig(
            name="kubelet-peer",
            server=self.url,
            ca_pem=self.ca_file.read_bytes(),
            credentials=credentials or Credentials(user="agent", token=secrets.token_urlsafe()),
        )
        path.write_text(yaml.safe_dump(kubeconfig))
        return path

    def release_log_line(self, line: str) -> None:
        """Let the open (or next) `follow=true` log stream emit `line`."""
        self._log_feed.put_nowait(line)

    def end_log_stream(self) -> None:
        """End the `follow=true` log stream, as the kubelet does when the container exits."""
        self._log_feed.put_nowait(None)

    async def __aenter__(self) -> KubeletPeer:
        self._server = await asyncio.start_server(
            self._serve_connection,
            "127.0.0.1",
            0,
            ssl=self._context,
            limit=_MAX_HEAD,
            # A caller that vanished must not hold the peer's shutdown for asyncio's 30 s.
            ssl_shutdown_timeout=5,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Python 3.11's Server.wait_closed() does not wait for the connections' handlers, and
        # a follow stream or a port-forward session lasts until its client leaves: end them.
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._serve_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client left (or sent a head too large to answer): nothing to answer
        except ssl.SSLError:
            pass  # likewise, at the TLS layer
        finally:
            self._connections.discard(task)
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _serve_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; whether the connection may carry another."""
        request = _Request.parse(await reader.readuntil(b"\r\n\r\n"))
        if request.header("transfer-encoding"):
            await _respond(writer, _status(HTTPStatus.BAD_REQUEST, "chunked bodies are not read"))
            return False
        length = request.header("content-length")
        if length:
            await reader.readexactly(int(length))  # no request kubectl sends here needs its body
        keep_alive = request.header("connection").lower() != "close"
        url = urlsplit(request.target)
        query = parse_qs(url.query)
        pod_path = f"/api/v1/namespaces/{self.pod.namespace}/pods/{self.pod.name}"
        if url.path == f"{pod_path}/exec":
            await self._exec(request, query, reader, writer)
            return False
        if url.path == f"{pod_path}/portforward":
            await self._portforward(request, reader, writer)
            return False
        if url.path == f"{pod_path}/log":
            self.log_queries.append(query)
            if query.get("follow") == ["true"]:
                await self._follow_log(writer)
            else:
                await _respond(writer, self._log(query), content_type="text/plain")
            return keep_alive
        if url.path == pod_path:
            await _respond(writer, self.pod.manifest())
        elif url.path in _DISCOVERY:
            await _respond(writer, _DISCOVERY[url.path])
        else:
            message = f"{url.path} is not served by the kubelet peer"
            await _respond(writer, _status(HTTPStatus.NOT_FOUND, message))
        return keep_alive

    def _log(self, query: dict[str, list[str]]) -> bytes:
        lines = self.log_lines
        if "tailLines" in query:
            tail = int(query["tailLines"][0])
            lines = lines[-tail:] if tail > 0 else ()
        # sinceSeconds is only recorded: the peer's lines carry no time to filter them by.
        return "".join(f"{line}\n" for line in lines).encode()

    async def _follow_log(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            _head(
                HTTPStatus.OK,
                [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")],
            )
        )
        await writer.drain()
        # One chunk per line, written when released: what reaches kubectl before the stream
        # ends can only have come through while it was open.
        while (line := await self._log_feed.get()) is not None:
            data = f"{line}\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _exec(
        self,
        request: _Request,
        query: dict[str, list[str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        offered = _tokens(request.header("sec-websocket-protocol"))
        subprotocol = next((name for name in EXEC_SUBPROTOCOLS if name in offered), None)
        if request.header("upgrade").lower() != "websocket" or subprotocol is None:
            message = f"exec needs a WebSocket upgrade to {' or '.join(EXEC_SUBPROTOCOLS)}"
            await _respond(writer, _status(HTTPStatus.BAD_REQUEST, message))
            return
        websocket = await _upgrade_to_websocket(request, subprotocol, reader, writer)
        if websocket is None:
            return
        self.exec_requests.append(request.target)
        try:
            await _echo_exec(websocket, query)
        finally:
            await websocket.close()

    async def _portforward(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upgrade = request.header("upgrade").lower()
        pipe: _BytePipe
        if upgrade == "websocket":
            offered = _tokens(request.header("sec-websocket-protocol"))
            if TUNNELLED_PORTFORWARD_PROTOCOL not in offered:
                message = f"port-forward over WebSocket needs {TUNNELLED_PORTFORWARD_PROTOCOL}"
                await _respond(writer, _status(HTTPStatus.BAD_REQUEST, message))
                return
            websocket = await _upgrade_to_websocket(
                request, TUNNELLED_PORTFORWARD_PROTOCOL, reader, writer
            )
            if websocket is None:
                return
            pipe, transport = websocket, "websocket"
        elif upgrade == "spdy/3.1":
            if PORTFORWARD_PROTOCOL not in _tokens(request.header("x-stream-protocol-version")):
                message = f"port-forward needs X-Stream-Protocol-Version: {PORTFORWARD_PROTOCOL}"
                await _respond(writer, _status(HTTPStatus.FORBIDDEN, message))
                return
            headers = [
                ("Upgrade", "SPDY/3.1"),
                ("Connection", "Upgrade"),
                ("X-Stream-Protocol-Version", PORTFORWARD_PROTOCOL),
            ]
            writer.write(_head(HTTPStatus.SWITCHING_PROTOCOLS, headers))
            await writer.drain()
            pipe, transport = _RawPipe(reader, writer), "spdy"
        else:
            message = "port-forward needs an upgrade to SPDY/3.1 or to a WebSocket"
            await _respond(writer, _status(HTTPStatus.BAD_REQUEST, message))
            return
        self.portforward_upgrades.append(transport)
        await _PortForwardSession(self, pipe, transport).run()


# --- exec (the channel.k8s.io protocols), server side ------------------------------------------


async def _echo_exec(websocket: _WebSocketPipe, query: dict[str, list[str]]) -> None:
    """What an exec "runs" here: its command's arguments come back on stdout, then (with
    `stdin=true`) stdin's bytes until stdin closes; then the final Status, as the kubelet sends
    it. Each message is one channel's bytes, the channel's number first."""
    command = bytes([_STDOUT]) + " ".join(query.get("command", [])).encode() + b"\n"
    if query.get("stdin") != ["true"]:
        await websocket.write(command)
    else:
        # The command line goes out once the client's first stdin message (or its close) is
        # in: kubectl up to 1.32 (client-go before kubernetes/kubernetes#131203) reads messages
        # before it has made its streams, and drops one that comes first; a client that sends
        # stdin has made them. (Without stdin nothing says so: such a test has kubectl's race.)
        while (message := await websocket.read_message()) is not None:
            if command:
                await websocket.write(command)
                command = b""
            if message[:1] == bytes([_STDIN]):
                await websocket.write(bytes([_STDOUT]) + message[1:])
            elif message[:2] == bytes([_CLOSE, _STDIN]):
                break  # v5: the client closed stdin
        else:
            return  # the client left with stdin open: no one is there for the Status
    status = {"metadata": {}, "status": "Success"}
    await websocket.write(bytes([_STATUS]) + json.dumps(status).encode())


# --- SPDY/3.1 and the portforward.k8s.io protocol on it, server side --------------------------


def _spdy_dictionary() -> bytes:
    """The zlib dictionary of SPDY/3 header blocks (SPDY/3 §2.6.10.1), as spdystream has it."""
    words = (
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    )
    prefixed = b"".join(len(word).to_bytes(4, "big") + word.encode() for word in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502"
        "504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8"
        "charset=iso-8859-1,utf-,*,enq=0."
    )
    dictionary = prefixed + tail.encode()
    # A wrong byte would only show as kubectl failing to decompress headers: check it here.
    assert len(dictionary) == 1423
    assert zlib.adler32(dictionary) == 0xE3C6A7C2
    return dictionary


SPDY_DICTIONARY = _spdy_dictionary()
_SPDY_VERSION = 3
_SYN_STREAM, _SYN_REPLY, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _HEADERS = 1, 2, 3, 4, 6, 7, 8
_COMPRESSED_HEADERS = frozenset({_SYN_STREAM, _SYN_REPLY, _HEADERS})
_FLAG_FIN = 0x01
_CONTROL_BIT = 0x8000_0000
_STREAM_ID_MASK = 0x7FFF_FFFF
_LENGTH_MASK = 0x00FF_FFFF
_FRAME_HEAD = 8


@dataclass
class _Forward:
    """One forwarded connection: kubectl opens its error stream, then its data stream."""

    error_stream: int | None = None
    data_stream: int | None = None
    port: int = 0


class _PortForwardSession:
    """The kubelet's side of one port-forward connection: streams in, echoes out.

    Frames are handled one at a time by this one task, so writes never interleave. Flow control
    is not needed: spdystream, which kubectl uses, sends no WINDOW_UPDATE and enforces no window.
    """

    def __init__(self, peer: KubeletPeer, pipe: _BytePipe, transport: str) -> None:
        self._peer = peer
        self._pipe = pipe
        self._transport = transport
        # Header blocks are compressed by one zlib stream per direction for the whole session.
        self._inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self._deflate = zlib.compressobj(zdict=SPDY_DICTIONARY)
        self._buffer = bytearray()
        self._forwards: dict[str, _Forward] = {}
        self._streams: dict[int, str] = {}  # stream id -> request id

    async def run(self) -> None:
        try:
            while (frame := await self._read_frame()) is not None:
                if not await self._handle(*frame):
                    break
        finally:
            await self._pipe.close()

    async def _read_frame(self) -> tuple[int, int, bytes] | None:
        """(first word, flags, payload) of the next frame; None when the client left."""
        while True:
            if len(self._buffer) >= _FRAME_HEAD:
                word, flags_length = (
                    int.from_bytes(self._buffer[0:4], "big"),
                    int.from_bytes(self._buffer[4:8], "big"),
                )
                end = _FRAME_HEAD + (flags_length & _LENGTH_MASK)
                if len(self._buffer) >= end:
                    payload = bytes(self._buffer[_FRAME_HEAD:end])
                    del self._buffer[:end]
                    return word, flags_length >> 24, payload
            data = await self._pipe.read()
            if not data:
                return None
            self._buffer += data

    async def _handle(self, word: int, flags: int, payload: bytes) -> bool:
        """Act on one frame; False when the session is over."""
        if not word & _CONTROL_BIT:
            await self._data(word & _STREAM_ID_MASK, flags, payload)
            return True
        kind = word & 0xFFFF
        if (word >> 16) & 0x7FFF != _SPDY_VERSION:
            return False  # not SPDY/3: nothing here could be understood
        if kind in _COMPRESSED_HEADERS:
            offset = 10 if kind == _SYN_STREAM else 4  # stream ids, priority and slot first
            # Every block goes through the one inflater, even ignored ones, to keep it in step.
            headers = _parse_header_block(self._inflate.decompress(payload[offset:]))
            if kind == _SYN_STREAM:
                await self._open(int.from_bytes(payload[0:4], "big") & _STREAM_ID_MASK, headers)
        elif kind == _RST_STREAM:
            self._streams.pop(int.from_bytes(payload[0:4], "big") & _STREAM_ID_MASK, None)
        elif kind == _PING:
            await self._pipe.write(_control(_PING, payload))  # kubectl pings every 10 s
        elif kind == _GOAWAY:
            return False
        # SETTINGS and WINDOW_UPDATE change nothing for a peer without flow control.
        return True

    async def _open(self, stream_id: int, headers: dict[str, str]) -> None:
        # spdystream's CreateStream waits for the reply before kubectl uses the stream.
        block = self._deflate.compress((0).to_bytes(4, "big"))
        block += self._deflate.flush(zlib.Z_SYNC_FLUSH)
        await self._pipe.write(_control(_SYN_REPLY, stream_id.to_bytes(4, "big") + block))
        request_id = headers.get("requestid", "")
        forward = self._forwards.setdefault(request_id, _Forward())
        self._streams[stream_id] = request_id
        if headers.get("streamtype") == "error":
            forward.error_stream = stream_id
            return
        if headers.get("streamtype") != "data":
            return
        forward.data_stream = stream_id
        forward.port = int(headers.get("port", "0"))
        self._peer.forwarded.append(ForwardedConnection(self._transport, forward.port, request_id))
        if forward.port not in self._peer.echo_ports:
            # What the kubelet does when nothing listens: a message on the error stream.
            message = f"error forwarding port {forward.port}: nothing listens there"
            await self._finish(request_id, error=message)

    async def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        request_id = self._streams.get(stream_id)
        if request_id is None:
            return
        forward = self._forwards[request_id]
        if stream_id != forward.data_stream:
            return  # kubectl writes nothing on the error stream, only closes its side
        if payload:
            await self._pipe.write(_data(stream_id, payload))  # the echo service
        if flags & _FLAG_FIN:
            # The local connection closed: the echo closes too, and no error is reported.
            await self._finish(request_id, error="")

    async def _finish(self, request_id: str, *, error: str) -> None:
        forward = self._forwards.pop(request_id)
        if forward.data_stream is not None:
            await self._pipe.write(_data(forward.data_stream, b"", fin=True))
            self._streams.pop(forward.data_stream, None)
        if forward.error_stream is not None:
            if error:
                await self._pipe.write(_data(forward.error_stream, error.encode()))
            await self._pipe.write(_data(forward.error_stream, b"", fin=True))
            self._streams.pop(forward.error_stream, None)


def _control(kind: int, payload: bytes, flags: int = 0) -> bytes:
    word = _CONTROL_BIT | (_SPDY_VERSION << 16) | kind
    return word.to_bytes(4, "big") + ((flags << 24) | len(payload)).to_bytes(4, "big") + payload


def _data(stream_id: int, payload: bytes, *, fin: bool = False) -> bytes:
    flags = _FLAG_FIN if fin else 0
    return (
        stream_id.to_bytes(4, "big") + ((flags << 24) | len(payload)).to_bytes(4, "big") + payload
    )


def _parse_header_block(block: bytes) -> dict[str, str]:
    """A SPDY/3 name/value block: a count, then length-prefixed names and values."""
    headers: dict[str, str] = {}
    count, offset = int.from_bytes(block[0:4], "big"), 4
    for _ in range(count):
        fields = []
        for _ in range(2):
            length = int.from_bytes(block[offset : offset + 4], "big")
            fields.append(block[offset + 4 : offset + 4 + length].decode("latin-1"))
            offset += 4 + length
        name, value = fields
        headers[name] = value.split("\0")[0]  # several values are NUL-separated; one is used
    return headers


# --- the byte pipes a SPDY session runs on ----------------------------------------------------


class _BytePipe(Protocol):
    async def read(self) -> bytes:
        """The next bytes from the client; b"" once it has gone."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class _RawPipe:
    """The upgraded connection itself (`Upgrade: SPDY/3.1`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(64 * 1024)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        pass  # the connection's handler closes the connection


async def _upgrade_to_websocket(
    request: _Request,
    subprotocol: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> _WebSocketPipe | None:
    """Answer the WebSocket upgrade `request` with `subprotocol`, which the caller has checked
    the client offers: the WebSocket, open; or None once a refusal has been sent instead."""
    websocket = ServerProtocol(max_size=None)
    websocket.receive_data(request.head)  # websockets reads the head again, for itself
    match websocket.events_received():
        case [Request() as handshake]:
            # websockets refuses port-forward's subprotocol, whose "/" RFC 6455 does not allow in
            # one: the caller has checked the offer, and the answer names the one it chose.
            del handshake.headers["Sec-WebSocket-Protocol"]
            response = websocket.accept(handshake)
        case _:  # a head websockets' stricter HTTP parser refused
            response = websocket.reject(HTTPStatus.BAD_REQUEST, "")
    if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS:
        message = f"WebSocket upgrade refused: {websocket.handshake_exc}"
        await _respond(writer, _status(HTTPStatus(response.status_code), message))
        return None
    response.headers["Sec-WebSocket-Protocol"] = subprotocol
    websocket.send_response(response)
    writer.writelines(websocket.data_to_send())
    await writer.drain()  # the 101 answer
    return _WebSocketPipe(reader, writer, websocket)


class _WebSocketPipe:
    """A WebSocket past its handshake; websockets' `ServerProtocol` frames and unframes its
    messages, answers pings and echoes a close. Exec reads it a message at a time (one channel's
    bytes each); port-forward as a byte pipe: kubectl's TunnelingConnection tunnels SPDY in
    binary messages whose payloads, concatenated, are the SPDY byte stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        websocket: ServerProtocol,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._websocket = websocket
        self._messages: deque[bytes] = deque()
        self._partial = bytearray()  # a fragmented message's frames so far
        self._text_received = False

    async def read_message(self) -> bytes | None:
        """The next binary message from the client; None once it has closed. Text, which
        neither protocol here sends, ends the stream like a close."""
        try:
            while not self._messages:
                if self._text_received or self._websocket.state is not State.OPEN:
                    return None  # only what came before the client's close is read
                await self._receive()
        except ConnectionError:
            return None
        return self._messages.popleft()

    async def read(self) -> bytes:
        """The next bytes of the tunnelled stream; b"" once the client has closed."""
        while (message := await self.read_message()) is not None:
            if message:
                return message
        return b""

    async def write(self, data: bytes) -> None:
        if self._websocket.state is State.OPEN:  # else the client is closing: it reads no more
            self._websocket.send_binary(data)
            await self._flush()

    async def close(self) -> None:
        """Send a close unless the client has. Its answer is not waited for (kubectl needs no
        wait, and it would hold a port-forward's end): the connection's handler then closes the
        connection."""
        if self._websocket.state is State.OPEN:
            self._websocket.send_close(CloseCode.NORMAL_CLOSURE)
            with suppress(ConnectionError):
                await self._flush()

    async def _receive(self) -> None:
        """Feed websockets what the client sends next, send what it answers (pongs, the answer to
        a close), and keep the binary messages it completes."""
        if data := await self._reader.read(64 * 1024):
            self._websocket.receive_data(data)
        else:
            self._websocket.receive_eof()
        await self._flush()
        for frame in self._websocket.events_received():
            assert isinstance(frame, Frame)  # the handshake is over: frames only
            if frame.opcode is Opcode.TEXT:
                self._text_received = True
                break
            if frame.opcode in (Opcode.BINARY, Opcode.CONT):
                self._partial += frame.data
                if frame.fin:
                    self._messages.append(bytes(self._partial))
                    self._partial.clear()

    async def _flush(self) -> None:
        # websockets' end-of-stream marker (b"") writes nothing: the connection's handler closes
        # the connection once the session is over.
        self._writer.writelines(self._websocket.data_to_send())
        await self._writer.drain()


# --- HTTP/1.1, just what kubectl sends here ---------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    head: bytes
    """The request line and headers as received, for websockets to read a WebSocket upgrade."""

    @classmethod
    def parse(cls, head: bytes) -> _Request:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = []
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        return cls(method, target, headers, head)

    def header(self, name: str) -> str:
        """Every value of `name`, comma-joined (as HTTP allows); "" when absent."""
        return ", ".join(value for key, value in self.headers if key == name)


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",") if token.strip()]


def _head(status: HTTPStatus, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter,
    body: object,
    *,
    status: HTTPStatus = HTTPStatus.OK,
    content_type: str = "application/json",
) -> None:
    if isinstance(body, _StatusBody):
        status, body = body.status, body.body
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [("Content-Type", content_type), ("Content-Length", str(len(data)))]
    writer.write(_head(status, headers) + data)
    await writer.drain()


@dataclass(frozen=True)
class _StatusBody:
    status: HTTPStatus
    body: dict[str, object]


def _status(status: HTTPStatus, message: str) -> _StatusBody:
    """A Kubernetes Status refusal, as the API server writes them."""
    return _StatusBody(
        status,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "reason": status.phrase.replace(" ", ""),
            "message": message,
            "code": status.value,
        },
    )


# Just enough discovery for kubectl to find pods and their exec, log and portforward
# subresources (and the version it asks for first).
_DISCOVERY: dict[str, object] = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.4-kubelet-peer"},
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "pods",
                "singularName": "pod",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get", "list"],
                "shortNames": ["po"],
            },
            {
                "name": "pods/exec",
                "singularName": "",
                "namespaced": True,
                "kind": "PodExecOptions",
                "verbs": ["create", "get"],
            },
            {
                "name": "pods/log",
                "singularName": "",
                "namespaced": True,
                "kind": "Pod",
                "verbs": ["get"],
            },
            {
                "name": "pods/portforward",
                "singularName": "",
                "namespaced": True,
                "kind": "PodPortForwardOptions",
                "verbs": ["create", "get"],
            },
        ],
    },
}
