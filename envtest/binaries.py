"""Locating the kube-apiserver and etcd binaries, building them on first use.

The binaries are built from the Go module proxy by `build-kube-binaries.sh` (beside this file)
at the versions pinned in `kubebin/go.mod`, and cached under `~/.cache/planelink`. Set
`PLANELINK_KUBE_BIN_DIR` to a folder holding `kube-apiserver` and `etcd` to use other binaries.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUILD_SCRIPT = Path(__file__).with_name("build-kube-binaries.sh")
BIN_DIR_ENV = "PLANELINK_KUBE_BIN_DIR"


class BinariesUnavailable(RuntimeError):
    """The binaries could not be found or built; the message says why and what to do."""


@dataclass(frozen=True)
class KubeBinaries:
    """Paths of the binaries one test API server runs."""

    kube_apiserver: Path
    etcd: Path

    @classmethod
    def in_directory(cls, directory: Path) -> KubeBinaries:
        binaries = cls(kube_apiserver=directory / "kube-apiserver", etcd=directory / "etcd")
        for path in (binaries.kube_apiserver, binaries.etcd):
            if not os.access(path, os.X_OK):
                raise BinariesUnavailable(f"{path} is missing or not executable")
        return binaries


def find_binaries() -> KubeBinaries:
    """The binaries to run: from `PLANELINK_KUBE_BIN_DIR`, or built (once) and cached."""
    configured = os.environ.get(BIN_DIR_ENV)
    if configured:
        return KubeBinaries.in_directory(Path(configured))
    try:
        # Cheap on a cache hit (it hashes two small files); compiles for minutes on a cold cache,
        # printing progress on stderr, which pytest shows if the build fails.
        built = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], check=True, capture_output=True, text=True
        )
    except subprocess.CalledProcessError as error:
        raise BinariesUnavailable(
            f"{BUILD_SCRIPT.name} failed (exit {error.returncode}):\n{error.stderr[-4000:]}"
        ) from error
    return KubeBinaries.in_directory(Path(built.stdout.strip().splitlines()[-1]))
