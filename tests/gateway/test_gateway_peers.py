"""Two replicas in-process: a caller's request to the one without the plane's tunnel is
forwarded to the one with it, over the peer listener (mTLS with the peers' own CA).

`gateway` (the lab's, which the stand-in agents dial) is the *far* replica; `near` holds no
tunnel and forwards. Presence is shared by hand (`share`), as the Leases would share it.
"""

from __future__ import annotations

import asyncio
import json
import resource
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
import yaml
from structlog.testing import capture_logs

import certs
from envtest import Credentials, KubeAPIServer, build_kubeconfig
from gateway import app
from gateway.app import Gateway, GatewaySettings
from gateway.auth import CallerAuthSettings
from gateway.interfaces import DirectCredentials, Replica
from gateway.peers import PeerSettings
from gateway.peers.forward import PeerLink
from tests.kit.gateway_lab import PLANE_A, AgentFactory, Pki, PlanePair, caller_session
from tests.kit.h2_caller import H2Caller
from tests.kit.waits import eventually, wait_for

A = "/planes/ns-a/plane-a/k8s"


@dataclass
class PeerPki:
    ca: certs.CertificateBundle
    settings: PeerSettings

    def client_ssl(self, bundle: certs.CertificateBundle, directory: Path) -> ssl.SSLContext:
        """A client of the peer port presenting `bundle`, checking the peers' fixed name."""
        context = ssl.create_default_context(cadata=self.ca.certificate_pem().decode())
        cert, key = directory / f"client-{id(bundle)}.crt", directory / f"client-{id(bundle)}.key"
        cert.write_bytes(bundle.chain_pem())
        key.write_bytes(bundle.private_key_pem())
        context.load_cert_chain(cert, key)
        return context


@pytest.fixture
def peer_pki(pki: Pki) -> PeerPki:
    ca = certs.create_ca("peer-ca")
    peer = certs.issue_peer(ca)
    directory = pki.directory
    (directory / "peer.crt").write_bytes(peer.chain_pem())
    (directory / "peer.key").write_bytes(peer.private_key_pem())
    (directory / "peer-ca.crt").write_bytes(ca.certificate_pem())
    settings = PeerSettings(
        certificate=directory / "peer.crt",
        key=directory / "peer.key",
        ca=directory / "peer-ca.crt",
        host="127.0.0.1",
        port=0,
    )
    return PeerPki(ca=ca, settings=settings)


@pytest.fixture
def loopback_gateway_settings(
    loopback_gateway_settings: Callable[[Path], GatewaySettings], peer_pki: PeerPki
) -> Callable[[Path], GatewaySettings]:
    """The lab's settings with a peer listener, and the caller impersonated."""

    def settings(directory: Path) -> GatewaySettings:
        base = loopback_gateway_settings(directory)
        callers = replace(base.callers, auth=CallerAuthSettings(impersonate=True))
        return replace(base, callers=callers, peers=peer_pki.settings, replica_id="far")

    return settings


@pytest.fixture
async def near(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings]
) -> AsyncIterator[Gateway]:
    near = Gateway(replace(loopback_gateway_settings(pki.directory), replica_id="near"))
    await near.start()
    yield near
    await near.stop()
    assert near.callers.active_connections == 0


@pytest.fixture
async def near_caller(near: Gateway, pki: Pki) -> AsyncIterator[aiohttp.ClientSession]:
    async with caller_session(near, pki) as session:
        yield session


def share(*replicas: Gateway) -> None:
    """Each replica learns the others as they are now (what their Leases would say)."""
    for replica in replicas:
        replica.peers.replace_peers(
            other.peers.local() for other in replicas if other is not replica
        )


