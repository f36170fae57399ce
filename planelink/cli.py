"""The `planelink` command: one entry point, a subcommand per role or tool."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from crd import render_yaml
from planelink.logs import LOG_SETTINGS, configure_logging_from
from tunnel.tls import DEFAULT_TLS_READ_BUFFER, set_tls_read_buffer, tls_read_buffer_problem

_DESCRIPTION = """\
planelink connects a Kubernetes control plane to its data-plane clusters. An agent in each
data-plane cluster dials out to the gateway over a WebSocket with mTLS; the gateway offers
callers a kubeconfig-compatible endpoint per plane. DataPlane resources (openchoreo.dev/v1alpha1)
in the control plane say which planes exist and which certificates their agents must present.
"""


# Each command's module and the function that adds its parser. Imported only when needed: the
# gateway's modules pull in kubernetes_asyncio (a second of imports) that `planelink agent`,
# `certs` or `status` never use.
_COMMANDS = {
    "gateway": ("planelink.gateway_cli", "add_gateway_parser"),
    "agent": ("planelink.agent_cli", "add_agent_parser"),
    "reconciler": ("planelink.reconciler_cli", "add_reconciler_parser"),
    "status": ("planelink.status_cli", "add_status_parser"),
    "dev": ("planelink.dev", "add_parser"),
    "certs": ("planelink.certs_cli", "add_certs_parser"),
    "kubeconfig": ("planelink.kubeconfig_cli", "add_kubeconfig_parser"),
    "apply": ("planelink.apply_cli", "add_apply_parser"),
}
_GLOBAL_OPTIONS_WITH_VALUES = frozenset({"--log-level", "--log-format", "--tls-read-buffer"})


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (`command` given) the global options and that command alone."""
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
        help="bytes each TLS connection reads at once and keeps as its read buffer "
        f"(default {DEFAULT_TLS_READ_BUFFER}; asyncio's own 262144 costs 256 KiB per connection)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crd_parser = commands.add_parser(
        "crd",
        help="print the DataPlane CustomResourceDefinition (YAML) for kubectl apply",
        description="Print the DataPlane CRD generated from planelink's models. "
        "Install it with: planelink crd | kubectl apply --server-side -f -",
    )
    crd_parser.add_argument("--output", "-o", type=Path, help="write to this file instead")
    crd_parser.set_defaults(run=_run_crd)

    binaries_parser = commands.add_parser(
        "kube-binaries",
        help="build (once, cached) the kube-apiserver and etcd used by tests and `dev`",
        description="Build kube-apiserver and etcd at the pinned versions from the Go module "
        "proxy (needs Go), cache them, and print the folder that holds them.",
    )
    binaries_parser.set_defaults(run=_run_kube_binaries)

    for name, (module, function) in _COMMANDS.items():
        if command is None or command == name:
            getattr(importlib.import_module(module), function)(commands)
    return parser


def _run_crd(args: argparse.Namespace) -> int:
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
    """The command `argv` names, if it is one of the lazily loaded ones."""
    tokens = iter(argv)
    for token in tokens:
        if token in _GLOBAL_OPTIONS_WITH_VALUES:
            next(tokens, None)
        elif not token.startswith("-"):
            return token if token in _COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_in(arguments)).parse_args(arguments)
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
