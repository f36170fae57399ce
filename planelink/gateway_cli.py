"""`planelink gateway`: run the gateway (agent listener, caller endpoint, operator endpoints)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import sys
from pathlib import Path

import structlog

from gateway.admission import AdmissionSettings
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.auth import CallerAuthMode, CallerAuthSettings
from gateway.callers import CallerSettings
from gateway.reconciler import CoordinationSettings, ReconcilerSettings
from gateway.static_config import ConfigError
from protocol import FloodLimits
from tunnel import Heartbeat

_ENV_PREFIX = "PLANELINK_GATEWAY_"

_DESCRIPTION = """\
Run the gateway. Agents dial its agent port (mTLS; each agent's certificate must verify
against the client CA of the DataPlane it names); callers reach a plane's API server at
https://<gateway>:<caller port>/planes/<namespace>/<name>/k8s (with a certificate from the
caller CA, or a bearer token: see --caller-auth); operators read /healthz, /readyz, /planes
and /metrics on the operator port.

Every flag can also be set in the environment: --caller-port is PLANELINK_GATEWAY_CALLER_PORT.

example:
  planelink certs init-ca --out pki/gateway-ca
  planelink certs issue-server --ca pki/gateway-ca --dns localhost --ip 127.0.0.1 --out pki/gateway
  planelink certs init-ca --out pki/callers
  planelink gateway --tls-cert pki/gateway/tls.crt --tls-key pki/gateway/tls.key \\
      --caller-ca pki/callers/ca.crt --planes planes.yaml
