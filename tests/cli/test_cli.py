"""The `planelink` command as a user runs it: a real process, real files, real API servers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml

import certs
import crd
from envtest import KubeAPIServer
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
    log = (tmp_path / "dev.log").open("w")
    with (
        log,
        subprocess.Popen(
            [sys.executable, "-m", "planelink", "dev", "--state-dir", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        ) as dev,
    ):
        try:
            _check_dev(dev, tmp_path)
        finally:
            if dev.poll() is None:
                dev.kill()


def _check_dev(dev: subprocess.Popen[str], tmp_path: Path) -> None:
    assert dev.stdout is not None
    announced = dict(dev.stdout.readline().strip().split(": ", 1) for _ in range(4))
    through = tmp_path / "planelink" / "callers" / "dev.local.kubeconfig"
    assert announced["through-gateway"] == f"kubectl --kubeconfig {through} get ns"
    control = tmp_path / "control-plane.kubeconfig"

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

    # Through the gateway and the agent's tunnel, into the data plane.
    created = kubectl(through, "create", "configmap", "via-tunnel", "--from-literal=k=v")
    assert created.returncode == 0, created.stderr
    direct = kubectl(tmp_path / "data-plane.kubeconfig", "get", "configmap", "via-tunnel")
    assert direct.returncode == 0, direct.stderr
    # The DataPlane in the control plane says so.
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
