"""Fixtures for the agent tests: certificates, a test gateway, an upstream test peer, agents.

- `pki`: a gateway CA with a server certificate for 127.0.0.1, and an agent CA;
- `agent_tls`: a folder laid out like the mounted cluster-agent-tls Secret, renewable;
- `gateway`: a real WebSocket server with mutual TLS (client certificates required and verified
  against the agent CA) that wraps each connection in a gateway-side `TunnelSession`; a test
  opens streams on `await gateway.next_connection()`; given a `replica_id` it names itself in
  its HELLO and tells listening agents its `live` replicas, as a gateway replica does;
- `replica_gateways(n)`: n such replicas, and `load_balancer(replicas)`, a `RoundRobin` in front
  of them (tests/kit/round_robin.py: TLS passes through to the replica it picks);
- `upstream_peer`: a tiny HTTPS server that records requests, answers upgrades with 101 and
  echoes bytes, and hangs on /hang: a stand-in API server for what a real one cannot show;
- `start_agent`: runs an `Agent` in this event loop and stops it at the end of the test.

Waits are the kit's (tests/kit/waits.py): they scale with PLANELINK_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

import certs
import http1
from agent import Agent, AgentSettings
from envtest import KubeAPIServer
from kubeproxy import Upstream
from protocol import CAPABILITY_REPLICAS, Connection, Headers, Role, Settings
from tests.kit.round_robin import RoundRobin
from tests.kit.waits import scaled, wait_for
from tunnel import Heartbeat, TunnelSession, TunnelStream, WebSocketChannel
from tunnel.contract import REJECTION_HEADER, SUBPROTOCOL

T = TypeVar("T")
PLANE = "agent-tests/edge"


# -- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    gateway_ca: certs.CertificateBundle
    gateway_server: certs.CertificateBundle
    agent_ca: certs.CertificateBundle
    upstream_ca: certs.CertificateBundle
    upstream_server: certs.CertificateBundle

    def issue_agent(self) -> certs.CertificateBundle:
        return certs.issue_agent(self.agent_ca, plane=PLANE)


@pytest.fixture(scope="session")
def agent_pki() -> Pki:
    gateway_ca = certs.create_ca("test gateway CA")
    upstream_ca = certs.create_ca("test upstream CA")
    return Pki(
        gateway_ca=gateway_ca,
        gateway_server=certs.issue_server(
            gateway_ca, common_name="gateway", ip_addresses=["127.0.0.1"]
        ),
        agent_ca=certs.create_ca("test agent CA"),
        upstream_ca=upstream_ca,
        upstream_server=certs.issue_server(
            upstream_ca, common_name="upstream", ip_addresses=["127.0.0.1"]
        ),
    )


def _write_atomically(path: Path, data: bytes) -> None:
    # Like a Secret volume update: the new content appears at once, under a new inode.
    staging = path.with_name(f".{path.name}.new")
    staging.write_bytes(data)
    staging.replace(path)


@dataclass
class AgentTls:
    """A folder like the mounted cluster-agent-tls Secret."""

    directory: Path
    pki: Pki
    bundle: certs.CertificateBundle = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write(self.pki.issue_agent())

    def write(self, bundle: certs.CertificateBundle) -> None:
        self.bundle = bundle
        _write_atomically(self.directory / "tls.key", bundle.private_key_pem())
        _write_atomically(self.directory / "tls.crt", bundle.chain_pem())
        _write_atomically(self.directory / "ca.crt", self.pki.gateway_ca.certificate_pem())

    def renew(self) -> certs.CertificateBundle:
        """What cert-manager does: a new certificate (new serial) in the same files."""
        self.write(self.pki.issue_agent())
        return self.bundle


@pytest.fixture
def agent_tls(tmp_path: Path, agent_pki: Pki) -> AgentTls:
    return AgentTls(tmp_path / "agent-tls", agent_pki)


def server_context(bundle: certs.CertificateBundle, folder: Path) -> ssl.SSLContext:
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(bundle.chain_pem())
    key_path.write_bytes(bundle.private_key_pem())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


# -- the test gateway -----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.decode().lower() == name.lower():
                return value.decode()
        return None


@dataclass
class GatewayConnection:
    """One agent connection as the test gateway sees it."""

    session: TunnelSession
    serial: int
    path: str
    subprotocol: str | None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    close_reason: str = ""

    def open(
        self,
        method: str,
        path: str,
        *,
        headers: Headers = (),
        end_stream: bool = True,
        upgrade: bool = False,
    ) -> TunnelStream:
        return self.session.open_stream(
            method=method, path=path, headers=headers, end_stream=end_stream, upgrade=upgrade
        )

    async def request(
        self, method: str, path: str, *, headers: Headers = (), body: bytes | None = None
    ) -> Reply:
        stream = self.open(method, path, headers=headers, end_stream=body is None)
        if body is not None:
            await stream.write(body)
            stream.end()
        response = await wait_for(stream.response())
        data = bytearray()
        while chunk := await wait_for(stream.read()):
            data += chunk
        return Reply(response.status, response.headers, bytes(data))


@dataclass
class Rejection:
    status: int
    reason: str
    text: str
    retry_after: int | None = None


class TestGateway:
    """A WebSocket server with mutual TLS that speaks the gateway side of the tunnel."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, pki: Pki, folder: Path, *, replica_id: str | None = None) -> None:
        self.replica_id = replica_id
        """Named in the HELLO's `gateway-id` (None: an older gateway, which names nothing)."""
        self.live: frozenset[str] | None = None
        """The live replicas told to agents that listen, when it differs from what they know."""
        self._told: dict[TunnelSession, frozenset[str]] = {}
        self._context = server_context(pki.gateway_server, folder)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._context.load_verify_locations(cadata=pki.agent_ca.certificate_pem().decode())
        self.reject: Rejection | None = None
        self.silent = False
        """Send a HELLO, then never read or write again (a half-open connection)."""
        self.settings = Settings()
        self.connections: asyncio.Queue[GatewayConnection] = asyncio.Queue()
        self.all_connections: list[GatewayConnection] = []
        self.rejections = 0
        self.rejected = asyncio.Event()
        self._server: Server | None = None
        self._silenced: list[ServerConnection] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"wss://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            ssl=self._context,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            process_request=self._process_request,
            ping_interval=None,
            max_size=self.settings.max_message_size,
            compression=None,
        )

    async def close(self) -> None:
        for connection in self.all_connections:
            connection.session.close("test gateway closing")
        for websocket in self._silenced:
            websocket.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def refuse(
        self, status: int, reason: str, text: str, *, retry_after: int | None = None
    ) -> None:
        """Answer the next handshakes with an HTTP error, as a gateway refusing an agent."""
        self.reject = Rejection(status, reason, text, retry_after)

    def accept(self) -> None:
        self.reject = None

    def announce(self, live: frozenset[str]) -> None:
        """The live replicas changed: tell every connected agent that listens."""
        self.live = live
        for connection in self.all_connections:
            if not connection.ended.is_set():
                self._tell(connection.session)

    def _tell(self, session: TunnelSession) -> None:
        peer = session.peer
        if self.live is None or peer is None or CAPABILITY_REPLICAS not in peer.capabilities:
            return
        told = self._told.get(session, frozenset({self.replica_id}))
        if session.closed or self.live == told:
            return  # only news is sent: with one replica, nothing
        self._told[session] = self.live
        session.send_replicas(self.live)

    async def _tell_when_ready(self, session: TunnelSession) -> None:
        with contextlib.suppress(Exception):
            await session.wait_ready()
            self._tell(session)

    async def next_connection(self, seconds: float = 10.0) -> GatewayConnection:
        """The next agent connection, once its HELLO arrived (streams may be opened)."""
        connection = await wait_for(self.connections.get(), seconds)
        await wait_for(connection.session.wait_ready(), seconds)
        return connection

    def _process_request(self, websocket: ServerConnection, request: Request) -> Response | None:
        if self.reject is None:
            return None
        self.rejections += 1
        self.rejected.set()
        response = websocket.respond(self.reject.status, self.reject.text)
        response.headers[REJECTION_HEADER] = self.reject.reason
        if self.reject.retry_after is not None:
            response.headers["Retry-After"] = str(self.reject.retry_after)
        return response

    async def _handle(self, websocket: ServerConnection) -> None:
        der = websocket.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        serial = x509.load_der_x509_certificate(der).serial_number
        if self.silent:
            self._silenced.append(websocket)
            for message in Connection(Role.GATEWAY).data_to_send():
                await websocket.send(message)
            # Read nothing more, not even a close frame: a peer that is gone.
            websocket.transport.pause_reading()
            await websocket.wait_closed()
            return
        identity = {"gateway-id": self.replica_id} if self.replica_id else None
        session = TunnelSession(
            WebSocketChannel(websocket),
            Connection(Role.GATEWAY, settings=self.settings, identity=identity),
            heartbeat=Heartbeat(interval=5.0, timeout=scaled(60.0)),
        )
        assert websocket.request is not None
        connection = GatewayConnection(
            session, serial, websocket.request.path, websocket.subprotocol
        )
        self.all_connections.append(connection)
        self.connections.put_nowait(connection)
        telling = asyncio.create_task(self._tell_when_ready(session))
        connection.close_reason = await session.run()
        connection.ended.set()
        telling.cancel()


