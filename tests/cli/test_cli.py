"""The `planelink` command as a user runs it: a real process, real files, real API servers."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

import certs
import crd
from envtest import KubeAPIServer
from planelink.dev import DevPorts, announcement
from planelink.status_cli import ENV_GATEWAY
from tests.cli.dev_kit import free_ports, port_flags, run_dev
from tests.kit.waits import kubectl_timeout, scaled

ROOT = Path(__file__).resolve().parents[2]


def _planelink(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "planelink", *args],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        check=False,
    )


def test_every_subcommand_has_help() -> None:
    top = _planelink("--help")
    assert top.returncode == 0
    commands = (
        "gateway", "agent", "reconciler", "status", "crd", "kube-binaries", "dev", "certs",
        "kubeconfig", "apply",
    )  # fmt: skip
    for command in commands:
        assert command in top.stdout
        sub = _planelink(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert sub.stdout.startswith("usage: planelink " + command)


def test_crd_command_prints_the_committed_manifest() -> None:
    printed = _planelink("crd")
    assert printed.returncode == 0
    committed = ROOT / "deploy" / "crd" / "dataplanes.openchoreo.dev.yaml"
    assert printed.stdout == committed.read_text()


def test_dataplane_manifest_from_the_certs_command_is_accepted(
    control_plane: KubeAPIServer, namespace: str, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(certs.create_ca("agents").certificate_pem())
    printed = _planelink(
        "certs",
        "dataplane-manifest",
        "--ca-cert",
        str(ca_file),
        "--plane",
        f"{namespace}/edge",
        "--public-host",
        "api.example.com",
        "--org-host",
        "internal.example.com",
    )
    assert printed.returncode == 0, printed.stderr
    applied = control_plane.kubectl("apply", "-f", "-", input=printed.stdout)
    assert "dataplane.openchoreo.dev/edge created" in applied.stdout
    stored = yaml.safe_load(
        control_plane.kubectl("get", "dp", "edge", "-n", namespace, "-o", "yaml").stdout
    )
    plane = crd.DataPlane.model_validate(stored)
    assert plane.spec.agent_enabled
    assert plane.spec.agent is not None
    assert plane.spec.agent.client_ca is not None
    assert plane.spec.agent.client_ca.value == ca_file.read_text()


def test_dev_serves_kubectl_until_interrupted(tmp_path: Path) -> None:
    # As `scripts/dev` runs it after `source .venv/bin/activate`: the console script, on PATH.
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "planelink").is_file()
    environ = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    environ.pop(ENV_GATEWAY, None)
    ports = free_ports()
    log = (tmp_path / "dev.log").open("w")
    with (
        log,
        subprocess.Popen(
            ["planelink", "dev", "--state-dir", str(tmp_path / "state"), *port_flags(ports)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=environ,
        ) as dev,
    ):
        try:
            _check_dev(dev, tmp_path / "state", ports, environ)
        finally:
            if dev.poll() is None:
                dev.kill()


def _check_dev(
    dev: subprocess.Popen[str], state: Path, ports: DevPorts, environ: dict[str, str]
) -> None:
    assert dev.stdout is not None
    through = state / "planelink" / "callers" / "dev.local.kubeconfig"
    expected = announcement(
        state_dir=state, through=through, ports=ports, planelink="planelink", environ=environ
    )
    printed = [dev.stdout.readline().rstrip("\n") for _ in expected]
    assert printed == [f"{what}: {value}" for what, value in expected]
    announced = dict(line.split(": ", 1) for line in printed)
    # The API servers listen on the ports their flags gave.
    for name, port in (("control-plane", ports.control_plane), ("data-plane", ports.data_plane)):
        config = yaml.safe_load((state / f"{name}.kubeconfig").read_text())
        assert config["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{port}"

    # The status command, run as printed (split as a shell splits it), finds the plane and
    # its agent: `planelink` from PATH, and no --gateway when status's default URL is right.
    status = subprocess.run(
        shlex.split(announced["status"]),
        capture_output=True,
        text=True,
        env=environ,
        timeout=scaled(60),
        check=False,
    )
    assert status.returncode == 0, status.stderr
    row = next(line.split() for line in status.stdout.splitlines() if line.startswith("dev/local"))
    assert row[1:3] == ["agent", "1"], status.stdout
    # The health page and the agent's metrics answer at the printed URLs.
    with urllib.request.urlopen(announced["health page"], timeout=scaled(10)) as page:
        assert page.headers.get_content_type() == "text/html"
    with urllib.request.urlopen(announced["agent metrics"], timeout=scaled(10)) as metrics:
        assert "planelink_agent_" in metrics.read().decode()
    # A second `planelink dev` on the same state folder is refused, naming this one.
    second = run_dev(state, env=environ, program=["planelink"])
    assert second.returncode == 1
    assert f"(pid {dev.pid})" in second.stderr

    def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(kubeconfig),
                *args,
                f"--request-timeout={kubectl_timeout(10)}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    # The printed kubectl command goes through the gateway and the agent's tunnel.
    listed = subprocess.run(
        [*shlex.split(announced["through-gateway"]), f"--request-timeout={kubectl_timeout(10)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "kube-system" in listed.stdout
    created = kubectl(through, "create", "configmap", "via-tunnel", "--from-literal=k=v")
    assert created.returncode == 0, created.stderr
    direct = kubectl(state / "data-plane.kubeconfig", "get", "configmap", "via-tunnel")
    assert direct.returncode == 0, direct.stderr
    # The DataPlane in the control plane says so.
    control = state / "control-plane.kubeconfig"
    ready = kubectl(
        control,
        "wait",
        "dataplane/local",
        "-n",
        "dev",
        "--for=condition=Ready",
        f"--timeout={kubectl_timeout(30)}",
    )
    assert ready.returncode == 0, ready.stderr

    dev.send_signal(signal.SIGINT)
    assert dev.wait(timeout=scaled(60)) == 0
    assert kubectl(through, "get", "ns").returncode != 0  # all of it went away
    assert kubectl(control, "get", "ns").returncode != 0