def sample(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.metrics.registry.get_sample_value(name, labels) or 0.0


def seen_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {
        key.lower().removeprefix("x-seen-"): value
        for key, value in response.headers.items()
        if key.lower().startswith("x-seen-")
    }


async def test_a_request_is_forwarded_to_the_replica_holding_the_tunnel(  # noqa: PLR0917
    gateway: Gateway,
    near: Gateway,
    connect_agent: AgentFactory,
    near_caller: aiohttp.ClientSession,
    caller: aiohttp.ClientSession,
    planes: PlanePair,
) -> None:
    async with connect_agent(planes[0]):
        share(gateway, near)
        body = b"0123456789" * 100_000  # 1 MB each way
        with capture_logs() as logs:
            async with near_caller.post(f"{A}/echo?x=1", data=body) as response:
                assert response.status == 200
                assert await response.read() == body
                forwarded = seen_headers(response)
                forwarded_id = response.headers["Planelink-Request-Id"]
            # A replica may log its access line after its caller has read the last byte.
            await eventually(
                lambda: sum(line["event"] == "access" for line in logs) >= 2,
                within=5.0,
                message="both replicas log the forwarded request",
            )
        async with caller.post(f"{A}/echo?x=1", data=body) as response:
            assert response.status == 200
            local = seen_headers(response)
            local_id = response.headers["Planelink-Request-Id"]
    # The agent sees the caller exactly as when it asks the far replica itself, and the
    # request by the id its caller got: the forwarding replica's, which the peer adopted.
    assert forwarded["impersonate-user"] == local["impersonate-user"] == "jane"
    assert forwarded["impersonate-group"] == local["impersonate-group"] == "ops"
    assert forwarded.pop("planelink-request-id") == forwarded_id
    assert local.pop("planelink-request-id") == local_id != forwarded_id
    assert not [key for key in forwarded if key.startswith(("planelink-", "authorization"))]
    assert forwarded.keys() == local.keys()
    # One access line at each replica, with the same id, saying where it went and came from.
    lines = [line for line in logs if line["event"] == "access"]
    by_replica = {line["replica"]: line for line in lines}
    assert len(lines) == 2
    assert by_replica["near"]["forwarded_to"] == "far"
    assert by_replica["far"]["forwarded_by"] == "near"
    for line in lines:
        assert line["request_id"] == forwarded_id
        assert (line["status"], line["bytes_in"], line["bytes_out"]) == (200, len(body), len(body))
    assert by_replica["near"]["caller"] == "jane"
    assert by_replica["far"]["caller"] == "jane (via near)"
    labels = {"plane": "ns-a/plane-a", "code": "2xx"}
    assert sample(near, "planelink_gateway_forwarded_requests_total", peer="far", **labels) == 1
    assert sample(near, "planelink_gateway_requests_total", **labels) == 1
    assert sample(gateway, "planelink_gateway_peer_requests_total", peer="near", **labels) == 1
    # The far replica counts only the request its own caller made.
    assert sample(gateway, "planelink_gateway_requests_total", **labels) == 1


async def test_a_forwarded_watch_streams_and_a_leaving_caller_ends_it_at_the_agent(
    gateway: Gateway,
    near: Gateway,
    connect_agent: AgentFactory,
    near_caller: aiohttp.ClientSession,
    planes: PlanePair,
) -> None:
    async with connect_agent(planes[0]) as agent:
        share(gateway, near)
        response = await near_caller.get(f"{A}/forever?watch=1")
        assert response.status == 200
        assert await wait_for(response.content.readline(), 5) == b'{"type":"ADDED"}\n'
        assert agent.session.running_handlers == 1
        response.close()  # the caller hangs up mid-watch, on the near replica
        await wait_for(agent.session.wait_idle(), 5)
        assert agent.session.running_handlers == 0
        link = near.forwarder.links()[0] if near.forwarder is not None else None
        assert link is not None
        await wait_for(link.streams.wait_idle(), 5)


async def test_an_http2_callers_requests_are_forwarded_and_its_reset_ends_the_watch(
    gateway: Gateway, near: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    async with (
        connect_agent(planes[0]) as agent,
        await H2Caller.connect(near.callers.port, pki.caller_ssl()) as caller,
    ):
        share(gateway, near)
        assert (await caller.get(f"{A}/echo"))[0] == 200
        forwarded = sample(
            near,
            "planelink_gateway_forwarded_requests_total",
            peer="far",
            plane="ns-a/plane-a",
            code="2xx",
        )
        assert forwarded == 1
        watch = caller.request(f"{A}/forever?watch=1")
        assert await caller.read(watch) == b'{"type":"ADDED"}\n'
        assert agent.session.running_handlers == 1
        caller.reset(watch)  # on the near replica: the far one's agent stream ends
        await wait_for(agent.session.wait_idle(), 5)
        assert (await caller.get(f"{A}/echo"))[0] == 200


async def test_a_forwarded_upgrade_becomes_a_byte_pipe(
    gateway: Gateway, near: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]) as agent:
        share(gateway, near)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", near.callers.port, ssl=pki.caller_ssl(), server_hostname="127.0.0.1"
        )
        writer.write(
            f"POST {A}/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\n\r\n".encode()
        )
        head = await wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 ")
        writer.write(b"exec me")
        received = b""
        while len(received) < len(b"EXEC ME"):
            received += await wait_for(reader.read(100), 5)
        assert received == b"EXEC ME"
        writer.close()  # the caller hangs up: the agent's side of the pipe ends too
        await wait_for(agent.session.wait_idle(), 5)


