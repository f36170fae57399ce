"""A whole planelink on one machine: certificates, a gateway and one agent per data plane.

`planelink dev` and the end-to-end tests use it with real API servers (envtest): the agents
reach their data planes' API servers through kubeconfigs, the gateway trusts each plane's agent
CA (from a planes file, or from DataPlane resources when it reconciles), and a caller kubeconfig
per plane points kubectl at the gateway. Everything runs in the current event loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import certs
from agent.app import Agent
from agent.settings import AgentSettings
from certs import CertificateBundle, PlaneRef
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.auth import CallerAuthSettings
from gateway.callers import CallerSettings
from gateway.reconciler import ReconcilerSettings
from kubeobject.kubeconfig import Credentials, build_kubeconfig
from tunnel import Heartbeat

CALLER_NAME = "planelink-dev"


@dataclass(frozen=True)
class GatewayPorts:
    """The gateway's loopback ports (0: a free one, kept after the first start so that agents
    and kubeconfigs keep working across a restart)."""

    agents: int = 0
    callers: int = 0
    operator: int = 0


@dataclass
class _RunningAgent:
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class LocalPlanelink:
    """Gateway + agents for `planes` (plane -> the data plane's kubeconfig), under `directory`."""

    directory: Path
    planes: dict[PlaneRef, Path]
    reconcile_with: Path | None = None
    """The control plane's kubeconfig: trust comes from DataPlanes there, not from a file."""
    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat(interval=2, timeout=6))
    caller_auth: CallerAuthSettings = field(default_factory=CallerAuthSettings)
    reconciler_settings: ReconcilerSettings = field(default_factory=ReconcilerSettings)
    """How the gateway reconciles, when it does (`reconcile_with`)."""
    control_plane: Path | None = None
    """The control plane's kubeconfig for caller reviews (default: `reconcile_with`)."""
    ports: GatewayPorts = field(default_factory=GatewayPorts)
    agent_health_port: int = 0
    """Where the agent serves /healthz and /metrics (0: a free port; fixed: one plane only)."""
    agent_settings: Callable[[AgentSettings], AgentSettings] | None = None
    """Applied to each agent's settings before it starts: what a test changes in them
    (`lambda s: dataclasses.replace(s, max_streams=2048)`)."""
    gateway: Gateway | None = None
    agent_cas: dict[PlaneRef, CertificateBundle] = field(default_factory=dict)
    _agents: dict[PlaneRef, _RunningAgent] = field(default_factory=dict)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.start_pki_and_gateway()
        for plane in self.planes:
            await self.start_agent(plane)

    async def start_pki_and_gateway(self) -> None:
        """Certificates and the gateway; agents are started one by one with `start_agent`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_pki()
        await self.start_gateway()

    async def stop(self) -> None:
        for plane in list(self._agents):
            await self.stop_agent(plane)
        await self.stop_gateway()

    async def start_gateway(self) -> Gateway:
        settings = GatewaySettings(
            server_certificate=self.directory / "gateway" / "tls.crt",
            server_key=self.directory / "gateway" / "tls.key",
            caller_ca=self.directory / "callers" / "ca.crt",
            planes_file=None if self.reconcile_with else self.directory / "planes.yaml",
            agents=AgentListenerSettings(
                host="127.0.0.1", port=self.ports.agents, heartbeat=self.heartbeat
            ),
            callers=CallerSettings(
                host="127.0.0.1", port=self.ports.callers, auth=self.caller_auth
            ),
            operator_host="127.0.0.1",
            operator_port=self.ports.operator,
            drain_grace=2,
            reconciler=self.reconciler_settings if self.reconcile_with else None,
            kubeconfig=self.reconcile_with or self.control_plane,
        )
        self.gateway = Gateway(settings)
        await self.gateway.start()
        self.ports = GatewayPorts(
            agents=self.gateway.agent_listener.port,
            callers=self.gateway.callers.port,
            operator=self.gateway.operator_port,
        )
        self._write_caller_kubeconfigs()
        return self.gateway

    async def stop_gateway(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None

    async def start_agent(self, plane: PlaneRef) -> Agent:
        settings = AgentSettings(
            gateway_url=f"wss://127.0.0.1:{self.ports.agents}",
            plane=str(plane),
            agent_id=f"dev-{plane.name}",
            tls_dir=self.directory / "agents" / plane.namespace / plane.name,
            kubeconfig=self.planes[plane],
            health_address=f"127.0.0.1:{self.agent_health_port}",
            heartbeat_interval=self.heartbeat.interval,
            heartbeat_timeout=self.heartbeat.timeout,
            backoff_base=0.2,
            backoff_cap=2.0,
            drain_grace=2.0,
        )
        if self.agent_settings is not None:
            settings = self.agent_settings(settings)
        agent = Agent(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop), name=f"agent-{plane}")
        self._agents[plane] = _RunningAgent(agent, stop, task)
        return agent

    async def stop_agent(self, plane: PlaneRef) -> None:
        running = self._agents.pop(plane)
        running.stop.set()
        await running.task

    def agent(self, plane: PlaneRef) -> Agent:
        return self._agents[plane].agent

    async def wait_connected(self, plane: PlaneRef, *, agents: int = 1) -> None:
        """Returns once `agents` agents of `plane` are registered at the gateway."""
        assert self.gateway is not None
        while len(self.gateway.agents.agents(plane)) < agents:
            await self.gateway.agents.wait_for_change()

    # -- files --------------------------------------------------------------------------------

    def renew_agent_certificate(self, plane: PlaneRef, ca: CertificateBundle) -> None:
        """Write a new agent certificate signed by `ca` where the agent reads it (as
        cert-manager would); the agent uses it on its next connection."""
        agent = certs.issue_agent(ca, plane=plane)
        tls_dir = self.directory / "agents" / plane.namespace / plane.name
        _write(tls_dir / "tls.key", agent.private_key_pem(), private=True)
        _write(tls_dir / "tls.crt", agent.chain_pem())

    def caller_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context as a caller: trusts the gateway, presents the caller's cert."""
        context = ssl.create_default_context(cafile=str(self.directory / "gateway" / "ca.crt"))
        callers = self.directory / "callers"
        context.load_cert_chain(callers / "tls.crt", callers / "tls.key")
        return context

    def caller_kubeconfig(self, plane: PlaneRef) -> Path:
        return self.directory / "callers" / f"{plane.namespace}.{plane.name}.kubeconfig"

    def agent_ca_pem(self, plane: PlaneRef) -> str:
        return self.agent_cas[plane].certificate_pem().decode()

    def write_pki(self) -> None:
        """Certificates for the gateway, the caller and each plane's agent, under `directory`
        (the caller's client certificate is `callers/tls.crt` and `callers/tls.key`)."""
        gateway_ca = certs.create_ca("planelink-dev gateway CA")
        server = certs.issue_server(
            gateway_ca, common_name="gateway", dns_names=["localhost"], ip_addresses=["127.0.0.1"]
        )
        _write(self.directory / "gateway" / "tls.crt", server.chain_pem())
        _write(self.directory / "gateway" / "tls.key", server.private_key_pem(), private=True)
        _write(self.directory / "gateway" / "ca.crt", gateway_ca.certificate_pem())
        caller_ca = certs.create_ca("planelink-dev caller CA")
        caller = certs.issue_client(caller_ca, common_name=CALLER_NAME)
        _write(self.directory / "callers" / "ca.crt", caller_ca.certificate_pem())
        _write(self.directory / "callers" / "tls.crt", caller.chain_pem())
        _write(self.directory / "callers" / "tls.key", caller.private_key_pem(), private=True)
        self._caller = caller
        entries = []
        for plane in self.planes:
            ca = self.agent_cas.setdefault(plane, certs.create_ca(f"agents of {plane}"))
            agent = certs.issue_agent(ca, plane=plane)
            tls_dir = self.directory / "agents" / plane.namespace / plane.name
            _write(tls_dir / "tls.crt", agent.chain_pem())
            _write(tls_dir / "tls.key", agent.private_key_pem(), private=True)
            _write(tls_dir / "ca.crt", gateway_ca.certificate_pem())
            _write(tls_dir / "agent-ca.crt", ca.certificate_pem())
            entries.append(
                {
                    "plane": str(plane),
                    "clientCA": str(tls_dir / "agent-ca.crt"),
                    "requireIdentity": True,
                }
            )
        _write(self.directory / "planes.yaml", yaml.safe_dump({"planes": entries}).encode())

    def _write_caller_kubeconfigs(self) -> None:
        caller_port = self.ports.callers
        ca_pem = (self.directory / "gateway" / "ca.crt").read_bytes()
        credentials = Credentials(
            user=CALLER_NAME,
            client_certificate_pem=self._caller.certificate_pem(),
            client_key_pem=self._caller.private_key_pem(),
        )
        for plane in self.planes:
            config = build_kubeconfig(
                name=f"{plane.name}-via-planelink",
                server=f"https://127.0.0.1:{caller_port}/planes/{plane.namespace}/{plane.name}/k8s",
                ca_pem=ca_pem,
                credentials=credentials,
            )
            _write(self.caller_kubeconfig(plane), yaml.safe_dump(config).encode(), private=True)


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        path.touch(mode=0o600)
    path.write_bytes(data)
