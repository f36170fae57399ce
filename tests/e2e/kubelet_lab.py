"""The lab for the e2e tests of what a real API server leaves to a kubelet (exec, `logs -f`,
port-forward): the stand-in kubelet (envtest.kubelet_peer), a LocalPlanelink whose one data
plane's agent has the peer as its upstream, connected, and real kubectl through the gateway."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from certs import PlaneRef
from envtest import run_kubectl
from envtest.kubelet_peer import KubeletPeer
from planelink.local import LocalPlanelink
from tests.kit.waits import scaled, within

LIMIT = scaled(30)  # seconds any one step may take


@dataclass
class KubeletLab:
    peer: KubeletPeer
    local: LocalPlanelink
    plane: PlaneRef

    @property
    def kubeconfig(self) -> Path:
        """The caller's kubeconfig: kubectl with it reaches the peer through the gateway."""
        return self.local.caller_kubeconfig(self.plane)

    async def wait_streams_released(self) -> None:
        """Every tunnel stream the commands held has been let go."""
        session = self.local.agent(self.plane).session
        assert session is not None
        async with within(10):
            await session.wait_idle()


@asynccontextmanager
async def kubelet_lab(
    workdir: Path, plane: PlaneRef, *, echo_ports: Iterable[int] = (8080,)
) -> AsyncIterator[KubeletLab]:
    """The peer serving, and planelink running with its agent for `plane` connected to it."""
    async with KubeletPeer(workdir, echo_ports=echo_ports) as peer:
        upstream = peer.write_kubeconfig(workdir / "peer.kubeconfig")
        local = LocalPlanelink(directory=workdir / "planelink", planes={plane: upstream})
        await local.start()
        try:
            async with asyncio.timeout(LIMIT):
                await local.wait_connected(plane)
            yield KubeletLab(peer, local, plane)
        finally:
            await local.stop()


@asynccontextmanager
async def running_kubectl(
    kubeconfig: Path, *args: str, env: dict[str, str] | None = None, stdin: bool = False
) -> AsyncIterator[asyncio.subprocess.Process]:
    """kubectl running while the block runs; killed at its end if it has not exited. Its stdin
    is a pipe if `stdin`, else empty."""
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def kubectl(kubeconfig: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """kubectl run to its end (given `stdin`, if any): its exit code, stdout and stderr."""
    done = await run_kubectl(kubeconfig, *args, input=stdin, timeout=LIMIT)
    return done.returncode, done.stdout, done.stderr