"""


def _env(flag: str, default: str | None = None) -> str | None:
    return os.environ.get(_ENV_PREFIX + flag.upper().replace("-", "_"), default)


_FLOOD_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("max_queued_answers", int, "RESETs owed to an agent that it has not read"),
    (
        "idle_frame_burst",
        int,
        "frames without data (PING, empty DATA...) an agent may send at once",
    ),
    ("idle_frame_rate", float, "... and per second after the burst"),
    ("stream_churn_burst", int, "streams an agent may open only to reset them, at once"),
    ("stream_churn_rate", float, "... and per second after the burst"),
)
"""`FloodLimits` fields offered as `--flood-<field>` flags: (field, type, help)."""


def add_gateway_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "gateway",
        help="run the gateway that agents dial and callers reach planes through",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def flag(
        name: str,
        *,
        help: str,
        type: type = str,
        default: str | None = None,
        required: bool = False,
    ) -> None:
        # The environment gives the default, a flag overrides it; argparse converts both.
        value = _env(name, default)
        parser.add_argument(
            f"--{name}", default=value, required=required and value is None, type=type, help=help
        )

    flag("tls-cert", required=True, type=Path, help="server certificate (PEM) for both listeners")
    flag("tls-key", required=True, type=Path, help="its private key")
    flag("caller-ca", required=True, type=Path, help="CA (PEM) that signs callers' certificates")
    flag("planes", type=Path, help="YAML file listing planes and their agent client CAs")
    flag("bind", default="0.0.0.0", help="address to listen on (default: all)")  # noqa: S104
    flag("agent-port", default="8443", type=int, help="port agents dial (default: 8443)")
    flag("caller-port", default="6443", type=int, help="port callers use (default: 6443)")
    flag("operator-port", default="8081", type=int, help="health and metrics (default: 8081)")
    flag(
        "operator-token-file",
        type=Path,
        help="a file holding a bearer token that /planes, /metrics and the status page then"
        " demand (Authorization: Bearer ...); /healthz and /readyz never do (default: none)",
    )
    flag("heartbeat-interval", default="10", type=float, help="seconds between pings (10)")
    flag("heartbeat-timeout", default="30", type=float, help="silence that ends a tunnel (30)")
    flag(
        "write-timeout",
        default="30",
        type=float,
        help="seconds an agent may leave what the gateway sends it unread before its tunnel is "
        "dropped (30)",
    )
    flag(
        "request-timeout",
        default="60",
        type=float,
        help="deadline of requests other than watches, follows and upgrades (60)",
    )
    flag("drain-grace", default="30", type=float, help="seconds streams get on shutdown (30)")
    flag(
        "listen-backlog",
        default="1024",
        type=int,
        help="connections each listener queues before accepting them (1024): after a gateway "
        "restart every agent dials at once",
    )
    limits = parser.add_argument_group(
        "connection limits and deadlines",
        "Each of the agent and caller ports has its own budget of these sizes. A connection is\n"
        "unauthenticated until its TLS handshake shows a certificate that verifies (or, for a\n"
        "caller with a token, until a request is authenticated); a newcomer evicts the oldest\n"
        "unauthenticated connection when the budget is full, so a flood of anonymous sockets\n"
        "cannot keep an agent or caller with valid credentials out. The limits are lowered at\n"
        "start if they do not fit the process's file-descriptor limit (RLIMIT_NOFILE).",
    )

    def limit(name: str, *, default: str, type: type, help: str) -> None:
        value = _env(name, default)
        limits.add_argument(f"--{name}", default=value, type=type, help=help)

    admission = AdmissionSettings()
    limit(
        "max-connections",
        default=str(admission.max_connections),
        type=int,
        help=f"connections per port, authenticated or not ({admission.max_connections})",
    )
    limit(
        "max-unauthenticated",
        default=str(admission.max_unauthenticated),
        type=int,
        help="connections per port not yet authenticated; a newcomer evicts the oldest"
        f" ({admission.max_unauthenticated})",
    )
    limit(
        "max-unauthenticated-per-ip",
        default=str(admission.max_unauthenticated_per_ip),
        type=int,
        help="unauthenticated connections per port from one source address; beyond it new"
        f" ones are refused ({admission.max_unauthenticated_per_ip})",
    )
    limit(
        "max-handshakes",
        default=str(admission.max_concurrent_handshakes),
        type=int,
        help="TLS handshakes at once per port, counted from the ClientHello"
        f" ({admission.max_concurrent_handshakes}); the rest wait their turn",
    )
    limit(
        "client-hello-timeout",
        default=str(admission.client_hello_timeout),
        type=float,
        help=f"seconds from accept to the TLS ClientHello ({admission.client_hello_timeout})",
    )
    limit(
        "tls-handshake-timeout",
        default=str(admission.tls_handshake_timeout),
        type=float,
        help="seconds from the ClientHello to a finished TLS handshake, waiting for a slot"
        f" included; also bounds the TLS close ({admission.tls_handshake_timeout})",
    )
    agents, callers = AgentListenerSettings(), CallerSettings()
    limit(
        "upgrade-timeout",
        default=str(agents.upgrade_timeout),
        type=float,
        help="seconds an agent has, after TLS, to send its WebSocket upgrade request"
        f" ({agents.upgrade_timeout})",
    )
    limit(
        "head-timeout",
        default=str(callers.head_timeout),
        type=float,
        help="seconds from a caller request's first byte to the end of its head"
        f" ({callers.head_timeout}); slower callers get 408",
    )
    limit(
        "idle-timeout",
        default=str(callers.idle_timeout),
        type=float,
        help="seconds a caller connection may wait between requests before it is closed"
        f" ({callers.idle_timeout})",
    )
    _add_flood_flags(parser)
    auth = parser.add_argument_group(
        "caller authentication",
        "Callers present a client certificate from --caller-ca, a bearer token (checked with a\n"
        "TokenReview in the control plane), or either. With tokens, every caller is authorized\n"
        "by a SubjectAccessReview: <verb> on dataplanes.openchoreo.dev named after the plane,\n"
        "in its namespace; --authorize asks the same of certificate callers.",
    )
    auth.add_argument(
        "--caller-auth",
        choices=[mode.value for mode in CallerAuthMode],
        default=_env("caller-auth", CallerAuthMode.CERTIFICATE.value),
        help="credentials callers may present (default: certificate)",
    )
    auth.add_argument(
        "--authorize",
        action="store_true",
        default=_env("authorize", "false") == "true",
        help="authorize certificate callers too (always on with tokens)",
    )
    auth.add_argument(
        "--authorize-verb",
        default=_env("authorize-verb", "proxy"),
        help="the verb a caller needs on its plane's DataPlane (default: proxy)",
    )
    auth.add_argument(
        "--impersonate-callers",
        action="store_true",
        default=_env("impersonate-callers", "false") == "true",
        help="forward requests as the caller (Impersonate-User/-Group), not as the agent",
    )
    reconcile = parser.add_argument_group(
        "DataPlane resources",
        "With --reconcile the gateway follows the DataPlanes of the control plane (trust from\n"
        "spec.agent.clientCA, status conditions), besides or instead of --planes.",
    )
    reconcile.add_argument(
        "--reconcile",
        action="store_true",
        default=_env("reconcile", "false") == "true",
        help="follow DataPlane resources (env PLANELINK_GATEWAY_RECONCILE=true)",
    )
    reconcile.add_argument(
        "--kubeconfig",
        type=Path,
        default=_env("kubeconfig"),
        help="the control plane's kubeconfig, for DataPlanes and caller reviews"
        " (default: $KUBECONFIG, then in-cluster config)",
    )
    reconcile.add_argument(
        "--namespaces",
        default=_env("namespaces", ""),
        help="comma-separated namespaces to watch (default: all)",
    )
    reconcile.add_argument(
        "--secret-watches",
        type=int,
        default=int(_env("secret_watches", "64") or 64),
        help="Secrets that DataPlanes reference watched at most, one connection each (64);"
        " one beyond is read when its DataPlane is reconciled (every 5 minutes at least)",
    )
    reconcile.add_argument(
        "--cross-namespace-secrets",
        action="store_true",
        default=_env("cross_namespace_secrets", "false") == "true",
        help="let a DataPlane's secretRef name a Secret of another namespace (default: only"
        " its own namespace; others are refused with the reason CrossNamespaceSecret)",
    )
    reconcile.add_argument(
        "--lease-namespace",
        default=_env("lease_namespace"),
        help="with several replicas: namespace of the Leases that coordinate status writes",
    )
    reconcile.add_argument(
        "--identity",
        default=_env("identity", os.environ.get("POD_NAME") or socket.gethostname()),
        help="this replica's name among the replicas (default: $POD_NAME or the host name)",
    )
    parser.set_defaults(run=run)


def _add_flood_flags(parser: argparse.ArgumentParser) -> None:
    flood = parser.add_argument_group(
        "agent flood limits",
        "What one agent may cost the gateway without useful traffic (protocol/SPEC.md 9.1); an\n"
        "agent past a limit is dropped and counted in planelink_gateway_agent_drops_total.",
    )
    defaults = FloodLimits()
    for field, kind, text in _FLOOD_FLAGS:
        name = "flood-" + field.replace("_", "-")
        default = getattr(defaults, field)
        flood.add_argument(
            f"--{name}",
            dest=f"flood_{field}",
            default=_env(name, str(default)),
            type=kind,
            help=f"{text} ({default:g})",
        )


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    host = args.bind
    admission = AdmissionSettings(
        max_connections=args.max_connections,
        max_unauthenticated=args.max_unauthenticated,
        max_unauthenticated_per_ip=args.max_unauthenticated_per_ip,
        client_hello_timeout=args.client_hello_timeout,
        tls_handshake_timeout=args.tls_handshake_timeout,
        max_concurrent_handshakes=args.max_handshakes,
    )
    return GatewaySettings(
        server_certificate=args.tls_cert,
        server_key=args.tls_key,
        caller_ca=args.caller_ca,
        planes_file=args.planes,
        agents=AgentListenerSettings(
            host=host,
            port=args.agent_port,
            heartbeat=Heartbeat(
                args.heartbeat_interval, args.heartbeat_timeout, args.write_timeout
            ),
            upgrade_timeout=args.upgrade_timeout,
            admission=admission,
            flood=FloodLimits(
                **{field: getattr(args, f"flood_{field}") for field, _, _ in _FLOOD_FLAGS}
            ),
            backlog=args.listen_backlog,
        ),
        callers=CallerSettings(
            host=host,
            port=args.caller_port,
            request_timeout=args.request_timeout,
            head_timeout=args.head_timeout,
            idle_timeout=args.idle_timeout,
            admission=admission,
            backlog=args.listen_backlog,
            auth=CallerAuthSettings(
                mode=CallerAuthMode(args.caller_auth),
                authorize=args.authorize,
                verb=args.authorize_verb,
                impersonate=args.impersonate_callers,
            ),
        ),
        operator_host=host,
        operator_port=args.operator_port,
        operator_token_file=args.operator_token_file,
        drain_grace=args.drain_grace,
        reconciler=_reconciler_settings(args) if args.reconcile else None,
        kubeconfig=args.kubeconfig,
    )


def _reconciler_settings(args: argparse.Namespace) -> ReconcilerSettings:
    coordination = (
        CoordinationSettings(namespace=args.lease_namespace, identity=args.identity)
        if args.lease_namespace
        else None
    )
    namespaces = tuple(name.strip() for name in args.namespaces.split(",") if name.strip())
    return ReconcilerSettings(
        namespaces=namespaces,
        secret_watches=args.secret_watches,
        cross_namespace_secrets=args.cross_namespace_secrets,
        coordination=coordination,
    )


def run(args: argparse.Namespace) -> int:
    _raise_fd_limit()
    try:
        settings = settings_from(args)
        return asyncio.run(serve(settings))
    except (ConfigError, ValueError, OSError) as error:
        print(f"planelink gateway: {error}", file=sys.stderr)
        return 2


def _raise_fd_limit() -> None:
    """Take the hard file-descriptor limit as the soft one (as Go programs do): the connection
    limits are fitted below it, and a default soft limit of 1024 would make them small."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: GatewaySettings) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the planes file."""
    log = structlog.get_logger("gateway")
    gateway = Gateway(settings)
    await gateway.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def reload() -> None:
        try:
            gateway.load_planes()
        except ConfigError as error:
            log.error("planes file not reloaded", error=str(error))

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("shutting down", drain_grace=settings.drain_grace)
    await gateway.stop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(ValueError):
            loop.remove_signal_handler(signum)
    return 0
