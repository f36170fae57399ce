"""Start-up and recovery: a gateway that has not listed its DataPlanes yet tells callers and
agents to come back soon (503 + Retry-After, never 404 or "unknown plane"), serves within
seconds of its control plane's return, and a restarting gateway gets its agents back within
seconds — the real agent, a real kube-apiserver behind a proxy that can be cut and restored."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

import certs
from agent.app import Agent
from agent.settings import AgentSettings
from certs import PlaneRef, plane_ref
from envtest import KubeAPIServer
from gateway.app import Gateway, GatewaySettings
from tests.kit.gateway_lab import Pki, caller_session
from tests.kit.waits import scaled
from tests.reconciler.conftest import agent_dataplane, create, fast_settings
from tunnel.contract import AGENT_CONNECT_PATH, REJECTION_HEADER, REJECTION_STARTING, SUBPROTOCOL

BACK_WITHIN = scaled(5.0)
"""The bar: requests succeed / agents are back this soon after the control plane / gateway."""
GatewayFactory = Callable[[Path], GatewaySettings]


class SwitchableProxy:
    """A TCP forwarder to a real API server. While `down`, it cuts every connection and each new
    one at once (as an API server that is gone), counting the attempts; `up()` forwards again.
    The gateway reaches its control plane only through it."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.refusing = True
        self.refused = 0
        self._refused_changed = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)

    async def close(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()

    def up(self) -> None:
        self.refusing = False

    def down(self) -> None:
        self.refusing = True
        for writer in list(self._writers):
            writer.transport.abort()

    async def until_refused(self, count: int) -> None:
        async with asyncio.timeout(scaled(60)):
            while self.refused < count:
                self._refused_changed.clear()
                await self._refused_changed.wait()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            self._refused_changed.set()
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}
            for end in (writer, up_writer):
                end.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.transport.abort()


def _agent_settings(pki: Pki, gateway: Gateway, plane: PlaneRef, kubeconfig: Path) -> AgentSettings:
    """The real agent with its default backoff, its files as `planelink certs` writes them."""
    tls = pki.directory / f"agent-{plane.name}"
    tls.mkdir(exist_ok=True)
    bundle = certs.issue_agent(pki.agent_cas[plane], plane=plane)
    (tls / "tls.crt").write_bytes(bundle.chain_pem())
    (tls / "tls.key").write_bytes(bundle.private_key_pem())
    (tls / "ca.crt").write_bytes(pki.gateway_ca.certificate_pem())
    return AgentSettings(
        gateway_url=f"wss://127.0.0.1:{gateway.agent_listener.port}",
        plane=str(plane),
        agent_id=f"agent-of-{plane.name}",
        tls_dir=tls,
        kubeconfig=kubeconfig,
        health_address="127.0.0.1:0",
    )


@contextlib.asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[Agent]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, scaled(30))


async def _until_connected(gateway: Gateway, plane: PlaneRef) -> None:
    async with asyncio.timeout(scaled(60)):
        while not gateway.agents.agents(plane):
            await gateway.agents.wait_for_change()


async def _get_like_kubectl(caller: aiohttp.ClientSession, path: str) -> aiohttp.ClientResponse:
    """GET, retrying a 503 after its Retry-After as client-go does; the final answer."""
    async with asyncio.timeout(scaled(60)):
        while True:
            response = await caller.get(path)
            await response.read()
            retry_after = response.headers.get("Retry-After")
            if response.status != 503 or retry_after is None:
                return response
            await asyncio.sleep(float(retry_after))  # what the server asked for


