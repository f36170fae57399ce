"""Local stand-ins for the images the Dockerfile and docker-compose.yml pull, built here.

No registry answers on CI machines, so what the files name is built from what the suite can
build: the Python base (`python:3.11-slim`) from a Debian bookworm root file system made with
`debootstrap --variant=minbase` (Debian's python3, the same 3.11), and the etcd and
kube-apiserver images from the binaries envtest builds from the Go module proxy (etcdctl, which
the compose file's etcd healthcheck runs, from `tests/kit/etcdctl`). Each is tagged with the name
the files use, and only when the engine lacks that name: on a machine that pulled the real images
they are used as they are.

Every input is cached under ~/.cache/planelink and rebuilt only when it changes (the rootfs
tarball is keyed by the package list, etcdctl by its go.mod/go.sum); an image is rebuilt when
its tag is missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envtest import KubeBinaries

HERE = Path(__file__).resolve().parent
ETCDCTL_MODULE = HERE / "etcdctl"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
PYTHON_PACKAGES = ("python3", "python3-venv")
"""What python:3.11-slim offers the Dockerfile: python3, and venv with pip (ensurepip)."""
PYTHON_IMAGE = "python:3.11-slim"
ETCD_IMAGE = "registry.k8s.io/etcd:3.5.16-0"
APISERVER_IMAGE = "registry.k8s.io/kube-apiserver:v1.32.4"


def cache_root() -> Path:
    """~/.cache/planelink, or where PLANELINK_CACHE / XDG_CACHE_HOME say (as the build
    scripts do)."""
    configured = os.environ.get("PLANELINK_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "planelink"


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()[:16]


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd, env=env)
    if done.returncode != 0:
        command = " ".join(argv[:4])
        raise RuntimeError(f"{command} … failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


def python_rootfs() -> Path:
    """A tarball of a Debian bookworm minbase root file system with Python (built once)."""
    packages = ",".join(PYTHON_PACKAGES)
    key = _key(DEBIAN_SUITE.encode(), packages.encode())
    tarball = cache_root() / "images" / f"python-{DEBIAN_SUITE}-{key}.tar"
    if tarball.exists():
        return tarball
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise RuntimeError("debootstrap is missing: sudo apt-get install -y debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".rootfs.") as work:
        root = Path(work) / "root"
        _run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={packages}",
                DEBIAN_SUITE,
                str(root),
                DEBIAN_MIRROR,
            ]
        )
        # What an image does not need: the package lists and downloaded archives.
        for leftover in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
            shutil.rmtree(root / leftover, ignore_errors=True)
        partial = Path(work) / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."])
        partial.replace(tarball)
    return tarball


def etcdctl() -> Path:
    """etcdctl built from `tests/kit/etcdctl` (once per go.mod/go.sum)."""
    module = ETCDCTL_MODULE
    key = _key((module / "go.mod").read_bytes(), (module / "go.sum").read_bytes())
    binary = cache_root() / "etcdctl" / key / "etcdctl"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(".etcdctl.partial")
    environment = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
    _run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            "-s -w",
            "-o",
            str(partial),
            "go.etcd.io/etcd/etcdctl/v3",
        ],
        cwd=module,
        env=environment,
    )
    partial.replace(binary)
    return binary


def has_image(docker: str, tag: str) -> bool:
    """Whether the engine holds an image of that name."""
    found = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


def _build_from_binaries(docker: str, tag: str, binaries: dict[str, Path]) -> None:
    """An image of static binaries alone, on PATH in /usr/local/bin (as the real image has)."""
    with tempfile.TemporaryDirectory(prefix="planelink-image.") as work:
        for name, path in binaries.items():
            shutil.copy2(path, Path(work) / name)
        names = " ".join(binaries)
        (Path(work) / "Dockerfile").write_text(
            f"FROM scratch\nCOPY {names} /usr/local/bin/\nENV PATH=/usr/local/bin\n"
        )
        _run([docker, "build", "--quiet", "--force-rm", "--tag", tag, work])


def host_ca_bundle() -> Path:
    """The certificates this host trusts (pip's PIP_CERT first): where outgoing TLS is
    inspected by a proxy, its CA is among them and pip in a build container needs it too."""
    configured = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile
    for candidate in (configured, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise RuntimeError("no CA bundle on this host (install ca-certificates)")


def _build_python(docker: str) -> None:
    """python:3.11-slim's stand-in: the rootfs imported, with the host's CA bundle (Debian's
    minbase has none and pip would trust only its own) and the official image's settings."""
    key = python_rootfs().stem.rsplit("-", 1)[-1]
    rootfs_tag = f"planelink-local/python-rootfs:{key}"
    if not has_image(docker, rootfs_tag):
        _run([docker, "import", str(python_rootfs()), rootfs_tag])
    with tempfile.TemporaryDirectory(prefix="planelink-image.") as work:
        shutil.copyfile(host_ca_bundle(), Path(work) / "ca-certificates.crt")
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        (Path(work) / "Dockerfile").write_text(
            f"FROM {rootfs_tag}\n"
            f"COPY ca-certificates.crt {bundle}\n"
            f"ENV LANG=C.UTF-8 PIP_CERT={bundle} SSL_CERT_FILE={bundle}\n"
            'CMD ["python3"]\n'
        )
        _run([docker, "build", "--quiet", "--force-rm", "--tag", PYTHON_IMAGE, work])


@dataclass(frozen=True)
class LocalImages:
    """What was built here (empty when the engine already held every name)."""

    built: tuple[str, ...]


def ensure_images(docker: str, binaries: KubeBinaries) -> LocalImages:
    """Tag every image the Dockerfile and compose file name, building those the engine lacks."""
    built = []
    if not has_image(docker, PYTHON_IMAGE):
        _build_python(docker)
        built.append(PYTHON_IMAGE)
    if not has_image(docker, ETCD_IMAGE):
        _build_from_binaries(docker, ETCD_IMAGE, {"etcd": binaries.etcd, "etcdctl": etcdctl()})
        built.append(ETCD_IMAGE)
    if not has_image(docker, APISERVER_IMAGE):
        _build_from_binaries(docker, APISERVER_IMAGE, {"kube-apiserver": binaries.kube_apiserver})
        built.append(APISERVER_IMAGE)
    return LocalImages(built=tuple(built))


if __name__ == "__main__":
    # scripts/test builds the cached inputs before pytest runs (no engine needed), so that the
    # first container test does not spend minutes of its time limit on them.
    # debootstrap needs root; elsewhere the fixture builds the rootfs only if the engine lacks
    # python:3.11-slim (and says what is missing if it cannot).
    print(*([python_rootfs()] if os.geteuid() == 0 else []), etcdctl())
