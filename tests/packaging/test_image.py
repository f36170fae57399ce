"""The Dockerfile, built and run by the real Docker engine.

The image adds its virtual environment (and a user) to the base and nothing else: no build
tool, no pip, no test code, no layer deleted later. The gateway and an agent run from it as
user 10001 with a read-only root file system and no capabilities, and the agent's tunnel comes
up. Image size and layers are printed (`pytest -s`) for the record.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from envtest import wait_until
from tests.kit.docker_engine import BuiltImage, DockerEngine
from tests.kit.dockerfile import entrypoint
from tests.kit.local_images import PYTHON_IMAGE
from tests.kit.waits import scaled

ROOT = Path(__file__).resolve().parents[2]
# On a cold cache the first test also waits for what its fixtures build: Compose v2, the
# Debian rootfs, etcdctl (scripts/test builds those three before pytest) and the image.
pytestmark = pytest.mark.timeout(scaled(1200))
LOCKED_DOWN = ("--read-only", "--user", "10001", "--cap-drop", "ALL")
"""How the containers run here: as in docker-compose.yml and the charts."""
TMPFS = ("--tmpfs", "/tmp:size=16m")
"""Where a kubeconfig's embedded certificate and key are written for the ssl module, which
loads them from files only; the one writable place besides the state volume."""
PLANE = "dev/image"

_INSPECT_SELF = """
import importlib.util, json, os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
venv = "/opt/planelink"
size = sum(
    os.lstat(os.path.join(folder, name)).st_size
    for folder, _, names in os.walk(venv) for name in names
)
print(json.dumps({
    "uid": os.getuid(),
    "capabilities": int(status["CapEff"].strip(), 16),
    "venv_bytes": size,
    "modules": {
        name: importlib.util.find_spec(name) is not None
        for name in ("planelink", "gateway", "agent", "envtest", "bench", "tests", "pip",
                     "setuptools")
    },
}))
"""


def _inspect_self(engine: DockerEngine, image: str) -> dict[str, Any]:
    shown = engine.run(
        "run", "--rm", *LOCKED_DOWN, "--network", "none",
        "--entrypoint", "python3", image, "-c", _INSPECT_SELF,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def test_the_image_adds_its_virtual_environment_to_the_base_and_nothing_else(
    docker_engine: DockerEngine, planelink_image: BuiltImage
) -> None:
    image = docker_engine.inspect("image", planelink_image.tag)
    base = docker_engine.inspect("image", PYTHON_IMAGE)
    config: dict[str, Any] = image["Config"]  # type: ignore[assignment]
    assert config["User"] == "10001"
    assert config["Entrypoint"] == entrypoint()
    layers: list[str] = image["RootFS"]["Layers"]  # type: ignore[index]
    base_layers: list[str] = base["RootFS"]["Layers"]  # type: ignore[index]
    assert layers[: len(base_layers)] == base_layers, "built on the Python base"
    added = int(image["Size"]) - int(base["Size"])  # type: ignore[call-overload]
    seen = _inspect_self(docker_engine, planelink_image.tag)
    # Its own layers: the user (a few kB) and the environment, copied whole from the build
    # stage. Anything else — wheels, caches, a file deleted in a later layer — would show here.
    assert len(layers) - len(base_layers) == 2, layers
    assert added <= seen["venv_bytes"] + 1_000_000, (added, seen["venv_bytes"])
    assert seen["modules"] == {
        "planelink": True, "gateway": True, "agent": True,
        "envtest": False, "bench": False, "tests": False, "pip": False, "setuptools": False,
    }  # fmt: skip
    history = docker_engine.run(
        "history", "--format", "{{.Size}}\t{{.CreatedBy}}", planelink_image.tag
    ).stdout
    print(
        f"\nimage {planelink_image.tag}: {int(image['Size']) / 1e6:.1f} MB "  # type: ignore[call-overload]
        f"(base {int(base['Size']) / 1e6:.1f} MB + {added / 1e6:.1f} MB), "  # type: ignore[call-overload]
        f"built in {planelink_image.seconds:.1f} s\n{history}"
    )


def test_the_image_runs_read_only_as_user_10001_without_capabilities(
    docker_engine: DockerEngine, planelink_image: BuiltImage
) -> None:
    seen = _inspect_self(docker_engine, planelink_image.tag)
    assert seen["uid"] == 10001
    assert seen["capabilities"] == 0
    helped = docker_engine.run(
        "run", "--rm", *LOCKED_DOWN, "--network", "none", planelink_image.tag, "gateway", "--help"
    )  # fmt: skip
    assert "--tls-cert" in helped.stdout
    # The commands of a source checkout refuse in one line, not with a traceback for the test
    # code the image leaves out.
    for command in ("dev", "kube-binaries"):
        refused = docker_engine.run(
            "run", "--rm", *LOCKED_DOWN, "--network", "none", planelink_image.tag, command,
            check=False,
        )  # fmt: skip
        assert refused.returncode == 1, refused.stderr
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"planelink {command}: "), line
    assert "this installation has no envtest" in refused.stderr


# -- the gateway and an agent, as containers --------------------------------------------------


def _planelink(*args: str | Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "planelink", *map(str, args)],
        check=True,
        capture_output=True,
        timeout=scaled(60),
    )


def _pki(folder: Path) -> None:
    """Certificates for a gateway named `gateway` and an agent of PLANE; a planes file; a
    kubeconfig for an API server the agent is never asked to reach. Readable by user 10001."""
    _planelink("certs", "init-ca", "--out", folder / "gateway-ca")
    _planelink(
        "certs", "issue-server", "--ca", folder / "gateway-ca", "--dns", "gateway",
        "--out", folder / "gateway",
    )  # fmt: skip
    _planelink("certs", "init-ca", "--out", folder / "callers-ca")
    _planelink("certs", "init-ca", "--out", folder / "agent-ca")
    _planelink(
        "certs", "issue-agent", "--ca", folder / "agent-ca", "--plane", PLANE,
        "--out", folder / "agent",
    )  # fmt: skip
    _planelink(
        "certs", "issue-caller", "--ca", folder / "callers-ca", "--name", "unused",
        "--out", folder / "upstream",
    )  # fmt: skip
    _planelink(
        "kubeconfig", "--server", "https://data-plane.invalid:6443",
        "--ca-cert", folder / "callers-ca" / "ca.crt",
        "--client-cert", folder / "upstream" / "tls.crt",
        "--client-key", folder / "upstream" / "tls.key",
        "--out", folder / "data-plane.kubeconfig",
    )  # fmt: skip
    planes = {"planes": [{"plane": PLANE, "clientCA": "/pki/agent-ca/ca.crt"}]}
    (folder / "planes.yaml").write_text(yaml.safe_dump(planes))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # a test's throw-away keys


def _ready_probe(port: int) -> list[str]:
    """docker-compose.yml's health check of a planelink service, for `port`."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test: list[str] = compose["services"]["agent"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    # Compose turns `$$` into `$`; `docker exec` takes the command as it is.
    return [arg.replace("$$", "$") for arg in test[1:-1]] + [str(port)]


