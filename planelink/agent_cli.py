"""`planelink agent`: run the agent of one data plane.

Also runnable alone, with the same options: `python -m planelink.agent_cli --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import certs
from agent import AgentSettings, run_agent
from agent.dialer import client_context
from planelink.logs import LOG_SETTINGS, configure_logging_from
from planelink.settings import CommandSettings, Group, Setting, integer, number, path
from tunnel.event_loop import EVENT_LOOPS, chosen_loop

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


def _setting(name: str, **declared: Any) -> Setting:
    """A setting of the agent whose default is `AgentSettings`'s own."""
    field = _FIELDS[name]
    if field.default_factory is not dataclasses.MISSING:
        return Setting(name=name, default_factory=field.default_factory, **declared)
    return Setting(name=name, default=field.default, **declared)


_FIELDS = {field.name: field for field in dataclasses.fields(AgentSettings)}

_GATEWAY = Group(
    "gateway connection",
    (
        _setting(
            name="gateway_url",
            metavar="URL",
            help="the gateway to dial, e.g. wss://gateway.example.com (required)",
        ),
        _setting(
            name="plane",
            metavar="NAMESPACE/NAME",
            help="the DataPlane this agent serves, as <namespace>/<name> (required)",
        ),
        _setting(
            name="agent_id",
            metavar="ID",
            help="a stable id of this agent instance (default: the pod name)",
        ),
        _setting(
            name="tls_dir",
            metavar="DIR",
            parse=path,
            help="folder of the mounted cluster-agent-tls Secret: tls.crt, tls.key and ca.crt "
            "(the gateway's CA); re-read at every connection attempt, so renewals need no restart",
        ),
        _setting(
            name="client_cert",
            metavar="FILE",
            parse=path,
            help="client certificate chain (default: <tls-dir>/tls.crt)",
        ),
        _setting(
            name="client_key",
            metavar="FILE",
            parse=path,
            help="client private key (default: <tls-dir>/tls.key)",
        ),
        _setting(
            name="gateway_ca",
            metavar="FILE",
            parse=path,
            help="CA certificates that sign the gateway's server certificate "
            "(default: <tls-dir>/ca.crt)",
        ),
    ),
)

_UPSTREAM = Group(
    "local API server",
    (
        _setting(
            name="kubeconfig",
            metavar="FILE",
            parse=path,
            help="reach the API server with this kubeconfig instead of the in-cluster "
            "service account",
        ),
        _setting(
            name="kube_context",
            metavar="NAME",
            help="the kubeconfig context to use (default: its current-context)",
        ),
        _setting(
            name="in_cluster_root",
            metavar="DIR",
            parse=path,
            help="service-account folder (token, ca.crt) used without --kubeconfig",
        ),
        _setting(
            name="upstream_connect_timeout",
            metavar="SECONDS",
            parse=number,
            help="time to open a connection (TCP + TLS) to the API server; beyond it: 504",
        ),
        _setting(
            name="upstream_response_timeout",
            metavar="SECONDS",
            parse=number,
            help="time from sending a request to the API server's response head (not the "
            "body: watches and logs stream for as long as they like); beyond it: 504",
        ),
        _setting(
            name="max_streams",
            metavar="N",
            parse=integer,
            help="streams (requests, watches, exec sessions) the gateway may have open at "
            "once through this agent; beyond it the gateway tries another agent or answers 429",
        ),
        _setting(
            name="pool_max_idle",
            metavar="N",
            parse=integer,
            help="idle keep-alive connections to the API server kept for reuse",
        ),
        _setting(
            name="pool_idle_timeout",
            metavar="SECONDS",
            parse=number,
            help="an idle connection to the API server is closed after this long",
        ),
        _setting(
            name="upstream_http2",
            switch=True,
            negatable=True,
            help="send requests (but exec, attach and port-forward) to the API server over "
            "HTTP/2 when it offers it: many requests and watches on each connection, up to the "
            "server's --http2-max-streams-per-connection; --no-upstream-http2 keeps one "
            "HTTP/1.1 connection per open request",
        ),
        _setting(
            name="upstream_http2_max_connections",
            metavar="N",
            parse=integer,
            help="HTTP/2 connections to the API server at most (each "
            "carries as many streams as the server allows); beyond them requests wait",
        ),
    ),
)