async def test_a_gateway_whose_control_plane_is_down_says_starting_then_serves_when_it_returns(
    pki: Pki,
    loopback_gateway_settings: GatewayFactory,
    control_plane: KubeAPIServer,
    control_plane_client: ApiClient,
    namespace: str,
) -> None:
    plane = plane_ref(namespace, "edge")
    pki.agent_cas[plane] = certs.create_ca("agents of edge")
    manifest = agent_dataplane(
        plane.name, namespace, {"value": pki.agent_cas[plane].certificate_pem().decode()}
    )
    await create(control_plane_client, manifest)

    proxy = SwitchableProxy(control_plane.port)
    await proxy.start()
    kubeconfig = control_plane.kubeconfig()
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    through_proxy = pki.directory / "control-plane-via-proxy.kubeconfig"
    through_proxy.write_text(yaml.safe_dump(kubeconfig))
    settings = dataclasses.replace(
        loopback_gateway_settings(pki.directory),
        reconciler=fast_settings(namespace),
        kubeconfig=through_proxy,
    )
    gateway = Gateway(settings)  # its control plane is unreachable: the proxy is down
    await gateway.start()
    try:
        async with caller_session(gateway, pki) as caller, aiohttp.ClientSession() as operator:
            ready = await operator.get(f"http://127.0.0.1:{gateway.operator_port}/readyz")
            assert ready.status == 503
            assert "starting" in (await ready.json())["detail"]

            response = await caller.get(f"/planes/{plane}/k8s/version")
            status = await response.json()
            assert response.status == 503, status
            assert response.headers["Retry-After"] == "1"
            assert (status["reason"], status["code"]) == ("ServiceUnavailable", 503)
            assert status["message"].startswith("the gateway is starting")

            agent_tls = _agent_settings(pki, gateway, plane, control_plane.kubeconfig_path)
            with pytest.raises(InvalidStatus) as refused:
                await connect(
                    agent_tls.connect_url,
                    ssl=pki.agent_ssl(certs.issue_agent(pki.agent_cas[plane], plane=plane)),
                    subprotocols=[Subprotocol(SUBPROTOCOL)],
                )
            answer = refused.value.response
            assert answer.status_code == 503
            assert answer.headers[REJECTION_HEADER] == REJECTION_STARTING
            assert answer.headers["Retry-After"] == "1"

            async with _running(Agent(agent_tls)):
                # A long outage: the gateway's list/watch retries reach their longest delay.
                await proxy.until_refused(8)
                proxy.up()
                back = time.monotonic()
                response = await _get_like_kubectl(caller, f"/planes/{plane}/k8s/version")
                took = time.monotonic() - back
                assert response.status == 200, await response.text()
                assert took < BACK_WITHIN, f"first request succeeded {took:.1f} s after"
                print(f"control plane back: first request succeeded after {took:.2f} s")

            ready = await operator.get(f"http://127.0.0.1:{gateway.operator_port}/readyz")
            assert ready.status == 200
    finally:
        await gateway.stop()
        await proxy.close()


async def test_a_restarting_gateway_gets_its_agent_back_within_seconds(
    pki: Pki, planes: tuple[PlaneRef, PlaneRef], loopback_gateway_settings: GatewayFactory
) -> None:
    plane = planes[0]
    unused = pki.directory / "unused.kubeconfig"  # the agent's API server: never reached here
    unused.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: unused}}]\n"
    )
    gateway = Gateway(loopback_gateway_settings(pki.directory))
    await gateway.start()
    # Restarts come back on the same ports, as a restarted pod behind its Service does.
    settings = dataclasses.replace(
        gateway.settings,
        agents=dataclasses.replace(gateway.settings.agents, port=gateway.agent_listener.port),
        callers=dataclasses.replace(gateway.settings.callers, port=gateway.callers.port),
    )
    returns: list[float] = []
    try:
        agent = Agent(_agent_settings(pki, gateway, plane, unused))
        async with _running(agent):
            await _until_connected(gateway, plane)
            for _ in range(2):
                # The scenario of the issue: restarts 10 s apart (so no tunnel lasts the 30 s
                # that used to reset the backoff), each gateway down for a moment, as a pod is.
                await asyncio.sleep(10)
                await gateway.stop()
                await asyncio.sleep(2)
                gateway = Gateway(settings)
                await gateway.start()
                restarted = time.monotonic()
                await _until_connected(gateway, plane)
                returns.append(time.monotonic() - restarted)
                # Refused while the gateway was down, then accepted: failures start afresh.
                assert agent.reconnect.dials.attempt == 0
    finally:
        await gateway.stop()
    print("agent back after each restart: " + ", ".join(f"{r:.2f} s" for r in returns))
    assert all(r < BACK_WITHIN for r in returns), returns


async def test_a_connection_begun_while_starting_is_never_accepted_after(
    pki: Pki, planes: tuple[PlaneRef, PlaneRef], loopback_gateway_settings: GatewayFactory
) -> None:
    """While starting, the handshake asks for no certificate (the CAs are not all known): such a
    connection proved nothing, so it is told to come back even once start-up has ended."""
    proxy = SwitchableProxy(0)  # a control plane that refuses everything: the gateway starts
    await proxy.start()
    dead = pki.directory / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        f"clusters: [{{name: k, cluster: {{server: 'https://127.0.0.1:{proxy.port}'}}}}]\n"
        "users: [{name: u, user: {token: unused}}]\n"
    )
    settings = dataclasses.replace(
        loopback_gateway_settings(pki.directory),
        reconciler=fast_settings("nowhere"),
        kubeconfig=dead,
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        plane = planes[0]  # from the planes file: known all along
        bundle = certs.issue_agent(pki.agent_cas[plane], plane=plane)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", gateway.agent_listener.port, ssl=pki.agent_ssl(bundle)
        )
        gateway.trust.startup.loaded("DataPlanes")  # start-up ends between TLS and the request
        assert gateway.trust.startup.starting is None
        writer.write(
            f"GET {AGENT_CONNECT_PATH}?plane={plane} HTTP/1.1\r\nHost: gateway\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(10))
        writer.close()
        assert head.startswith(b"HTTP/1.1 503 ")
        assert f"{REJECTION_HEADER}: {REJECTION_STARTING}\r\n".encode() in head
        assert b"Retry-After: 1\r\n" in head
        assert not gateway.agents.agents(plane)
    finally:
        await gateway.stop()
        await proxy.close()
