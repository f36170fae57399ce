"""`planelink dev`: a self-contained local planelink on real API servers, wired together.

Brings up a control-plane API server (with the DataPlane CRD) and a data-plane API server,
issues certificates, creates the DataPlane `dev/local` whose agent CA is inline, and runs the
gateway (following DataPlanes, writing their status) and an agent for the data plane. Everything
listens on 127.0.0.1, on the fixed ports below (the gateway's and the agent's are those of the
charts and docker-compose.yml), so that `planelink status` and the health page work with their
defaults. When it is ready it prints the URLs and the commands to use it; Ctrl-C or SIGTERM stops
everything.

One `planelink dev` per state folder: a second one on the same folder is refused (it would
overwrite the first one's certificates and kubeconfigs); give it its own with --state-dir, and
other ports. The binaries are built on first use and reused afterwards.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import importlib.util
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from planelink.status_cli import DEFAULT_GATEWAY, ENV_GATEWAY

DEFAULT_STATE_DIR = Path(".planelink/dev")
HOST = "127.0.0.1"
LOCK_FILE = "dev.lock"


def _port_field(default: int, what: str) -> Any:
    return field(default=default, metadata={"help": what})


@dataclass(frozen=True)
class DevPorts:
    """Where `planelink dev` listens on 127.0.0.1; each field is the flag `--<field>-port`."""

    caller: int = _port_field(6443, "the gateway's port for callers (kubectl through the tunnel)")
    agent: int = _port_field(8443, "the gateway's port that agents dial")
    operator: int = _port_field(
        8081, "the gateway's health page, /planes and /metrics (what `planelink status` reads)"
    )
    agent_health: int = _port_field(8080, "the agent's /healthz, /readyz and /metrics")
    control_plane: int = _port_field(16443, "the control plane's API server (DataPlanes)")
    data_plane: int = _port_field(26443, "the data plane's API server (reached directly)")

    @staticmethod
    def flag(field_name: str) -> str:
        return "--" + field_name.replace("_", "-") + "-port"

    def by_flag(self) -> dict[str, int]:
        return {self.flag(f.name): getattr(self, f.name) for f in fields(self)}


ANNOUNCED = ("health page", "agent metrics", "status", "through-gateway", "control-plane")
"""What the ready message names, one `name: value` line each, in this order (then the rest)."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dev",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where kubeconfigs and certificates are written (default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="stop everything once it is up (for scripted checks)",
    )
    ports = parser.add_argument_group(
        "ports", f"each on {HOST}; a port that is taken is refused at start, naming its flag"
    )
    defaults = DevPorts()
    for spec in fields(DevPorts):
        ports.add_argument(
            DevPorts.flag(spec.name),
            dest=f"{spec.name}_port",
            type=_port,
            default=getattr(defaults, spec.name),
            metavar="PORT",
            help=f"{spec.metadata['help']} (default: %(default)s)",
        )
    parser.set_defaults(run=run)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, not {port}")
    return port


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("envtest") is None:
        # The test servers of a source checkout; an installed planelink (the image) has none.
        print(
            "planelink dev: runs from a source checkout (scripts/setup), "
            "this installation has no envtest",
            file=sys.stderr,
        )
        return 1
    ports = DevPorts(**{spec.name: getattr(args, f"{spec.name}_port") for spec in fields(DevPorts)})
    state_dir: Path = args.state_dir.resolve()
    try:
        with hold_state_dir(state_dir):
            problem = _kubectl_problem() or ports_problem(ports)
            if problem is not None:
                print(f"planelink dev: {problem}", file=sys.stderr)
                return 1
            # Imported only now: the API servers, the gateway and the agent are seconds of
            # imports that `planelink dev --help` and the refusals above must not wait for.
            from planelink.dev_stack import serve  # noqa: PLC0415

            return serve(state_dir, ports, exit_when_ready=args.exit_when_ready)
    except StateDirUnusable as error:
        print(f"planelink dev: {error}", file=sys.stderr)
        return 1


# -- one instance per state folder ----------------------------------------------------------


class StateDirUnusable(Exception):
    """The state folder cannot be made or written: say so, with the flag that picks another."""


class StateDirInUse(StateDirUnusable):
    """Another live `planelink dev` holds the state folder's lock."""


@contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold `state_dir`'s lock until the block ends (StateDirInUse if another process does).

    An flock, not a pid file: the kernel lets go of it when the holder exits, however it
    exits, so it never goes stale. The file says which process holds it, for the message."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock_file = (state_dir / LOCK_FILE).open("a+")
    except OSError as error:
        raise StateDirUnusable(
            f"cannot use the state folder {state_dir}: {error.strerror or error}; "
            "give a folder you may write in with --state-dir"
        ) from None
    with lock_file as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirInUse(_in_use_message(state_dir, lock)) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.truncate(0)


def _in_use_message(state_dir: Path, lock: IO[str]) -> str:
    lock.seek(0)
    holder = lock.read().strip() or "unknown"
    return (
        f"another planelink dev (pid {holder}) is running with the state folder {state_dir}; "
        f"stop it first, or run this one with a folder of its own: "
        f"--state-dir {state_dir.parent / (state_dir.name + '-2')} "
        f"(and other ports: planelink dev --help lists their flags)"
    )


def _kubectl_problem() -> str | None:
    if shutil.which("kubectl") is None:
        return (
            "kubectl is not on PATH; planelink dev installs the DataPlane with it, and the "
            "commands it prints use it (https://kubernetes.io/docs/tasks/tools/)"
        )
    return None


# -- ports ----------------------------------------------------------------------------------


def ports_problem(ports: DevPorts) -> str | None:
    """Why `planelink dev` cannot listen on `ports`, naming the flag to change; None if it can."""
    seen: dict[int, str] = {}
    for flag, port in ports.by_flag().items():
        if port in seen:
            return f"{flag} and {seen[port]} are both {port}; give each its own port"
        seen[port] = flag
        if not _can_listen(port):
            return (
                f"port {port} on {HOST} is taken by another program; "
                f"pick a free one with {flag} PORT"
            )
    return None


def _can_listen(port: int) -> bool:
    # SO_REUSEADDR as asyncio's and Go's servers set it: a port left in TIME_WAIT is free to
    # them, one that something listens on is not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
        return True


# -- what it prints -------------------------------------------------------------------------


def planelink_command(argv0: str, path: str | None) -> str:
    """How a shell with `path` (PATH) runs the planelink that was started as `argv0`: the bare
    `planelink` when PATH finds this very program, else its full path."""
    program = Path(argv0)
    if program.name != "planelink":  # python -m planelink
        return f"{shlex.quote(sys.executable)} -m planelink"
    found = shutil.which("planelink", path=path)
    if found is not None and Path(found).resolve() == program.resolve():
        return "planelink"
    return shlex.quote(str(program.resolve()))


def status_command(planelink: str, operator_port: int, environ: Mapping[str, str]) -> str:
    """`planelink status` that reads this gateway: bare when its default URL is this one."""
    url = f"http://{HOST}:{operator_port}"
    if url == environ.get(ENV_GATEWAY) or (url == DEFAULT_GATEWAY and ENV_GATEWAY not in environ):
        return f"{planelink} status"
    return f"{planelink} status --gateway {url}"


def announcement(
    *,
    state_dir: Path,
    through: Path,
    ports: DevPorts,
    planelink: str,
    environ: Mapping[str, str],
) -> list[tuple[str, str]]:
    """The ready message: (what, URL or command) pairs, `ANNOUNCED` first."""

    def kubectl(kubeconfig: Path, *args: str) -> str:
        return shlex.join(["kubectl", "--kubeconfig", str(kubeconfig), *args])

    lines = [
        ("health page", f"http://{HOST}:{ports.operator}/"),
        ("agent metrics", f"http://{HOST}:{ports.agent_health}/metrics"),
        ("status", status_command(planelink, ports.operator, environ)),
        ("through-gateway", kubectl(through, "get", "ns")),
        (
            "control-plane",
            kubectl(
                state_dir / "control-plane.kubeconfig", "get", "dataplanes", "-A", "-o", "wide"
            ),
        ),
        ("data-plane (direct)", kubectl(state_dir / "data-plane.kubeconfig", "get", "ns")),
    ]
    assert tuple(name for name, _ in lines[: len(ANNOUNCED)]) == ANNOUNCED
    return lines
