"""The HTTP/2 client's failures, against a scripted h2 server (what a real API server cannot show):
each becomes one `UpstreamError`, and a failure of one stream leaves the others alone.

The server answers by path: /ok 200 "ok"; /reset resets the stream; /goaway sends GOAWAY naming
the streams before this one as the last it serves; /answer-after-goaway sends GOAWAY naming this
stream as the last, then answers it 401 (as kube-apiserver answers an unauthenticated request);
/break sends a head and some body, then closes the connection; /hang never answers. With
`silent`, it never sends its SETTINGS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest

from kubeproxy import TLSSettings, Upstream, UpstreamError
from kubeproxy.h2pool import H2Exchange, H2Pool
from tests.agent.conftest import Pki, server_context
from tests.kit.waits import wait_for


class ScriptedH2Server:
    def __init__(self, pki: Pki, folder: Path, *, silent: bool = False) -> None:
        self._context = server_context(pki.upstream_server, folder)
        self._context.set_alpn_protocols(["h2"])
        self.ca_pem = pki.upstream_ca.certificate_pem()
        self._silent = silent
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    def upstream(self) -> Upstream:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        tls = TLSSettings(
            ca_data=self.ca_pem, ca_file=None, client_cert_pem=None, client_key_pem=None
        )
        return Upstream(scheme="https", host="127.0.0.1", port=port, tls=tls, token="t")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        if not self._silent:
            conn.initiate_connection()
            writer.write(conn.data_to_send())
        while data := await reader.read(65536):
            if self._silent:
                continue
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    path = dict(event.headers or [])[b":path"]
                    if path == b"/answer-after-goaway":
                        writer.write(self._goaway_then_answer(conn, event.stream_id or 0))
                        continue
                    if self._answer(conn, event.stream_id or 0, path):
                        writer.write(conn.data_to_send())
                        writer.transport.abort()
                        return
            writer.write(conn.data_to_send())

    @staticmethod
    def _goaway_then_answer(conn: h2.connection.H2Connection, stream_id: int) -> bytes:
        """GOAWAY naming `stream_id` the last, then its 401: the bytes, in that order."""
        pending = conn.data_to_send()
        conn.send_headers(stream_id, [(b":status", b"401")])
        conn.send_data(stream_id, b"unauthorized", end_stream=True)
        answer = conn.data_to_send()
        conn.close_connection(last_stream_id=stream_id)
        return pending + conn.data_to_send() + answer

    @staticmethod
    def _answer(conn: h2.connection.H2Connection, stream_id: int, path: bytes) -> bool:
        """Answer one request; True: close the connection now."""
        if path == b"/ok":
            conn.send_headers(stream_id, [(b":status", b"200")])
            conn.send_data(stream_id, b"ok", end_stream=True)
        elif path == b"/reset":
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif path == b"/goaway":
            conn.close_connection(last_stream_id=stream_id - 2)
        elif path == b"/break":
            conn.send_headers(stream_id, [(b":status", b"200")])
            conn.send_data(stream_id, b"partial")
            return True
        return False  # /hang


@pytest.fixture
async def server(agent_pki: Pki, tmp_path: Path) -> AsyncIterator[ScriptedH2Server]:
    scripted = ScriptedH2Server(agent_pki, tmp_path / "h2")
    await scripted.start()
    yield scripted
    await scripted.close()


@pytest.fixture
async def pool(server: ScriptedH2Server) -> AsyncIterator[H2Pool]:
    h2_pool = H2Pool(server.upstream(), connect_timeout=5.0)
    yield h2_pool
    h2_pool.close()


async def _ok(pool: H2Pool) -> bytes:
    exchange = await wait_for(pool.request("GET", "/ok"))
    assert (await wait_for(exchange.response_head())).status == 200
    body = await wait_for(exchange.body_piece())
    assert await wait_for(exchange.body_piece()) == b""
    return body


async def _drain(exchange: H2Exchange) -> None:
    while await wait_for(exchange.body_piece()):
        pass


async def test_a_reset_stream_fails_only_that_exchange(pool: H2Pool) -> None:
    hanging = await wait_for(pool.request("GET", "/hang"))
    reset = await wait_for(pool.request("GET", "/reset"))
    with pytest.raises(UpstreamError) as failure:
        await wait_for(reset.response_head())
    assert failure.value.kind == "closed"
    assert "reset" in failure.value.message
    assert await _ok(pool) == b"ok"
    assert not hanging.closed
    assert hanging.stream_id in hanging.connection.exchanges
    assert pool.opened == 1


async def test_goaway_fails_the_refused_streams_and_the_next_request_opens_a_connection(
    pool: H2Pool, server: ScriptedH2Server
) -> None:
    kept = await wait_for(pool.request("GET", "/hang"))
    refused = await wait_for(pool.request("GET", "/goaway"))
    with pytest.raises(UpstreamError, match="GOAWAY"):
        await wait_for(refused.response_head())
    assert not kept.closed  # below the last stream id: the server still serves it
    assert kept.connection.goaway
    assert await _ok(pool) == b"ok"
    assert (pool.opened, server.connections) == (2, 2)


async def test_a_stream_goaway_lets_finish_is_answered_and_the_connection_then_closes(
    pool: H2Pool, server: ScriptedH2Server
) -> None:
    exchange = await wait_for(pool.request("GET", "/answer-after-goaway"))
    assert (await wait_for(exchange.response_head())).status == 401
    assert await wait_for(exchange.body_piece()) == b"unauthorized"
    assert await wait_for(exchange.body_piece()) == b""
    assert exchange.connection.closed  # nothing left on it: closed, not kept idle
    assert pool.open_connections == 0
    assert await _ok(pool) == b"ok"
    assert (pool.opened, server.connections) == (2, 2)


async def test_a_connection_closed_mid_body_fails_its_exchanges(pool: H2Pool) -> None:
    hanging = await wait_for(pool.request("GET", "/hang"))
    broken = await wait_for(pool.request("GET", "/break"))
    assert (await wait_for(broken.response_head())).status == 200
    assert await wait_for(broken.body_piece()) == b"partial"
    for exchange in (broken, hanging):
        with pytest.raises(UpstreamError) as failure:
            await _drain(exchange)
        assert failure.value.kind == "closed"
    assert await _ok(pool) == b"ok"  # a new connection
    assert pool.opened == 2


async def test_a_server_that_never_sends_settings_times_out(agent_pki: Pki, tmp_path: Path) -> None:
    silent = ScriptedH2Server(agent_pki, tmp_path / "silent", silent=True)
    await silent.start()
    pool = H2Pool(silent.upstream(), connect_timeout=0.5)
    try:
        with pytest.raises(UpstreamError) as failure:
            await wait_for(pool.request("GET", "/ok"))
        assert failure.value.kind == "timeout"
        assert failure.value.status == 504
        assert pool.connections == []
    finally:
        pool.close()
        await silent.close()