@pytest.fixture
async def fake_gateway(agent_pki: Pki, tmp_path: Path) -> AsyncIterator[TestGateway]:
    server = TestGateway(agent_pki, tmp_path / "gateway")
    await server.start()
    yield server
    await server.close()


ReplicaGateways = Callable[[int], Awaitable[list[TestGateway]]]


@pytest.fixture
async def replica_gateways(agent_pki: Pki, tmp_path: Path) -> AsyncIterator[ReplicaGateways]:
    """`await replica_gateways(n)`: n test gateways `replica-0`... that all say the n are live."""
    started: list[TestGateway] = []

    async def start(count: int) -> list[TestGateway]:
        ids = frozenset(f"replica-{i}" for i in range(count))
        replicas = []
        for i in range(count):
            replica = TestGateway(agent_pki, tmp_path / f"replica-{i}", replica_id=f"replica-{i}")
            replica.live = ids
            await replica.start()
            started.append(replica)
            replicas.append(replica)
        return replicas

    yield start
    for replica in started:
        await replica.close()


@pytest.fixture
async def load_balancer() -> AsyncIterator[Callable[[list[TestGateway]], Awaitable[RoundRobin]]]:
    """`await load_balancer(replicas)`: a `RoundRobin` in front of test gateways."""
    balancers: list[RoundRobin] = []

    async def start(backends: list[TestGateway]) -> RoundRobin:
        balancer = RoundRobin([_address(backend.url) for backend in backends])
        await balancer.start()
        balancers.append(balancer)
        return balancer

    yield start
    for balancer in balancers:
        await balancer.close()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("wss://").rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def unused_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig for tests that never reach the API server."""
    path = tmp_path / "unused.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: unused}}]\n"
    )
    return path


# -- an upstream test peer ------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    target: str
    headers: Headers
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        value = http1.header_value(self.headers, name.lower().encode())
        return None if value is None else value.decode()


class UpstreamPeer:
    """A minimal HTTPS server: records every request and answers by path.

    /hang never answers; /break fails in the middle of its body; /huge-head answers with a
    70 kB head; /follow answers chunked, one chunk per item the test puts in `follow` (None
    ends the body), like `logs -f`; /close answers and then closes the connection without
    saying so; /drop-next answers, then closes the connection when the next request arrives
    on it, unanswered (the keep-alive race); an upgrade request gets `101` plus the bytes
    `hello:` and then an echo of everything it receives until it sees `bye` (then it
    closes); anything else gets 200 with a small JSON body saying which connection served it.
    """

    def __init__(self, pki: Pki, folder: Path) -> None:
        self._context = server_context(pki.upstream_server, folder)
        self.ca_pem = pki.upstream_ca.certificate_pem()
        self.requests: list[Recorded] = []
        self.arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.open_connections = 0
        self.dropped = 0
        self.follow: asyncio.Queue[bytes | None] = asyncio.Queue()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._context)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def kubeconfig(self, path: Path, *, token: str = "peer-token") -> Path:  # noqa: S107
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "peer",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.port}",
                        "certificate-authority": "peer-ca.crt",
                    },
                }
            ],
            "users": [{"name": "agent", "user": {"token": token}}],
            "contexts": [{"name": "peer", "context": {"cluster": "peer", "user": "agent"}}],
            "current-context": "peer",
        }
        (path.parent / "peer-ca.crt").write_bytes(self.ca_pem)
        path.write_text(yaml.safe_dump(config))
        return path

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.open_connections += 1
        connection = next(self._ids)
        messages = http1.MessageReader(reader, "request")
        drop_next = False
        try:
            while (head := await messages.next_request()) is not None:
                if drop_next:
                    self.dropped += 1
                    return
                body = bytearray()
                while piece := await messages.read_body():
                    body += piece
                self.requests.append(
                    Recorded(head.method, head.target, head.headers, bytes(body), connection)
                )
                self.arrived.set()
                self.arrived = asyncio.Event()
                if head.target.startswith("/hang"):
                    await asyncio.Event().wait()
                if head.target.startswith("/break"):
                    # A head announcing 100 bytes, 10 of them, and the connection is gone.
                    writer.write(
                        http1.response_head_bytes(200, "OK", [(b"Content-Length", b"100")])
                        + b"0123456789"
                    )
                    await writer.drain()
                    return
                if head.target.startswith("/follow"):
                    await self._follow(writer)
                    continue
                if head.upgrade:
                    await self._echo(messages, reader, writer)
                    return
                answer = json.dumps({"path": head.target, "connection": connection}).encode()
                headers = [
                    (b"Content-Type", b"application/json"),
                    (b"Content-Length", str(len(answer)).encode()),
                    (b"X-Hop", b"dropped"),
                    (b"Connection", b"X-Hop"),
                ]
                if head.target.startswith("/huge-head"):
                    headers.append((b"X-Huge", b"h" * 70_000))
                writer.write(http1.response_head_bytes(200, "OK", headers) + answer)
                await writer.drain()
                if head.target.startswith("/close"):
                    return
                drop_next = head.target.startswith("/drop-next")
        except (ConnectionError, http1.HttpError, ssl.SSLError):
            pass
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.transport.abort()

    async def _follow(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            http1.response_head_bytes(
                200, "OK", [(b"Content-Type", b"text/plain"), (b"Transfer-Encoding", b"chunked")]
            )
        )
        await writer.drain()
        while (line := await self.follow.get()) is not None:
            writer.write(http1.chunk(line))
            await writer.drain()
        writer.write(http1.LAST_CHUNK)
        await writer.drain()

    async def _echo(
        self,
        messages: http1.MessageReader,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        head = http1.response_head_bytes(
            101,
            "Switching Protocols",
            [(b"Connection", b"Upgrade"), (b"Upgrade", b"SPDY/3.1")],
        )
        # The first raw bytes travel in the same write as the head: the agent must keep them.
        writer.write(head + b"hello:")
        data = messages.take_upgrade_tail()
        while True:
            if data:
                writer.write(data)
                await writer.drain()
                if b"bye" in data:
                    return
            data = await reader.read(65536)
            if not data:
                return


@pytest.fixture
async def upstream_peer(agent_pki: Pki, tmp_path: Path) -> AsyncIterator[UpstreamPeer]:
    peer = UpstreamPeer(agent_pki, tmp_path / "peer")
    await peer.start()
    yield peer
    await peer.close()


# -- the data plane's API server -------------------------------------------------------------


@pytest.fixture(scope="session")
def plane_server(kube_servers: Callable[[str], KubeAPIServer]) -> KubeAPIServer:
    """A real kube-apiserver + etcd: the data plane the agents serve."""
    return kube_servers("agent-plane")


@pytest.fixture
def plane_namespace(plane_server: KubeAPIServer) -> str:
    """A fresh namespace on the data plane (left behind: nothing deletes it there anyway)."""
    name = f"agent-{uuid.uuid4().hex[:8]}"
    plane_server.kubectl("create", "namespace", name)
    return name


# -- running agents -------------------------------------------------------------------------


@dataclass
class RunningAgent:
    agent: Agent
    stop_event: asyncio.Event
    task: asyncio.Task[None]

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.agent.health.port}"

    async def stop(self, seconds: float = 30.0) -> None:
        self.stop_event.set()
        await wait_for(asyncio.shield(self.task), seconds)


StartAgent = Callable[..., Awaitable[RunningAgent]]


def settings_for(gateway: TestGateway, agent_tls: AgentTls, **overrides: Any) -> AgentSettings:
    """Settings for an agent of the test gateway: quick backoff, health on a free port."""
    values: dict[str, Any] = {
        "gateway_url": gateway.url,
        "plane": PLANE,
        "agent_id": "agent-under-test",
        "tls_dir": agent_tls.directory,
        "health_address": "127.0.0.1:0",
        "backoff_base": 0.02,
        "backoff_cap": 0.2,
        "replica_join_spread": 0.0,
        "heartbeat_interval": 2.0,
        "heartbeat_timeout": scaled(30.0),
        "drain_grace": scaled(10.0),
    }
    values.update(overrides)
    return AgentSettings(**values)


@pytest.fixture
async def start_agent(fake_gateway: TestGateway, agent_tls: AgentTls) -> AsyncIterator[StartAgent]:
    running: list[RunningAgent] = []

    async def start(
        *,
        upstream: Upstream | None = None,
        environ: dict[str, str] | None = None,
        random: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> RunningAgent:
        settings = settings_for(fake_gateway, agent_tls, **overrides)
        agent = Agent(settings, upstream=upstream, environ=environ or {}, random=random)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        handle = RunningAgent(agent, stop, task)
        running.append(handle)
        started = asyncio.create_task(agent.started.wait())
        await wait_for(asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED))
        if task.done():
            started.cancel()
            task.result()  # it failed to start: show why
        return handle

    yield start
    for handle in running:
        with contextlib.suppress(Exception):
            await handle.stop()
