"""`planelink dev`'s guards and what it prints, without API servers: the state folder's lock,
the ports check that names the flag, the `status` command that works as printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from planelink.dev import (
    ANNOUNCED,
    DevPorts,
    StateDirInUse,
    announcement,
    hold_state_dir,
    planelink_command,
    ports_problem,
    status_command,
)
from planelink.status_cli import DEFAULT_GATEWAY, ENV_GATEWAY
from tests.cli.dev_kit import free_ports, port_flags, run_dev
from tests.kit.waits import scaled

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


# -- the lock -------------------------------------------------------------------------------


def test_a_state_folder_is_held_by_one_process_at_a_time(tmp_path: Path) -> None:
    with (
        hold_state_dir(tmp_path),
        pytest.raises(StateDirInUse) as refused,
        hold_state_dir(tmp_path),
    ):
        pass
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message
    assert str(tmp_path) in message
    assert "--state-dir" in message
    with hold_state_dir(tmp_path):  # let go of when the block ended
        pass


def test_a_state_folder_that_cannot_be_made_is_refused_naming_the_flag(tmp_path: Path) -> None:
    # A file where a folder must go: refused even for root, whom permissions do not stop.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_dev(blocker / "state", *port_flags(free_ports()))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("planelink dev: cannot use the state folder "), result.stderr
    assert "--state-dir" in result.stderr
    assert "Traceback" not in result.stderr


HOLDER = """
import sys, time
from pathlib import Path
from planelink.dev import hold_state_dir
with hold_state_dir(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(StateDirInUse, match=f"pid {holder.pid}"), hold_state_dir(tmp_path):
                pass
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=scaled(30))
    with hold_state_dir(tmp_path):  # the kernel released it with the process
        pass


def test_a_second_dev_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    started = time.monotonic()
    with hold_state_dir(tmp_path):
        second = run_dev(tmp_path)
    assert second.returncode == 1
    assert f"another planelink dev (pid {os.getpid()})" in second.stderr
    assert "--state-dir" in second.stderr
    assert "starting etcd" not in second.stderr  # refused before anything started
    assert time.monotonic() - started < scaled(30)


# -- ports ----------------------------------------------------------------------------------


def test_the_default_ports_are_distinct_and_the_operator_port_is_statuss_default() -> None:
    ports = DevPorts()
    assert len(set(ports.by_flag().values())) == len(fields(DevPorts))
    assert f"http://127.0.0.1:{ports.operator}" == DEFAULT_GATEWAY


def test_a_taken_port_is_refused_naming_its_flag(listening: int) -> None:
    ports = DevPorts(**{**vars(free_ports()), "agent_health": listening})
    problem = ports_problem(ports)
    assert problem is not None
    assert f"port {listening}" in problem
    assert "--agent-health-port PORT" in problem


def test_two_flags_with_one_port_are_refused() -> None:
    ports = DevPorts(**{**vars(free_ports()), "data_plane": 20000, "control_plane": 20000})
    problem = ports_problem(ports)
    assert problem is not None
    assert "--data-plane-port and --control-plane-port are both 20000" in problem


def test_free_ports_pass() -> None:
    assert ports_problem(free_ports()) is None


def test_dev_refuses_a_taken_port_before_it_starts_anything(tmp_path: Path, listening: int) -> None:
    ports = DevPorts(**{**vars(free_ports()), "operator": listening})
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "planelink",
            "dev",
            "--state-dir",
            str(tmp_path),
            *port_flags(ports),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert refused.returncode == 1
    assert "pick a free one with --operator-port PORT" in refused.stderr
    assert "starting etcd" not in refused.stderr


# -- what it prints -------------------------------------------------------------------------


def test_status_is_bare_when_its_default_url_is_this_gateways() -> None:
    assert status_command("planelink", DevPorts().operator, {}) == "planelink status"
    assert (
        status_command("planelink", 18081, {})
        == "planelink status --gateway http://127.0.0.1:18081"
    )
    # A URL in the environment overrides status's default: then only that URL needs no flag.
    elsewhere = {ENV_GATEWAY: "http://gateway.example:8081"}
    assert status_command("planelink", DevPorts().operator, elsewhere) == (
        "planelink status --gateway http://127.0.0.1:8081"
    )
    assert (
        status_command("planelink", 18081, {ENV_GATEWAY: "http://127.0.0.1:18081"})
        == "planelink status"
    )


def test_planelink_is_bare_only_when_path_finds_this_very_program(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "planelink"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    other = tmp_path / "other"
    other.mkdir()
    (other / "planelink").write_text("#!/bin/sh\n")
    (other / "planelink").chmod(0o755)

    assert planelink_command(str(program), str(bin_dir)) == "planelink"
    assert planelink_command(str(program), f"{other}:{bin_dir}") == str(program)
    assert planelink_command(str(program), "") == str(program)
    assert planelink_command("/src/planelink/__main__.py", str(bin_dir)) == (
        f"{sys.executable} -m planelink"
    )


def test_the_announcement_names_every_url_and_command(tmp_path: Path) -> None:
    ports = free_ports()
    lines = dict(
        announcement(
            state_dir=tmp_path,
            through=tmp_path / "through.kubeconfig",
            ports=ports,
            planelink="planelink",
            environ={},
        )
    )
    assert set(ANNOUNCED) <= set(lines)
    assert lines["health page"] == f"http://127.0.0.1:{ports.operator}/"
    assert lines["agent metrics"] == f"http://127.0.0.1:{ports.agent_health}/metrics"
    assert lines["through-gateway"] == f"kubectl --kubeconfig {tmp_path}/through.kubeconfig get ns"


def test_readme_shows_what_dev_prints_on_its_default_ports(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    printed = announcement(
        state_dir=tmp_path, through=tmp_path, ports=DevPorts(), planelink="planelink", environ={}
    )
    for what, value in printed:
        assert f"\n{what}: " in readme, what
        if "://" in value:  # the URLs; the commands hold the clone's paths
            assert f"{what}: {value}" in readme
    for flag, port in DevPorts().by_flag().items():
        assert str(port) in readme, flag


def test_dev_without_kubectl_says_so_before_it_starts_anything(tmp_path: Path) -> None:
    refused = run_dev(tmp_path, env={**os.environ, "PATH": str(tmp_path)})
    assert refused.returncode == 1
    assert "kubectl is not on PATH" in refused.stderr
    assert "starting etcd" not in refused.stderr
