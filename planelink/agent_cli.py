"""`planelink agent`: run the agent of one data plane.

Also runnable alone, with the same options: `python -m planelink.agent_cli --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from agent import AgentSettings, run_agent
from agent.settings import setting_fields
from planelink.logs import configure_logging

_DESCRIPTION = """\
Run the planelink agent of one data plane. It runs inside the data-plane cluster, dials OUT to
the gateway (wss://<gateway>/agent/v1/connect?plane=<namespace>/<name>) with the client
certificate of the cluster-agent-tls Secret, and proxies the requests it receives through that
tunnel to its own Kubernetes API server — watches, logs -f, exec and port-forward included. The
data plane's API server is never exposed.

It reconnects forever (exponential backoff with full jitter), re-reads its certificate files
before every connection attempt, serves /healthz, /readyz (200 only while the tunnel is up) and
/metrics, and on SIGTERM lets in-flight requests finish before it exits.

Every option can also be set by the environment variable shown in brackets; a flag wins.
"""

_EPILOG = """\
examples:
  # in a pod (in-cluster service account; certificates mounted at /etc/planelink/agent-tls)
  PLANELINK_GATEWAY_URL=wss://gateway.example.com PLANELINK_PLANE=my-org/prod planelink agent

  # from a workstation, against any cluster
  planelink agent --gateway-url wss://localhost:8443 --plane my-org/prod \\
      --tls-dir ./agent-tls --kubeconfig ~/.kube/config --health-address 127.0.0.1:8081
"""


def add_agent_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `agent` subcommand (its `run` returns the exit code)."""
    parser = commands.add_parser(
        "agent",
        help="run the agent of a data plane: dial the gateway, proxy to the local API server",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_setting_arguments(parser)
    parser.set_defaults(run=run)


def _add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in setting_fields():
        meta = field.metadata
        group = groups.get(meta["group"])
        if group is None:
            group = groups[meta["group"]] = parser.add_argument_group(meta["group"])
        help_text = meta["help"]
        if field.default is not dataclasses.MISSING and field.default not in (None, ""):
            help_text += f" (default: {field.default})"
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,
            metavar=meta["metavar"],
            help=f"{help_text} [{meta['env']}]",
        )


def run(args: argparse.Namespace) -> int:
    """Build the settings from the parsed flags and the environment, and run the agent."""
    flags = {field.name: getattr(args, field.name) for field in setting_fields()}
    try:
        settings = AgentSettings.from_sources(flags=flags, environ=os.environ)
    except ValueError as error:
        print(f"planelink agent: {error}", file=sys.stderr)
        return 2
    return run_agent(settings)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m planelink.agent_cli`: the agent alone, with logging options of its own."""
    parser = argparse.ArgumentParser(
        prog="planelink agent",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("PLANELINK_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="[PLANELINK_LOG_LEVEL]",
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("PLANELINK_LOG_FORMAT", "auto"),
        choices=["auto", "json", "console"],
        help="json for production; auto picks console on a terminal [PLANELINK_LOG_FORMAT]",
    )
    _add_setting_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level, log_format=args.log_format)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