_TIMING = Group(
    "timing",
    (
        _setting(
            name="connect_timeout",
            metavar="SECONDS",
            parse=number,
            help="time for one connection attempt to the gateway (TCP, TLS, WebSocket handshake)",
        ),
        _setting(
            name="backoff_base",
            metavar="SECONDS",
            parse=number,
            help="reconnect delay ceiling after the first failure; it doubles per failure, and "
            "the actual delay is drawn uniformly below it (full jitter)",
        ),
        _setting(
            name="backoff_cap",
            metavar="SECONDS",
            parse=number,
            help="largest reconnect delay ceiling",
        ),
        _setting(
            name="backoff_reset_after",
            metavar="SECONDS",
            parse=number,
            help="a tunnel that stayed up this long resets the delay after a lost tunnel to its "
            "base (a tunnel set up at all resets the delay after failed dials); shorter tunnels "
            "back off, so a gateway that accepts and drops at once is not hammered",
        ),
        _setting(
            name="heartbeat_interval",
            metavar="SECONDS",
            parse=number,
            help="how often the agent pings the gateway through the tunnel",
        ),
        _setting(
            name="heartbeat_timeout",
            metavar="SECONDS",
            parse=number,
            help="a tunnel silent for this long is dead (half-open): drop it and reconnect",
        ),
        _setting(
            name="write_timeout",
            metavar="SECONDS",
            parse=number,
            help="a gateway that leaves what the agent sends unread this long is dropped "
            "(and redialed)",
        ),
        _setting(
            name="drain_grace",
            metavar="SECONDS",
            parse=number,
            help="on SIGTERM, time given to in-flight requests before the tunnel is closed; "
            "keep it below the pod's terminationGracePeriodSeconds",
        ),
        _setting(
            name="replica_join_spread",
            metavar="SECONDS",
            parse=number,
            help="a gateway replica announced while the agent runs is first dialled after a "
            "random pause of up to this long, so that a fleet of agents does not dial it at once",
        ),
        _setting(
            name="max_tunnels",
            metavar="N",
            parse=integer,
            help="the most tunnels held at once: the agent keeps one to every live gateway "
            "replica (the gateway names them), up to this many",
        ),
    ),
)

_SERVING = Group(
    "health and metrics",
    (
        _setting(
            name="health_address",
            metavar="HOST:PORT",
            help="where /healthz, /readyz and /metrics are served (empty host: all interfaces)",
        ),
    ),
)

_PROCESS = Group(
    "process",
    (
        _setting(
            name="event_loop",
            choices=EVENT_LOOPS,
            help="the event loop the agent runs: asyncio's own or uvloop (C); auto is the one "
            "measured best, asyncio's today",
        ),
    ),
)

SETTINGS = CommandSettings("PLANELINK_", (_GATEWAY, _UPSTREAM, _TIMING, _SERVING, _PROCESS))
"""Every setting of `planelink agent`, one per field of `AgentSettings`."""


def add_agent_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the `agent` subcommand (its `run` returns the exit code)."""
    SETTINGS.add_command(
        commands,
        "agent",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        run=run,
    )


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> AgentSettings:
    """`AgentSettings` from `planelink agent`'s flags and the environment (ValueError if a
    value is wrong)."""
    return AgentSettings(**vars(SETTINGS.resolve(args, environ)))


def run(args: argparse.Namespace) -> int:
    """Build the settings from the parsed flags and the environment, and run the agent."""
    try:
        settings = settings_from(args)
        chosen_loop(settings.event_loop)
        check_tls_files(settings)
    except ValueError as error:
        print(f"planelink agent: {error}", file=sys.stderr)
        return 2
    return run_agent(settings)


def check_tls_files(settings: AgentSettings) -> None:
    """Refuse to start with a TLS file that holds the wrong thing (a WrongFileError naming
    it); a missing one is waited for, dial after dial (a Secret not mounted yet)."""
    try:
        client_context(settings.tls_files)
    except certs.WrongFileError as error:
        if not error.missing:
            raise


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m planelink.agent_cli`: the agent alone, with logging options of its own."""
    parser = argparse.ArgumentParser(
        prog="planelink agent",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    LOG_SETTINGS.add_to(parser)
    SETTINGS.add_to(parser)
    args = parser.parse_args(argv)
    try:
        configure_logging_from(args, os.environ)
    except ValueError as error:
        print(f"planelink agent: {error}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
