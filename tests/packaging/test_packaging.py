"""The wheel the Dockerfile builds: installed alone from the runtime lock, the command works."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_and_runs_from_the_runtime_lock(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("planelink-*.whl")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(ROOT / "requirements" / "runtime.lock"),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    # Outside the checkout, so only the installed package can answer.
    helped = subprocess.run(
        [str(environment / "bin" / "planelink"), "agent", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--gateway-url" in helped.stdout
    crd = subprocess.run(
        [str(environment / "bin" / "planelink"), "crd"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert crd.stdout == (ROOT / "deploy" / "crd" / "dataplanes.openchoreo.dev.yaml").read_text()
    spec = subprocess.run(
        [
            str(python),
            "-c",
            "import protocol, pathlib; "
            "print((pathlib.Path(protocol.__file__).parent / 'SPEC.md').exists())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert spec.stdout.strip() == "True"


def test_the_image_copies_every_package_the_wheel_ships_but_the_test_kits() -> None:
    # Three lists name the packages: pyproject's, the Dockerfile's COPY lines and the
    # .dockerignore allow-list. A package missing from either of the last two fails the build.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in included} - {"envtest", "bench"}
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and "--" not in line}
    allowed = {
        line[1:]
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert packages <= copied, sorted(packages - copied)
    assert packages <= allowed, sorted(packages - allowed)
