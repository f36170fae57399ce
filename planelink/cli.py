"""The `planelink` command: one entry point, a subcommand per role or tool."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from planelink.logs import LOG_SETTINGS, configure_logging_from, keep_rich_out
from tunnel.tls import DEFAULT_TLS_READ_BUFFER, set_tls_read_buffer, tls_read_buffer_problem

_DESCRIPTION = """\
planelink connects a Kubernetes control plane to its data-plane clusters. An agent in each
data-plane cluster dials out to the gateway over a WebSocket with mTLS; the gateway offers
callers a kubeconfig-compatible endpoint per plane. DataPlane resources (openchoreo.dev/v1alpha1)
in the control plane say which planes exist and which certificates their agents must present.
"""


@dataclass(frozen=True)
class _Command:
    help: str
    """The one line `planelink --help` shows for the command."""
    module: str | None = None
    """Where the command's parser is added (None: in this module)."""
    adds: str = ""
    """The function of `module` that adds the parser to the subcommands."""


# Every command, in the order `planelink --help` lists them. A command's module is imported only
# when that command runs (or shows its own --help): the gateway's modules pull in
# kubernetes_asyncio, pydantic and aiohttp, seconds of imports that `planelink --help`, `agent`,
# `certs` or `status` never use.
_COMMANDS = {
    "gateway": _Command(
        "run the gateway that agents dial and callers reach planes through",
        "planelink.gateway_cli",
        "add_gateway_parser",
    ),
    "agent": _Command(
        "run the agent of a data plane: dial the gateway, proxy to the local API server",
        "planelink.agent_cli",
        "add_agent_parser",
    ),
    "reconciler": _Command(
        "follow DataPlanes and print what the gateway would be fed (optionally write status)",
        "planelink.reconciler_cli",
        "add_reconciler_parser",
    ),
    "status": _Command(
        "show the planes, their agents and their health, from a running gateway",
        "planelink.status_cli",
        "add_status_parser",
    ),
    "crd": _Command("print the DataPlane CustomResourceDefinition (YAML) for kubectl apply"),
    "kube-binaries": _Command(
        "build (once, cached) the kube-apiserver and etcd used by tests and `dev`"
    ),
    "dev": _Command(
        "run gateway + agent + real local API servers, wired together (no cluster needed)",
        "planelink.dev",
        "add_parser",
    ),
    "certs": _Command(
        "create CAs and certificates for agents, gateway and API callers; inspect them",
        "planelink.certs_cli",
        "add_certs_parser",
    ),
    "kubeconfig": _Command(
        "write a kubeconfig (e.g. a caller's, for a plane through the gateway)",
        "planelink.kubeconfig_cli",
        "add_kubeconfig_parser",
    ),
    "apply": _Command(
        "server-side apply YAML manifests (like kubectl apply --server-side)",
        "planelink.apply_cli",
        "add_apply_parser",
    ),
}
_GLOBAL_OPTIONS_WITH_VALUES = frozenset({"--log-level", "--log-format", "--tls-read-buffer"})


if TYPE_CHECKING:
    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    _SubParsers = argparse._SubParsersAction


class _Subcommands(_SubParsers):
    """Subcommands whose one-line help comes from `_COMMANDS`, wherever they are added."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if name in _COMMANDS:
            kwargs.setdefault("help", _COMMANDS[name].help)
        return super().add_parser(name, **kwargs)


def build_parser(
    command: str | None = None, *, listed_only: Collection[str] = ()
) -> argparse.ArgumentParser:
    """The whole parser; or (`command` given) every command listed but only `command` with its
    options; the commands in `listed_only` are listed, not loaded, either way."""
    parser = argparse.ArgumentParser(
        prog="planelink",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    LOG_SETTINGS.add_to(parser)
    parser.add_argument(
        "--tls-read-buffer",
        type=_tls_read_buffer,
        default=DEFAULT_TLS_READ_BUFFER,
        metavar="BYTES",
        help="bytes a TLS connection reads at once, into one buffer per process that every "
        f"connection shares (default {DEFAULT_TLS_READ_BUFFER})",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", action=_Subcommands
    )
    for name, spec in _COMMANDS.items():
        if name in listed_only or (command is not None and name != command):
            commands.add_parser(name, add_help=False)
        elif name == "crd":
            _add_crd_parser(commands)
        elif name == "kube-binaries":
            _add_kube_binaries_parser(commands)
        else:
            assert spec.module is not None
            getattr(importlib.import_module(spec.module), spec.adds)(commands)
    return parser


def _add_crd_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crd_parser = commands.add_parser(
        "crd",
        description="Print the DataPlane CRD generated from planelink's models. "
        "Install it with: planelink crd | kubectl apply --server-side -f -",
    )
    crd_parser.add_argument("--output", "-o", type=Path, help="write to this file instead")
    crd_parser.set_defaults(run=_run_crd)


def _add_kube_binaries_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    binaries_parser = commands.add_parser(
        "kube-binaries",
        description="Build kube-apiserver and etcd at the pinned versions from the Go module "
        "proxy (needs Go), cache them, and print the folder that holds them.",
    )
    binaries_parser.set_defaults(run=_run_kube_binaries)


def _run_crd(args: argparse.Namespace) -> int:
    from crd import render_yaml  # noqa: PLC0415 - pydantic models: only this command

    text = render_yaml()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _run_kube_binaries(args: argparse.Namespace) -> int:
    try:
        from envtest import BinariesUnavailable, find_binaries  # noqa: PLC0415 - only this command
    except ModuleNotFoundError:
        print(
            "planelink kube-binaries: runs from a source checkout (scripts/setup), "
            "this installation has no envtest",
            file=sys.stderr,
        )
        return 1
    try:
        binaries = find_binaries()
    except BinariesUnavailable as error:
        print(f"planelink kube-binaries: {error}", file=sys.stderr)
        return 1
    print(binaries.kube_apiserver.parent)
    return 0


def _tls_read_buffer(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}") from None
    problem = tls_read_buffer_problem(size)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return size


def _command_in(argv: Sequence[str]) -> str | None:
    """The command `argv` names, if it is one."""
    tokens = iter(argv)
    for token in tokens:
        if token in _GLOBAL_OPTIONS_WITH_VALUES:
            next(tokens, None)
        elif not token.startswith("-"):
            return token if token in _COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    keep_rich_out()
    arguments = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(arguments)
    # No command named (`planelink --help`, a typo): list every command, load none.
    everything = _COMMANDS if command is None else ()
    args = build_parser(command, listed_only=everything).parse_args(arguments)
    set_tls_read_buffer(args.tls_read_buffer)
    try:
        configure_logging_from(args, os.environ)
    except ValueError as error:
        print(f"planelink: {error}", file=sys.stderr)
        return 2
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
