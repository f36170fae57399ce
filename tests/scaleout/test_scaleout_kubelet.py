"""What a real API server leaves to a kubelet — exec, `logs -f`, port-forward — through a
replica that holds no tunnel to the plane and forwards to the peer that does.

envtest runs no kubelet, so the plane's agent proxies to the stand-in kubelet
(envtest.kubelet_peer, run in the test's event loop); its agent is pinned to r1, and kubectl
goes to r2: every upgrade and stream crosses the peer hop.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from certs import PlaneRef, plane_ref
from envtest.kubelet_peer import KubeletPeer
from tests.e2e.kubelet_lab import running_kubectl
from tests.e2e.test_e2e_streams import echo_through, next_line
from tests.kit.replicas import ReplicaLab
from tests.kit.waits import wait_for
from tests.scaleout.conftest import MakeLab

POD = "shell"
ECHO_PORT = 8080


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[KubeletPeer]:
    async with KubeletPeer(tmp_path, echo_ports=[ECHO_PORT]) as peer:
        yield peer


@pytest.fixture
def plane(namespace: str) -> PlaneRef:
    return plane_ref(namespace, "kubelet")


@pytest.fixture
async def lab(peer: KubeletPeer, make_lab: MakeLab, plane: PlaneRef, tmp_path: Path) -> ReplicaLab:
    # `peer` first: set up before `make_lab`, so torn down after it, once no agent uses it.
    upstream = peer.write_kubeconfig(tmp_path / "kubelet.kubeconfig")
    lab = await make_lab(replicas=2, pinned={plane: "r1"}, upstreams={plane: upstream})
    assert (await lab.planes_at("r2"))[plane] == set()  # r2 can only forward
    return lab


async def test_exec_through_a_forwarding_replica(lab: ReplicaLab, plane: PlaneRef) -> None:
    # `-i` (stdin closes at once): see tests/e2e/test_e2e_exec.py.
    done = await lab.kubectl(plane, "exec", "-i", POD, "--", "echo", "hello", at="r2")
    assert (done.returncode, done.stdout) == (0, "echo hello\n"), done.stderr


async def test_logs_follow_through_a_forwarding_replica(
    lab: ReplicaLab, peer: KubeletPeer, plane: PlaneRef
) -> None:
    async with running_kubectl(lab.kubeconfig(plane, "r2"), "logs", "-f", POD) as process:
        peer.release_log_line("line 1")
        assert await next_line(process) == b"line 1\n"
        assert process.returncode is None  # still open: the line came as it was written
        peer.release_log_line("line 2")
        assert await next_line(process) == b"line 2\n"
        peer.end_log_stream()
        _, err = await wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()


async def test_port_forward_through_a_forwarding_replica(lab: ReplicaLab, plane: PlaneRef) -> None:
    args = ("port-forward", f"pod/{POD}", f"0:{ECHO_PORT}")
    async with running_kubectl(lab.kubeconfig(plane, "r2"), *args) as process:
        line = await next_line(process)
        forwarding = re.fullmatch(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 8080\n", line)
        assert forwarding is not None, line
        await echo_through(int(forwarding[1]), [b"across the peer hop\n", b"x" * 100_000])
        process.send_signal(signal.SIGINT)
        _, err = await wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
