"""What `planelink dev` runs once its guards have passed: two real API servers, the DataPlane
`dev/local`, and a gateway and an agent on the ports `planelink.dev` chose, until stopped."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import yaml

import envtest
from certs import plane_ref
from crd import dataplane_manifest
from planelink.dev import DevPorts, announcement, planelink_command
from planelink.local import GatewayPorts, LocalPlanelink

PLANE = plane_ref("dev", "local")


def serve(state_dir: Path, ports: DevPorts, *, exit_when_ready: bool) -> int:
    """Run everything until SIGINT or SIGTERM (or until ready); the exit code."""
    try:
        return asyncio.run(_run(state_dir, ports, exit_when_ready=exit_when_ready))
    except envtest.BinariesUnavailable as error:
        print(f"planelink dev: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        # Free when checked at the start, taken since by another program.
        print(
            f"planelink dev: {error}; pick free ports with the flags planelink dev --help lists",
            file=sys.stderr,
        )
        return 1


def _progress(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


async def _run(state_dir: Path, ports: DevPorts, *, exit_when_ready: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()

    _progress("building or reusing kube-apiserver and etcd (first run: a few minutes)")
    binaries = await asyncio.to_thread(envtest.find_binaries)
    async with AsyncExitStack() as stack:
        servers: dict[str, envtest.KubeAPIServer] = {}
        for name, port in (
            ("control-plane", ports.control_plane),
            ("data-plane", ports.data_plane),
        ):
            _progress(f"starting etcd + kube-apiserver for the {name} on port {port}")
            server = envtest.KubeAPIServer(
                options=envtest.ServerOptions(name=name, port=port), binaries=binaries
            )
            await asyncio.to_thread(server.start)
            stack.callback(server.stop)
            servers[name] = server
            server.write_kubeconfig(state_dir / f"{name}.kubeconfig")
        control = servers["control-plane"]
        _progress("installing the DataPlane CRD")
        await asyncio.to_thread(envtest.install_crd, control)

        local = LocalPlanelink(
            directory=state_dir / "planelink",
            planes={PLANE: state_dir / "data-plane.kubeconfig"},
            reconcile_with=state_dir / "control-plane.kubeconfig",
            ports=GatewayPorts(agents=ports.agent, callers=ports.caller, operator=ports.operator),
            agent_health_port=ports.agent_health,
        )
        _progress("issuing certificates, starting the gateway and the agent")
        await local.start_pki_and_gateway()
        stack.push_async_callback(local.stop)
        await asyncio.to_thread(_create_dataplane, control, local.agent_ca_pem(PLANE))
        await local.start_agent(PLANE)
        await asyncio.wait_for(local.wait_connected(PLANE), timeout=60)
        _progress(f"ready after {time.monotonic() - started:.1f} s")
        for what, value in announcement(
            state_dir=state_dir,
            through=local.caller_kubeconfig(PLANE),
            ports=ports,
            planelink=planelink_command(sys.argv[0], os.environ.get("PATH")),
            environ=os.environ,
        ):
            print(f"{what}: {value}")
        sys.stdout.flush()
        if not exit_when_ready:
            _progress("running; press Ctrl-C to stop")
            await stop.wait()
        _progress("stopping")
    return 0


def _create_dataplane(control: envtest.KubeAPIServer, agent_ca_pem: str) -> None:
    control.kubectl("create", "namespace", PLANE.namespace)
    manifests = dataplane_manifest(
        plane=PLANE,
        client_ca=agent_ca_pem.encode(),
        public_virtual_host="api.local.test",
        organization_virtual_host="internal.local.test",
    )
    control.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
