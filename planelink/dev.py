"""`planelink dev`: a self-contained local planelink on real API servers.

Brings up a control-plane API server (with the DataPlane CRD and a DataPlane) and a data-plane
API server, writes their kubeconfigs to a folder, prints how to use them, and stops everything
on Ctrl-C or SIGTERM. The binaries are built on first use and reused afterwards.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import envtest

DEFAULT_STATE_DIR = Path(".planelink/dev")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dev",
        help="run a local control plane and data plane on real API servers (no cluster needed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where kubeconfigs are written (default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop everything once it is up (for scripted checks)",
    )
    parser.set_defaults(run=run)


def _progress(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.monotonic()
    _progress("building or reusing kube-apiserver and etcd (first run: a few minutes)")
    try:
        binaries = envtest.find_binaries()
    except envtest.BinariesUnavailable as error:
        print(f"planelink dev: {error}", file=sys.stderr)
        return 1

    with ExitStack() as servers:
        kubeconfigs: dict[str, Path] = {}
        for name in ("control-plane", "data-plane"):
            _progress(f"starting etcd + kube-apiserver for the {name}")
            server = envtest.KubeAPIServer(
                options=envtest.ServerOptions(name=name), binaries=binaries
            )
            servers.enter_context(server)
            kubeconfigs[name] = server.write_kubeconfig(state_dir / f"{name}.kubeconfig")
            if name == "control-plane":
                _progress("installing the DataPlane CRD")
                envtest.install_crd(server)
        _progress(f"ready after {time.monotonic() - started:.1f} s")
        for name, path in kubeconfigs.items():
            print(f"{name}: kubectl --kubeconfig {path} get ns")
        print("(the gateway and agent join this environment with issue #4)")
        sys.stdout.flush()
        if not args.exit_when_ready:
            _progress("running; press Ctrl-C to stop")
            stop.wait()
        _progress("stopping")
    return 0
