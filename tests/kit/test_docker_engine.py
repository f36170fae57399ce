"""The engine fixture's own path for machines where dockerd is not running (CI): a daemon
started here answers, and is stopped again. A private one, so that the machine's engine is left
alone: its own socket, data and exec roots and containerd namespace, and its own network
namespace (`unshare --net`) - a second daemon in the host's would reconfigure the host's
bridge (with --bridge=none it deletes docker0)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.docker_engine import (
    answers,
    docker_cli,
    start_dockerd,
    stop_dockerd,
    wait_answering,
)


@pytest.fixture
def short_folder() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes: pytest's tmp_path is too deep for containerd's.
    folder = Path(tempfile.mkdtemp(prefix="pl-dockerd.", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_dockerd_started_by_the_suite_answers_and_is_stopped_again(short_folder: Path) -> None:
    docker = docker_cli()
    host = f"unix://{short_folder}/docker.sock"
    namespace = f"planelink-test-{uuid.uuid4().hex[:8]}"
    assert not answers(docker, host)
    process = start_dockerd(
        short_folder / "dockerd.log",
        f"--host={host}",
        f"--data-root={short_folder / 'data'}",
        f"--exec-root={short_folder / 'exec'}",
        f"--pidfile={short_folder / 'docker.pid'}",
        f"--containerd-namespace={namespace}",
        f"--containerd-plugins-namespace={namespace}-plugins",
        "--storage-driver=vfs",
        wrapper=("unshare", "--net"),
    )
    try:
        wait_answering(docker, process, short_folder / "dockerd.log", host)
    finally:
        stop_dockerd(process)
    assert process.returncode == 0, (short_folder / "dockerd.log").read_text()[-3000:]
    assert not answers(docker, host)