@pytest.mark.parametrize(
    ("field", "status"),
    [("Planelink-Forwarded-By", 400), ("planelink-caller", 400), ("Impersonate-User", 403)],
)
async def test_a_caller_cannot_send_what_only_replicas_may(  # noqa: PLR0917
    gateway: Gateway,
    near: Gateway,
    connect_agent: AgentFactory,
    near_caller: aiohttp.ClientSession,
    planes: PlanePair,
    field: str,
    status: int,
) -> None:
    async with connect_agent(planes[0]):
        share(gateway, near)
        async with near_caller.get(f"{A}/echo", headers={field: "system:admin"}) as response:
            assert response.status == status
            answer = await response.json()
    assert answer["kind"] == "Status"
    assert field.lower() in answer["message"].lower()
    assert sample(gateway, "planelink_gateway_peer_requests_total") == 0


async def test_a_forwarded_request_is_never_forwarded_again(
    gateway: Gateway, near: Gateway, near_caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    # Each replica believes the other holds plane A; neither does.
    def holding(replica: Gateway) -> Replica:
        return replace(replica.peers.local(), planes={planes[0]: frozenset({"ghost"})})

    near.peers.replace_peers([holding(gateway)])
    gateway.peers.replace_peers([holding(near)])
    async with near_caller.get(f"{A}/api") as response:
        assert response.status == 503
        assert "no agent of dataplane ns-a/plane-a" in (await response.json())["message"]
        # The far replica's refusal said another may serve it: the near one answers itself.
        assert "Planelink-Refused" not in response.headers
    labels = {"plane": "ns-a/plane-a", "code": "5xx"}
    assert sample(near, "planelink_gateway_forwarded_requests_total", peer="far", **labels) == 0
    assert sample(gateway, "planelink_gateway_peer_requests_total", peer="near", **labels) == 1
    assert sample(gateway, "planelink_gateway_forwarded_requests_total", peer="near", **labels) == 0
    assert sample(near, "planelink_gateway_peer_requests_total", peer="far", **labels) == 0


async def test_a_peer_without_the_plane_after_all_is_skipped_for_the_next(
    gateway: Gateway,
    near: Gateway,
    connect_agent: AgentFactory,
    near_caller: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A third replica whose presence is stale: it is said to hold plane A and does not.
    stale = Gateway(replace(gateway.settings, replica_id="stale"))
    await stale.start()
    try:
        async with connect_agent(PLANE_A):
            share(gateway, near, stale)
            claimed = replace(stale.peers.local(), planes={PLANE_A: frozenset({"gone"})})
            near.peers.replace_peers([gateway.peers.local(), claimed])
            forwarder = near.forwarder
            assert forwarder is not None
            in_order = forwarder.peers_for
            monkeypatch.setattr(  # the stale one first, every time
                forwarder, "peers_for", lambda plane: sorted(in_order(plane), key=_stale_first)
            )
            for _ in range(3):
                async with near_caller.get(f"{A}/echo") as response:
                    assert response.status == 200
        labels = {"plane": "ns-a/plane-a", "code": "5xx"}
        assert sample(stale, "planelink_gateway_peer_requests_total", peer="near", **labels) == 3
        ok = {"plane": "ns-a/plane-a", "code": "2xx"}
        assert sample(near, "planelink_gateway_forwarded_requests_total", peer="far", **ok) == 3
    finally:
        await stale.stop()


def _stale_first(link: PeerLink) -> bool:
    return link.replica_id != "stale"


async def test_a_peer_that_cannot_be_reached_is_skipped(
    near: Gateway, near_caller: aiohttp.ClientSession, planes: PlanePair
) -> None:
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    gone = Replica(
        id="gone", peer_url=f"https://127.0.0.1:{port}", planes={planes[0]: frozenset({"a"})}
    )
    near.peers.replace_peers([gone])
    async with near_caller.get(f"{A}/api") as response:
        assert response.status == 503
    assert sample(near, "planelink_gateway_forwarded_requests_total", peer="gone") == 0


async def peer_get(
    replica: Gateway, context: ssl.SSLContext, path: str, headers: str = ""
) -> tuple[bytes, bytes]:
    """GET `path` on the peer port with `context`; the response head and body."""
    assert replica.peer_listener is not None
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        replica.peer_listener.port,
        ssl=context,
        server_hostname=certs.PEER_SERVER_NAME,
    )
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: peer\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        head, _, body = (await wait_for(reader.read(-1), 5)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    return head, body


async def test_the_peer_port_serves_this_replicas_own_planes_and_metrics(
    gateway: Gateway, peer_pki: PeerPki, pki: Pki, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    context = peer_pki.client_ssl(certs.issue_peer(peer_pki.ca), pki.directory)
    with capture_logs() as logs:
        await _serve_documents_and_refuse(gateway, context, connect_agent, planes)
    # A replica's documents are not callers' requests: the access log has the refusal only.
    access = [(line["path"], line["status"]) for line in logs if line["event"] == "access"]
    assert access == [("/api", 400)]


async def _serve_documents_and_refuse(
    gateway: Gateway, context: ssl.SSLContext, connect_agent: AgentFactory, planes: PlanePair
) -> None:
    async with connect_agent(planes[0]):
        head, body = await peer_get(gateway, context, "/peer/v1/planes")
        assert head.startswith(b"HTTP/1.1 200")
        assert b'"name": "plane-a"' in body
        assert b'"connectedAgents": 1' in body
        head, body = await peer_get(gateway, context, "/peer/v1/metrics")
        assert head.startswith(b"HTTP/1.1 200")
        assert b'planelink_gateway_agents_connected{plane="ns-a/plane-a"} 1.0' in body
        # A request for a plane must say who forwards it, and for whom.
        head, body = await peer_get(gateway, context, f"{A}/api")
        assert head.startswith(b"HTTP/1.1 400")
        assert b"planelink-forwarded-by" in body
        # The refusal's access line is written once it lingered (the peer closes first).
        listener = gateway.peer_listener
        assert listener is not None
        await eventually(
            lambda: listener._exchanges == 0, within=10, message="the refusal's exchange ended"
        )


@pytest.mark.parametrize("client", ["caller", "other-ca", "none"])
async def test_the_peer_port_refuses_anything_but_a_peer_certificate_in_tls(
    gateway: Gateway, peer_pki: PeerPki, pki: Pki, client: str
) -> None:
    if client == "caller":
        context = peer_pki.client_ssl(pki.caller, pki.directory)
    elif client == "other-ca":
        context = peer_pki.client_ssl(certs.issue_peer(certs.create_ca("other")), pki.directory)
    else:
        context = ssl.create_default_context(cadata=peer_pki.ca.certificate_pem().decode())
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await peer_get(gateway, context, f"{A}/api", "Planelink-Forwarded-By: x\r\n")
    labels = {"port": "peer", "reason": "tls_failed"}
    await eventually(
        lambda: sample(gateway, "planelink_gateway_connections_refused_total", **labels) == 1,
        within=5,
        message="the refused handshake is counted",
    )


async def test_a_caller_name_that_would_break_the_peers_head_is_refused(
    gateway: Gateway, near: Gateway, connect_agent: AgentFactory, pki: Pki, planes: PlanePair
) -> None:
    # Names come from the caller CA or the control plane; still, the peer hop writes them into
    # an HTTP/1.1 head, so one with CR LF would add a field of its own there.
    forged = certs.issue_client(
        pki.caller_ca, common_name="jane\r\nImpersonate-Group: system:masters"
    )
    pki.caller = forged
    async with connect_agent(planes[0]), caller_session(near, pki) as session:
        share(gateway, near)
        async with session.get(f"{A}/echo") as response:
            assert response.status == 400
            assert "identity cannot be passed on" in (await response.json())["message"]
    assert sample(gateway, "planelink_gateway_peer_requests_total") == 0


async def test_kubectl_through_a_replica_without_the_plane_reaches_a_real_api_server(
    gateway: Gateway,
    near: Gateway,
    pki: Pki,
    kube_servers: Callable[[str], KubeAPIServer],
    planes: PlanePair,
) -> None:
    # The far replica reaches plane A's real API server itself (direct mode, as the admin);
    # the near one only knows that the far one holds it.
    target = kube_servers("direct-target")
    gateway.direct.set(
        planes[0],
        DirectCredentials(
            server=target.url,
            ca_pem=target.ca_file.read_bytes(),
            bearer_token=target.admin_token,
        ),
    )
    near.peers.replace_peers(
        [replace(gateway.peers.local(), planes={planes[0]: frozenset({"direct"})})]
    )
    kubeconfig = pki.directory / "near.kubeconfig"
    config = build_kubeconfig(
        name="near",
        server=f"https://127.0.0.1:{near.callers.port}{A}",
        ca_pem=pki.gateway_ca.certificate_pem(),
        credentials=Credentials(
            user="jane",
            client_certificate_pem=pki.caller.certificate_pem(),
            client_key_pem=pki.caller.private_key_pem(),
        ),
    )
    kubeconfig.write_text(yaml.safe_dump(config))
    # The data plane sees the caller, impersonated, exactly as through the far replica.
    whoami = await target.akubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig)
    user = json.loads(whoami.stdout)["status"]["userInfo"]
    assert user["username"] == "jane"
    assert "ops" in user["groups"]
    # And what jane may not do, she may not do through a peer either.
    refused = await target.akubectl(
        "get", "secrets", "-n", "kube-system", kubeconfig=kubeconfig, check=False
    )
    assert refused.returncode != 0
    assert 'User "jane" cannot list resource "secrets"' in refused.stderr
    labels = {"peer": "far", "plane": "ns-a/plane-a"}
    assert sample(near, "planelink_gateway_forwarded_requests_total", code="2xx", **labels) >= 1
    assert sample(near, "planelink_gateway_forwarded_requests_total", code="4xx", **labels) >= 1


def test_the_peer_port_has_its_own_budget_within_the_descriptor_limit(
    pki: Pki,
    loopback_gateway_settings: Callable[[Path], GatewaySettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _: (4096, 4096))
    settings = app._within_fd_limit(loopback_gateway_settings(pki.directory))
    assert settings.peers is not None
    ports = (settings.agents.admission, settings.callers.admission, settings.peers.admission)
    assert sum(port.max_connections for port in ports) <= 4096 - app.FD_RESERVE - 409
    assert 0 < settings.peers.admission.max_connections < settings.callers.admission.max_connections


def test_unusable_peer_certificates_are_a_clear_error_at_start(
    pki: Pki, loopback_gateway_settings: Callable[[Path], GatewaySettings], peer_pki: PeerPki
) -> None:
    settings = loopback_gateway_settings(pki.directory)
    missing = replace(peer_pki.settings, key=pki.directory / "nowhere.key")
    with pytest.raises(ValueError, match=r"peer certificates: .*nowhere\.key"):
        Gateway(replace(settings, peers=missing))
    (pki.directory / "garbage.crt").write_text("not a certificate")
    garbage = replace(peer_pki.settings, ca=pki.directory / "garbage.crt")
    with pytest.raises(ValueError, match="peer certificates"):
        Gateway(replace(settings, peers=garbage))


async def test_a_stopping_replica_finishes_the_requests_it_forwards(
    gateway: Gateway,
    connect_agent: AgentFactory,
    pki: Pki,
    loopback_gateway_settings: Callable[[Path], GatewaySettings],
    planes: PlanePair,
) -> None:
    """A rolling restart: the replica on its way out has no tunnel of its own to wait for,
    but the request it is forwarding still gets the drain grace to finish."""
    leaving = Gateway(replace(loopback_gateway_settings(pki.directory), replica_id="leaving"))
    await leaving.start()
    rest_of_body = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"first half "
        await rest_of_body.wait()
        yield b"second half"

    stopping: asyncio.Task[None] | None = None
    try:
        async with connect_agent(planes[0]) as agent, caller_session(leaving, pki) as session:
            share(gateway, leaving)
            posting = asyncio.create_task(session.post(f"{A}/echo", data=body()))
            await eventually(
                lambda: agent.session.running_handlers == 1,
                within=5,
                message="the far agent serves the forwarded request",
            )
            stopping = asyncio.create_task(leaving.stop())
            await eventually(
                lambda: leaving.callers.closing, within=5, message="the replica stops accepting"
            )
            rest_of_body.set()
            async with await wait_for(posting, 5) as response:
                assert response.status == 200
                assert await response.read() == b"first half second half"
            await wait_for(stopping, 5)
    finally:
        if stopping is None:
            await leaving.stop()
    assert leaving.callers.active_connections == 0
