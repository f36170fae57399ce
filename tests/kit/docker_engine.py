"""The real Docker engine for the container tests: found, or started, and Compose v2 beside it.

`docker_engine` (a session fixture, registered by tests/conftest.py) answers with the engine the
docker CLI reaches. When its socket does not answer — a CI machine where scripts/test just
installed Debian's docker.io — the fixture starts `dockerd` itself (as root), waits until it
answers, and stops it again when the session ends: a daemon the suite started is the suite's to
clean up, and one that was running before is left exactly as it was. Images stay in the engine's
/var/lib/docker either way, so a second run reuses them.

Compose v2 (`docker compose`, the CLI plugin) is built from the Go module proxy by
deploy/build-compose.sh (cached in ~/.cache/planelink) and installed as the user's CLI plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from envtest import KubeBinaries, die_with_parent, wait_until
from tests.kit.local_images import cache_root, ensure_images
from tests.kit.waits import scaled

ROOT = Path(__file__).resolve().parents[2]
BUILD_COMPOSE = ROOT / "deploy" / "build-compose.sh"
DOCKERD = "/usr/sbin/dockerd"
COMPOSE_IMAGE = "planelink:compose"
"""docker-compose.yml's name for the image its `build: .` makes."""
IMAGE_LABEL = "org.opencontainers.image.title=planelink"
"""The label the Dockerfile gives both of its stages."""


@dataclass(frozen=True)
class DockerEngine:
    """The docker CLI (`docker`) and the engine it reaches; `started` if this session started
    the daemon."""

    docker: str
    started: bool
    host: str | None = None
    """The engine's address (`docker -H`); None: the CLI's default."""

    def run(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`docker args…` to its end (`timeout` seconds, scaled); raises with its stderr on
        failure if `check`."""
        done = subprocess.run(
            [*cli(self.docker, self.host), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=scaled(timeout),
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])} … exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        """`docker <kind> inspect name` as JSON (kind: container, image, volume …)."""
        (found,) = json.loads(self.run(kind, "inspect", name).stdout)
        inspected: dict[str, object] = found
        return inspected


def docker_cli() -> str:
    found = shutil.which("docker")
    if found is None:
        raise RuntimeError("the docker CLI is missing: sudo apt-get install -y docker.io")
    return found


def cli(docker: str, host: str | None) -> list[str]:
    """The docker CLI, talking to `host` (or its default engine)."""
    return [docker] if host is None else [docker, "--host", host]


def answers(docker: str, host: str | None = None) -> bool:
    """Whether the engine answers the CLI (its API, not just its socket file)."""
    try:
        done = subprocess.run(
            [*cli(docker, host), "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            check=False,
            timeout=scaled(10),
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def start_dockerd(log: Path, *options: str, wrapper: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """dockerd (with `options`, run through `wrapper` if given) as a child of this process
    (killed with it), logging to `log`."""
    if os.geteuid() != 0 or not Path(DOCKERD).exists():
        raise RuntimeError(
            "no Docker engine answers and this session cannot start one: "
            "run as root with Debian's docker.io installed (scripts/test does both)"
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(
            [*wrapper, DOCKERD, *options],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )


def wait_answering(
    docker: str, process: subprocess.Popen[bytes], log: Path, host: str | None = None
) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"dockerd exited {process.returncode}:\n{log.read_text()[-3000:]}")
        return answers(docker, host)

    # No event announces a listening API: polled, within a bound.
    if not wait_until(up, timeout=scaled(60), interval=0.2):
        raise RuntimeError(f"dockerd did not answer within 60 s:\n{log.read_text()[-3000:]}")


def stop_dockerd(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)  # dockerd stops its containers and exits
    try:
        process.wait(timeout=scaled(60))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def install_compose() -> Path:
    """deploy/build-compose.sh: Compose v2 built (once) and installed as the CLI plugin."""
    built = subprocess.run(
        ["bash", str(BUILD_COMPOSE)], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        raise RuntimeError(f"build-compose.sh failed:\n{built.stderr[-4000:]}")
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    docker = docker_cli()
    if answers(docker):
        yield DockerEngine(docker=docker, started=False)
        return
    log = cache_root() / "dockerd.log"
    process = start_dockerd(log)
    try:
        wait_answering(docker, process, log)
        yield DockerEngine(docker=docker, started=True)
    finally:
        stop_dockerd(process)


@pytest.fixture(scope="session")
def docker_compose(docker_engine: DockerEngine) -> DockerEngine:
    """The engine, with `docker compose` (v2) installed."""
    install_compose()
    version = docker_engine.run("compose", "version", "--short").stdout.strip()
    assert int(version.lstrip("v").split(".")[0]) >= 2, f"not Compose v2: {version}"
    return docker_engine


@dataclass(frozen=True)
class BuiltImage:
    """planelink's image as the Dockerfile builds it, under the name docker-compose.yml uses,
    and how long the build took (seconds: every layer cached after the first build)."""

    tag: str
    seconds: float


@pytest.fixture(scope="session")
def planelink_image(docker_engine: DockerEngine, kube_binaries: KubeBinaries) -> BuiltImage:
    """The repository's Dockerfile built by the engine, after every image the Dockerfile and the
    compose file name exists (tests/kit/local_images.py builds those no registry serves here).

    The build stage is tagged too (`planelink:compose-build`), so that what earlier builds left
    untagged - each change of the sources would keep about 200 MB - can be pruned by the label
    both stages carry, without touching the current build's cache or anyone else's images."""
    ensure_images(docker_engine.docker, kube_binaries)
    started = time.monotonic()
    build = ("build", "--quiet", "--force-rm")
    docker_engine.run(
        *build, "--target=build", f"--tag={COMPOSE_IMAGE}-build", str(ROOT), timeout=1800
    )
    docker_engine.run(*build, f"--tag={COMPOSE_IMAGE}", str(ROOT), timeout=1800)
    seconds = time.monotonic() - started
    docker_engine.run(
        "image", "prune", "--force", "--filter=dangling=true", f"--filter=label={IMAGE_LABEL}"
    )
    return BuiltImage(tag=COMPOSE_IMAGE, seconds=seconds)
