"""Several real gateway replicas behind HAProxy, real agents, real API servers: the scale-out lab.

`ReplicaLab` runs, each as a process of its own (`python -m planelink ...`, as a pod would):

- gateway replicas `r1`, `r2`, ... (`--identity`), each with its own agent, caller, operator
  and peer ports, following the DataPlanes of a real control plane (`--reconcile`) and keeping
  a coordination Lease there (`--lease-namespace`), callers impersonated on the data planes;
- one agent per plane, dialling the agent frontend of the load balancer (or, `pinned`, one
  replica's agent port directly, as behind a load balancer that always picks the same replica:
  then the other replicas can reach that plane only by forwarding to a peer);
- HAProxy (tests/kit/haproxy.py) with a slot per replica, in rotation while the replica runs.

kubectl reaches a plane through the balancer (`kubectl`) or through one replica (`kubectl_at`).
Replicas are started, stopped with SIGTERM, killed with SIGKILL and restarted one at a time;
tests wait for what the replicas report (/readyz, /planes, HAProxy's checks), never sleep.
Every process is stopped when the lab closes, pass or fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

import certs
import crd
from bench.processes import Proc, spawn, wait_http_ok
from certs import PlaneRef
from envtest import Credentials, KubeAPIServer, build_kubeconfig, free_port, run_kubectl
from planelink.local import CALLER_NAME, LocalPlanelink
from tests.kit.haproxy import LoadBalancer, Server
from tests.kit.waits import eventually, scaled

HEARTBEAT = ("--heartbeat-interval", "1", "--heartbeat-timeout", "4")
DRAIN_GRACE = 3.0
"""Seconds a SIGTERMed replica keeps serving: longer than HAProxy takes to see its /readyz
fail (`CHECK_INTERVAL * CHECK_FALL`), so no new caller lands on it once it stops accepting."""
LIMIT = 30.0
"""Seconds (scaled) any one step of a test may take: a process starting, kubectl, a change."""


@dataclass
class Replica:
    """One gateway replica: its ports (fixed for its slot, so a restart takes the same ones)
    and its process while it runs."""

    identity: str
    agent_port: int = field(default_factory=free_port)
    caller_port: int = field(default_factory=free_port)
    operator_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: Proc | None = None
    starts: int = 0

    @property
    def server(self) -> Server:
        return Server(
            self.identity,
            {"agents": self.agent_port, "callers": self.caller_port},
            self.operator_port,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.popen.poll() is None

    def operator_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.operator_port}{path}"


@dataclass
class ReplicaLab:
    """Gateway replicas (`slots` of them at most) serving `planes` (plane -> the kubeconfig of
    its data plane's API server), DataPlanes in `namespace` of `control_plane`."""

    workdir: Path
    control_plane: KubeAPIServer
    namespace: str
    planes: dict[PlaneRef, Path]
    slots: int = 3
    pinned: dict[PlaneRef, str] = field(default_factory=dict)
    """Plane -> the replica whose agent port its agent dials, instead of the balancer."""
    impersonate: bool = True
    """Callers impersonated on the data planes (each then grants the caller cluster-admin); off
    for an upstream that is no API server (the stand-in kubelet)."""
    replicas: dict[str, Replica] = field(default_factory=dict)
    agents: dict[PlaneRef, Proc] = field(default_factory=dict)
    agent_health: dict[PlaneRef, int] = field(default_factory=dict)
    balancer: LoadBalancer | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, replicas: int) -> None:
        """Certificates, DataPlanes, the balancer, `replicas` replicas in rotation, and an agent
        per plane holding a tunnel to at least one of them (`wait_tunnels` waits for all)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        pki = LocalPlanelink(directory=self.pki, planes=self.planes)
        pki.write_pki()
        self._write_peer_pki()
        await asyncio.to_thread(self._apply_dataplanes, pki)
        if self.impersonate:
            for plane in self.planes:
                await self._grant_caller(plane)
        for index in range(1, self.slots + 1):
            self.replicas[f"r{index}"] = Replica(f"r{index}")
        self.balancer = LoadBalancer(
            self.workdir / "haproxy", [replica.server for replica in self.replicas.values()]
        )
        await self.balancer.start()
        for identity in list(self.replicas)[:replicas]:
            await self.start_replica(identity)
        for plane in self.planes:
            await self.start_agent(plane)
        await self.wait_connected()

    async def close(self) -> None:
        procs = [*self.agents.values()]
        procs += [replica.proc for replica in self.replicas.values() if replica.proc is not None]
        await asyncio.gather(*(asyncio.to_thread(proc.stop, grace=2) for proc in procs))
        if self.balancer is not None:
            await self.balancer.stop()

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def lb(self) -> LoadBalancer:
        assert self.balancer is not None, "the lab has not started"
        return self.balancer

    def running(self) -> list[str]:
        """The identities of the replicas whose process runs."""
        return [name for name, replica in self.replicas.items() if replica.running]

    # -- replicas -----------------------------------------------------------------------------

    async def start_replica(self, identity: str) -> Replica:
        """Start replica `identity`; returns once it is ready and HAProxy sends it traffic."""
        replica = self.replicas[identity]
        assert not replica.running, f"{identity} already runs"
        replica.starts += 1
        replica.proc = spawn(
            f"gateway-{identity}-{replica.starts}", self._gateway_argv(replica), self.workdir
        )
        await wait_http_ok(replica.operator_url("/readyz"), replica.proc, timeout=scaled(LIMIT))
        await self.lb.enable(identity)
        await self.lb.wait_status(identity, "UP")
        return replica

    async def stop_replica(self, identity: str) -> int | None:
        """SIGTERM replica `identity` and wait for it to exit (it drains for `DRAIN_GRACE`
        seconds); then out of HAProxy's rotation. Returns its exit code."""
        replica = self.replicas[identity]
        assert replica.proc is not None
        replica.proc.popen.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(replica.proc.popen.wait, scaled(DRAIN_GRACE + LIMIT))
        await self.lb.disable(identity)
        return code

    async def kill_replica(self, identity: str) -> None:
        """SIGKILL replica `identity` (no goodbye to anyone); HAProxy is not told: its health
        checks find out."""
        replica = self.replicas[identity]
        assert replica.proc is not None
        os.killpg(replica.proc.popen.pid, signal.SIGKILL)
        await asyncio.to_thread(replica.proc.popen.wait, scaled(LIMIT))

    def _gateway_argv(self, replica: Replica) -> list[str]:
        pki = self.pki
        argv = [sys.executable, "-m", "planelink", "--log-level", "info", "gateway"]
        argv += ["--identity", replica.identity, "--bind", "127.0.0.1"]
        argv += [
            "--tls-cert",
            str(pki / "gateway/tls.crt"),
            "--tls-key",
            str(pki / "gateway/tls.key"),
        ]
        argv += ["--caller-ca", str(pki / "callers/ca.crt")]
        if self.impersonate:
            argv.append("--impersonate-callers")
        argv += ["--agent-port", str(replica.agent_port), "--caller-port", str(replica.caller_port)]
        argv += ["--operator-port", str(replica.operator_port)]
        argv += ["--reconcile", "--kubeconfig", str(self.control_plane.kubeconfig_path)]
        argv += ["--namespaces", self.namespace, "--lease-namespace", self.namespace]
        argv += ["--watch-retry-max", "0.5", "--drain-grace", str(DRAIN_GRACE), *HEARTBEAT]
        argv += ["--peer-port", str(replica.peer_port), "--peer-host", "127.0.0.1"]
        argv += ["--peer-advertise", "127.0.0.1", "--peer-ca", str(pki / "peers/ca.crt")]
        argv += ["--peer-certificate", str(pki / "peers/tls.crt")]
        argv += ["--peer-key", str(pki / "peers/tls.key")]
        return argv

    # -- agents -------------------------------------------------------------------------------

    def agent_id(self, plane: PlaneRef) -> str:
        return f"agent-{plane.name}"

    async def start_agent(self, plane: PlaneRef) -> None:
        target = self.pinned.get(plane)
        port = self.replicas[target].agent_port if target else self.lb.port("agents")
        health = self.agent_health.setdefault(plane, free_port())
        tls_dir = self.pki / "agents" / plane.namespace / plane.name
        argv = [sys.executable, "-m", "planelink", "--log-level", "info", "agent"]
        argv += ["--gateway-url", f"wss://127.0.0.1:{port}", "--plane", str(plane)]
        argv += ["--agent-id", self.agent_id(plane), "--kubeconfig", str(self.planes[plane])]
        argv += ["--tls-dir", str(tls_dir), "--health-address", f"127.0.0.1:{health}"]
        argv += ["--backoff-base", "0.1", "--backoff-cap", "1", *HEARTBEAT]
        proc = self.agents[plane] = spawn(f"agent-{plane.name}", argv, self.workdir)
        await wait_http_ok(f"http://127.0.0.1:{health}/readyz", proc, timeout=scaled(LIMIT))

    # -- what the replicas report ---------------------------------------------------------------

    async def planes_at(self, identity: str) -> dict[PlaneRef, set[str]]:
        """{plane: ids of the agents holding a tunnel to replica `identity`}, from its own
        /planes document on the peer port. (Its operator /planes shows the whole gateway,
        merged from the replicas of its host: here all of them, as they share one machine.)"""
        url = f"https://127.0.0.1:{self.replicas[identity].peer_port}/peer/v1/planes"
        connector = aiohttp.TCPConnector(ssl=self.peer_ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.get(url, server_hostname=certs.PEER_SERVER_NAME) as response,
        ):
            assert response.status == 200, await response.text()
            body = await response.json()
        return {
            certs.plane_ref(entry["namespace"], entry["name"]): {
                agent["agentId"] for agent in entry["agents"] if not agent.get("direct")
            }
            for entry in body["planes"]
        }

    async def holds_all(self, identity: str) -> bool:
        """Replica `identity` holds a tunnel from every agent that can reach it."""
        held = await self.planes_at(identity)
        return all(
            self.agent_id(plane) in held.get(plane, set())
            for plane in self.planes
            if self.pinned.get(plane, identity) == identity
        )

    async def wait_connected(self) -> None:
        """Return once every agent holds a tunnel to at least one running replica."""

        async def connected() -> bool:
            views = await asyncio.gather(*(self.planes_at(name) for name in self.running()))
            return all(
                any(self.agent_id(plane) in view.get(plane, set()) for view in views)
                for plane in self.planes
            )

        await eventually(connected, within=LIMIT, interval=0.1, message="agents never connected")

    async def wait_tunnels(self, identities: Sequence[str], *, within: float = LIMIT) -> None:
        """Return once each of `identities` holds a tunnel from every agent that reaches it."""

        async def converged() -> bool:
            held = await asyncio.gather(*(self.holds_all(name) for name in identities))
            return all(held)

        await eventually(
            converged, within=within, interval=0.1, message=f"agents never reached {identities}"
        )

    # -- callers --------------------------------------------------------------------------------

    def kubeconfig(self, plane: PlaneRef, identity: str | None = None) -> Path:
        """The caller's kubeconfig for `plane`: through the balancer, or replica `identity`."""
        port = self.replicas[identity].caller_port if identity else self.lb.port("callers")
        path = self.workdir / "callers" / f"{plane.name}-{identity or 'lb'}.kubeconfig"
        if not path.exists():
            callers = self.pki / "callers"
            config = build_kubeconfig(
                name=f"{plane.name}-via-{identity or 'lb'}",
                server=f"https://127.0.0.1:{port}/planes/{plane.namespace}/{plane.name}/k8s",
                ca_pem=(self.pki / "gateway/ca.crt").read_bytes(),
                credentials=Credentials(
                    user=CALLER_NAME,
                    client_certificate_pem=(callers / "tls.crt").read_bytes(),
                    client_key_pem=(callers / "tls.key").read_bytes(),
                ),
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(config))
        return path

    async def kubectl(
        self, plane: PlaneRef, *args: str, at: str | None = None, limit: float = LIMIT
    ) -> subprocess.CompletedProcess[str]:
        """Real kubectl against `plane`, through the balancer (or replica `at`)."""
        return await run_kubectl(self.kubeconfig(plane, at), *args, timeout=scaled(limit))

    async def whoami(self, plane: PlaneRef, *, at: str | None = None) -> dict[str, object]:
        """The user `plane`'s API server sees behind a request through planelink (a
        SelfSubjectReview's userInfo: username, groups...)."""
        done = await self.kubectl(plane, "auth", "whoami", "-o", "json", at=at)
        assert done.returncode == 0, done.stderr
        user: dict[str, object] = json.loads(done.stdout)["status"]["userInfo"]
        return user

    async def direct(self, plane: PlaneRef, *args: str) -> subprocess.CompletedProcess[str]:
        """kubectl straight at `plane`'s API server, as its admin (to set up or check)."""
        return await run_kubectl(self.planes[plane], *args, timeout=scaled(LIMIT))

    def caller_ssl_context(self) -> ssl.SSLContext:
        """TLS as the caller: trusts the gateway, presents the caller's certificate."""
        context = ssl.create_default_context(cafile=str(self.pki / "gateway/ca.crt"))
        context.load_cert_chain(self.pki / "callers/tls.crt", self.pki / "callers/tls.key")
        return context

    def peer_ssl_context(self) -> ssl.SSLContext:
        """TLS as a peer replica: trusts the peer CA, presents the peer certificate."""
        peers = self.pki / "peers"
        context = ssl.create_default_context(cafile=str(peers / "ca.crt"))
        context.load_cert_chain(peers / "tls.crt", peers / "tls.key")
        return context

    # -- files --------------------------------------------------------------------------------

    def _write_peer_pki(self) -> None:
        """The replicas' own CA and the one certificate they serve and dial peers with."""
        peers = self.pki / "peers"
        ca = certs.create_ca("planelink peers")
        leaf = certs.issue_peer(ca)
        peers.mkdir(parents=True, exist_ok=True)
        (peers / "ca.crt").write_bytes(ca.certificate_pem())
        (peers / "tls.crt").write_bytes(leaf.chain_pem())
        (peers / "tls.key").touch(mode=0o600)
        (peers / "tls.key").write_bytes(leaf.private_key_pem())

    async def _grant_caller(self, plane: PlaneRef) -> None:
        """The caller may do anything on `plane`: the data plane sees it (impersonated), not
        the agent, so its rights are the caller's own."""
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{CALLER_NAME}-admin"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CALLER_NAME}
            ],
        }
        done = await run_kubectl(
            self.planes[plane], "apply", "-f", "-", input=yaml.safe_dump(binding)
        )
        assert done.returncode == 0, done.stderr

    def _apply_dataplanes(self, pki: LocalPlanelink) -> None:
        for plane in self.planes:
            manifest = {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "metadata": {"name": plane.name, "namespace": plane.namespace},
                "spec": {
                    "agent": {"enabled": True, "clientCA": {"value": pki.agent_ca_pem(plane)}},
                    "gateway": {"publicVirtualHost": "a", "organizationVirtualHost": "b"},
                },
            }
            self.control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