@pytest.fixture
def network(docker_engine: DockerEngine) -> Iterator[str]:
    name = f"planelink-test-{uuid.uuid4().hex[:10]}"
    docker_engine.run("network", "create", name)
    containers: list[str] = []
    try:
        yield name
    finally:
        listed = docker_engine.run("ps", "-aq", "--filter", f"network={name}").stdout.split()
        containers += listed
        if containers:
            docker_engine.run("rm", "-f", *containers, check=False)
        docker_engine.run("network", "rm", name, check=False)


def test_the_gateway_and_an_agent_run_read_only_without_capabilities_and_connect(
    docker_engine: DockerEngine, planelink_image: BuiltImage, network: str, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    _pki(pki)
    common = (
        "run", "--detach", *LOCKED_DOWN, *TMPFS, "--network", network, "-v", f"{pki}:/pki:ro",
    )  # fmt: skip
    gateway = docker_engine.run(
        *common, "--name", f"{network}-gateway", "--network-alias", "gateway",
        planelink_image.tag, "gateway",
        "--tls-cert=/pki/gateway/tls.crt", "--tls-key=/pki/gateway/tls.key",
        "--caller-ca=/pki/callers-ca/ca.crt", "--planes=/pki/planes.yaml",
    ).stdout.strip()  # fmt: skip
    agent = docker_engine.run(
        *common, "--name", f"{network}-agent", planelink_image.tag, "agent",
        "--gateway-url=wss://gateway:8443", f"--plane={PLANE}", "--agent-id=image-test",
        "--tls-dir=/pki/agent", "--gateway-ca=/pki/gateway/ca.crt",
        "--kubeconfig=/pki/data-plane.kubeconfig", "--health-address=:8080",
    ).stdout.strip()  # fmt: skip

    def logs(container: str) -> str:
        shown = docker_engine.run("logs", "--tail", "30", container, check=False)
        return shown.stdout + shown.stderr

    def ready(container: str, port: int) -> bool:
        state = docker_engine.inspect("container", container)["State"]
        assert state["Running"], f"exited:\n{logs(container)}"  # type: ignore[index]
        probe = docker_engine.run("exec", container, *_ready_probe(port), check=False)
        return probe.returncode == 0

    assert wait_until(lambda: ready(gateway, 8081), timeout=scaled(60), interval=0.5), logs(gateway)
    assert wait_until(lambda: ready(agent, 8080), timeout=scaled(60), interval=0.5), logs(agent)
    planes = docker_engine.run(
        "exec", gateway, "python3", "-c",
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8081/planes').read().decode())",
    ).stdout  # fmt: skip
    assert "image-test" in planes, planes
    for container in (gateway, agent):
        inspected = docker_engine.inspect("container", container)
        host: dict[str, Any] = inspected["HostConfig"]  # type: ignore[assignment]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        status = docker_engine.run("exec", container, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":", 1) for line in status.splitlines())
        assert fields["Uid"].split()[:2] == ["10001", "10001"]
        assert int(fields["CapEff"].strip(), 16) == 0
        changed = set(docker_engine.run("diff", container).stdout.splitlines())
        assert changed <= {"A /pki"}, f"wrote to its file system: {changed}"  # its mount point
