"""`planelink dev`: a self-contained local planelink on real API servers, wired together.

Brings up a control-plane API server (with the DataPlane CRD) and a data-plane API server,
issues certificates, creates the DataPlane `dev/local` whose agent CA is inline, and runs the
gateway (following DataPlanes, writing their status) and an agent for the data plane. It prints
a kubeconfig whose requests go through the tunnel, and stops everything on Ctrl-C or SIGTERM.
The binaries are built on first use and reused afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from certs import plane_ref
from crd import dataplane_manifest
from planelink.local import LocalPlanelink

if TYPE_CHECKING:
    import envtest

DEFAULT_STATE_DIR = Path(".planelink/dev")
PLANE = plane_ref("dev", "local")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dev",
        help="run gateway + agent + real local API servers, wired together (no cluster needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where kubeconfigs and certificates are written (default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop everything once it is up (for scripted checks)",
    )
    parser.set_defaults(run=run)


def _progress(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        # The test servers of a source checkout; an installed planelink (the image) has none.
        import envtest  # noqa: PLC0415
    except ModuleNotFoundError:
        print(
            "planelink dev: runs from a source checkout (scripts/setup), "
            "this installation has no envtest",
            file=sys.stderr,
        )
        return 1
    args.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_run(args.state_dir.resolve(), exit_when_ready=args.exit_when_ready))
    except envtest.BinariesUnavailable as error:
        print(f"planelink dev: {error}", file=sys.stderr)
        return 1


async def _run(state_dir: Path, *, exit_when_ready: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    import envtest  # noqa: PLC0415 - see run()

    _progress("building or reusing kube-apiserver and etcd (first run: a few minutes)")
    binaries = await asyncio.to_thread(envtest.find_binaries)
    async with AsyncExitStack() as stack:
        servers: dict[str, envtest.KubeAPIServer] = {}
        for name in ("control-plane", "data-plane"):
            _progress(f"starting etcd + kube-apiserver for the {name}")
            server = envtest.KubeAPIServer(
                options=envtest.ServerOptions(name=name), binaries=binaries
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
        )
        _progress("issuing certificates, starting the gateway and the agent")
        await local.start_pki_and_gateway()
        stack.push_async_callback(local.stop)
        await asyncio.to_thread(_create_dataplane, control, local.agent_ca_pem(PLANE))
        await local.start_agent(PLANE)
        await asyncio.wait_for(local.wait_connected(PLANE), timeout=60)
        _progress(f"ready after {time.monotonic() - started:.1f} s")
        _announce(state_dir, local)
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


def _announce(state_dir: Path, local: LocalPlanelink) -> None:
    through = local.caller_kubeconfig(PLANE)
    control = state_dir / "control-plane.kubeconfig"
    data = state_dir / "data-plane.kubeconfig"
    gateway = local.gateway
    assert gateway is not None
    print(f"through-gateway: kubectl --kubeconfig {through} get ns")
    print(f"control-plane: kubectl --kubeconfig {control} get dataplanes -A -o wide")
    print(f"data-plane (direct): kubectl --kubeconfig {data} get ns")
    print(f"gateway planes: curl -s http://127.0.0.1:{gateway.operator_port}/planes")
    sys.stdout.flush()
