"""kubectl exec through the gateway: an HTTP upgrade tunnelled as a byte pipe.

A real API server cannot exec without a kubelet, so the agent's upstream here is the stand-in
kubelet (envtest.kubelet_peer), which speaks the WebSocket exec protocol kubectl uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from certs import plane_ref
from tests.e2e.kubelet_lab import KubeletLab, kubectl, kubelet_lab

PLANE = plane_ref("org-x", "exec")


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[KubeletLab]:
    async with kubelet_lab(tmp_path, PLANE) as lab:
        yield lab


async def test_kubectl_exec_through_the_gateway(lab: KubeletLab) -> None:
    # `-i` with nothing to send: kubectl closes stdin at once, which tells the stand-in kubelet
    # that kubectl is ready for its output (envtest.kubelet_peer: kubectl 1.32 drops output
    # that arrives before it is).
    code, out, err = await kubectl(lab.kubeconfig, "exec", "-i", "shell", "--", "echo", "hello")
    assert code == 0, err
    assert out == "echo hello\n"

    code, out, err = await kubectl(
        lab.kubeconfig, "exec", "-i", "shell", "--", "cat", stdin=b"line one\nline two\n"
    )
    assert code == 0, err
    assert out == "cat\nline one\nline two\n"
    assert len(lab.peer.exec_requests) == 2

    # Each exec held one stream, for as long as it ran, and let it go.
    await lab.wait_streams_released()
