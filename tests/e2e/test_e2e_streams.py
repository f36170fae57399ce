"""`kubectl logs -f` and `kubectl port-forward` through the gateway, with real kubectl.

A real API server hands both to a kubelet, which envtest does not run, so the agent's upstream
here is the stand-in kubelet (envtest.kubelet_peer): it streams a pod's log a line at a time
when the test says so, and serves port-forward over SPDY/3.1 (plain or tunnelled in a
WebSocket) with an echo service behind the forwarded port.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from certs import plane_ref
from envtest.kubelet_peer import ForwardedConnection
from tests.e2e.kubelet_lab import LIMIT, KubeletLab, kubectl, kubelet_lab, running_kubectl

PLANE = plane_ref("org-x", "streams")
POD = "shell"
ECHO_PORT = 8080


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[KubeletLab]:
    async with kubelet_lab(tmp_path, PLANE, echo_ports=[ECHO_PORT]) as lab:
        yield lab


async def next_line(process: asyncio.subprocess.Process) -> bytes:
    assert process.stdout is not None
    async with asyncio.timeout(LIMIT):
        return await process.stdout.readline()


async def test_kubectl_logs_follow_delivers_lines_while_the_stream_is_open(lab: KubeletLab) -> None:
    async with running_kubectl(lab.kubeconfig, "logs", "-f", POD) as process:
        lab.peer.release_log_line("line 1")
        assert await next_line(process) == b"line 1\n"
        # Line 2 has not been released, so the log stream is still open: line 1 came through
        # it as it was written, not with the end of the response.
        assert process.returncode is None
        lab.peer.release_log_line("line 2")
        assert await next_line(process) == b"line 2\n"

        lab.peer.end_log_stream()
        async with asyncio.timeout(LIMIT):
            out, err = await process.communicate()
        assert await process.wait() == 0, err.decode()  # (its exit code, now that it has ended)
        assert out == b""

    [query] = lab.peer.log_queries
    assert query["follow"] == ["true"]
    await lab.wait_streams_released()


async def test_kubectl_logs_and_its_query_parameters_pass_through(lab: KubeletLab) -> None:
    code, out, err = await kubectl(lab.kubeconfig, "logs", POD)
    assert code == 0, err
    assert out == "first\nsecond\nthird\n"
    assert "follow" not in lab.peer.log_queries[-1]

    code, out, err = await kubectl(lab.kubeconfig, "logs", POD, "--tail=2", "--since=1h")
    assert code == 0, err
    assert out == "second\nthird\n"  # the peer applied tailLines, so it arrived intact
    query = lab.peer.log_queries[-1]
    assert query["tailLines"] == ["2"]
    assert query["sinceSeconds"] == ["3600"]
    assert len(lab.peer.log_queries) == 2
    await lab.wait_streams_released()


async def echo_through(port: int, messages: list[bytes]) -> None:
    """Each message sent to the forwarded local port comes back, on one connection."""
    async with asyncio.timeout(LIMIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for message in messages:
                writer.write(message)
                await writer.drain()
                assert await reader.readexactly(len(message)) == message
            writer.write_eof()  # kubectl half-closes the data stream; the echo closes it too
            assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize(
    ("websockets", "transport"),
    [pytest.param(None, "websocket", id="default"), pytest.param("false", "spdy", id="spdy")],
)
async def test_kubectl_port_forward_reaches_the_pods_port(
    lab: KubeletLab, websockets: str | None, transport: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECTL_PORT_FORWARD_WEBSOCKETS"}
    if websockets is not None:
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = websockets
    # Local port 0: kubectl picks a free one and prints it, so no port can be raced for.
    args = ("port-forward", f"pod/{POD}", f"0:{ECHO_PORT}")
    async with running_kubectl(lab.kubeconfig, *args, env=env) as process:
        # kubectl listens only once the upgrade through the gateway has succeeded.
        line = await next_line(process)
        forwarding = re.fullmatch(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 8080\n", line)
        assert forwarding is not None, line
        local_port = int(forwarding[1])

        await echo_through(local_port, [b"hello through the tunnel\n", b"x" * 100_000])
        await echo_through(local_port, [b"second connection\n"])

        process.send_signal(signal.SIGINT)  # how a user stops port-forward
        async with asyncio.timeout(LIMIT):
            _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert "error" not in err.decode().lower(), err.decode()

    assert lab.peer.portforward_upgrades == [transport]
    assert lab.peer.forwarded == [
        ForwardedConnection(transport, ECHO_PORT, "0"),
        ForwardedConnection(transport, ECHO_PORT, "1"),
    ]
    await lab.wait_streams_released()


async def test_kubectl_port_forward_reports_the_pods_error(lab: KubeletLab) -> None:
    """What the pod's side says on the error stream reaches kubectl's user."""
    closed_port = ECHO_PORT + 1
    args = ("port-forward", f"pod/{POD}", f"0:{closed_port}")
    async with running_kubectl(lab.kubeconfig, *args) as process:
        line = await next_line(process)
        forwarding = re.fullmatch(rb"Forwarding from 127\.0\.0\.1:(\d+) -> \d+\n", line)
        assert forwarding is not None, line

        async with asyncio.timeout(LIMIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", int(forwarding[1]))
            try:
                writer.write(b"anyone there?\n")
                assert await reader.read() == b""  # kubectl closes: nothing came back
            finally:
                writer.close()
                await writer.wait_closed()
            # kubectl treats an error from the pod as the connection to it lost, and stops.
            _, err = await process.communicate()
        assert process.returncode == 1
        assert f"error forwarding port {closed_port}: nothing listens there" in err.decode()
        assert "lost connection to pod" in err.decode()

    assert lab.peer.forwarded == [ForwardedConnection("websocket", closed_port, "0")]
    await lab.wait_streams_released()
