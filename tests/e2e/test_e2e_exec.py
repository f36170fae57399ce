"""kubectl exec through the gateway: an HTTP upgrade tunnelled as a byte pipe.

A real API server cannot exec without a kubelet, so the agent's upstream here is the exec peer
(envtest.exec_peer), which speaks the WebSocket exec protocol kubectl uses.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import yaml

from certs import PlaneRef
from envtest import Credentials, build_kubeconfig
from envtest.exec_peer import ExecPeer
from planelink.local import LocalPlanelink

PLANE = PlaneRef("org-x", "exec")


async def _kubectl(
    kubeconfig: Path, *args: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_kubectl_exec_through_the_gateway(tmp_path: Path) -> None:
    async with ExecPeer(tmp_path) as peer:
        upstream = tmp_path / "peer.kubeconfig"
        upstream.write_text(
            yaml.safe_dump(
                build_kubeconfig(
                    name="peer",
                    server=peer.url,
                    ca_pem=peer.ca_file.read_bytes(),
                    credentials=Credentials(user="agent", token="agent-token"),
                )
            )
        )
        local = LocalPlanelink(directory=tmp_path / "planelink", planes={PLANE: upstream})
        await local.start()
        try:
            await asyncio.wait_for(local.wait_connected(PLANE), timeout=30)
            through = local.caller_kubeconfig(PLANE)

            code, out, err = await _kubectl(through, "exec", "shell", "--", "echo", "hello")
            assert code == 0, err
            assert out == "echo hello\n"

            code, out, err = await _kubectl(
                through, "exec", "-i", "shell", "--", "cat", stdin=b"line one\nline two\n"
            )
            assert code == 0, err
            assert out == "cat\nline one\nline two\n"
            assert len(peer.exec_requests) == 2

            # Each exec held one stream, for as long as it ran, and let it go.
            agent_session = local.agent(PLANE).session
            assert agent_session is not None
            await asyncio.wait_for(agent_session.wait_idle(), timeout=10)
        finally:
            await local.stop()
