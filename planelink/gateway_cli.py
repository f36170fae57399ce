"""`planelink gateway`: run the gateway (agent listener, caller endpoint, operator endpoints).

Its settings are declared once, in `SETTINGS` (flag, `PLANELINK_GATEWAY_<FLAG>`, default,
parser, help); `settings_from` maps the resolved values onto the gateway's settings classes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

import certs
from gateway import tls_files
from gateway.admission import AdmissionSettings
from gateway.agent_listener import AgentListenerSettings
from gateway.app import Gateway, GatewaySettings
from gateway.auth import CallerAuthMode, CallerAuthSettings
from gateway.callers import CallerSettings
from gateway.direct import DirectSettings
from gateway.peers import PeerSettings
from gateway.peers.files import PresenceError, prepare_directory
from gateway.reconciler import CoordinationSettings, ReconcilerSettings
from gateway.static_config import ConfigError
from gateway.workers import MAX_WORKERS, check_workers, worker_id, worker_settings
from planelink.logs import LOG_SETTINGS
from planelink.settings import (
    NAMESPACES,
    CommandSettings,
    Group,
    Setting,
    integer,
    number,
    path,
)
from planelink.supervisor import WORKER_INDEX_VARIABLE, Supervisor, SupervisorSettings
from protocol import FloodLimits
from protocol.backoff import BackoffPolicy
from tunnel import Heartbeat, event_loop
from tunnel.event_loop import EVENT_LOOPS

_DESCRIPTION = """\
Run the gateway. Agents dial its agent port (mTLS; each agent's certificate must verify
against the client CA of the DataPlane it names); callers reach a plane's API server at
https://<gateway>:<caller port>/planes/<namespace>/<name>/k8s (with a certificate from the
caller CA, or a bearer token: see --caller-auth); operators read /healthz, /readyz, /planes
and /metrics on the operator port.

Every flag can also be set in the environment: --caller-port is PLANELINK_GATEWAY_CALLER_PORT
(each flag's variable is shown in brackets); a flag wins over the environment.

example:
  planelink certs init-ca --out pki/gateway-ca
  planelink certs issue-server --ca pki/gateway-ca --dns localhost --ip 127.0.0.1 --out pki/gateway
  planelink certs init-ca --out pki/callers
  planelink gateway --tls-cert pki/gateway/tls.crt --tls-key pki/gateway/tls.key \\
      --caller-ca pki/callers/ca.crt --planes planes.yaml
"""

_ADMISSION = AdmissionSettings()
_AGENTS = AgentListenerSettings()
_CALLERS = CallerSettings()
_FLOOD = FloodLimits()
_DIRECT = DirectSettings()
_AGENT_IDENTITY = ("required", "optional")


def _pod_name_or_host() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


_GENERAL = Group(
    None,
    (
        Setting(
            name="tls_cert",
            parse=path,
            required=True,
            help="server certificate (PEM) for both listeners",
        ),
        Setting(name="tls_key", parse=path, required=True, help="its private key"),
        Setting(
            name="caller_ca",
            parse=path,
            required=True,
            help="CA (PEM) that signs callers' certificates",
        ),
        Setting(
            name="planes", parse=path, help="YAML file listing planes and their agent client CAs"
        ),
        Setting(
            name="agent_identity",
            choices=_AGENT_IDENTITY,
            default="required",
            help="required: an agent's certificate must name the plane it serves (URI SAN "
            "planelink://plane/<ns>/<name>, or CN <ns>/<name> without SANs), so that agents of "
            "a CA shared by several planes cannot serve each other's. optional: planes that do "
            "not say otherwise (planes-file requireIdentity, DataPlane annotation "
            "planelink.dev/require-agent-identity) accept any certificate of their CA, which "
            "must then be theirs alone",
        ),
        Setting(
            name="bind",
            default="0.0.0.0",  # noqa: S104 - a gateway serves other hosts
            shown_default="all",
            help="address to listen on",
        ),
        Setting(name="agent_port", parse=integer, default=8443, help="port agents dial"),
        Setting(name="caller_port", parse=integer, default=6443, help="port callers use"),
        Setting(name="operator_port", parse=integer, default=8081, help="health and metrics"),
        Setting(
            name="operator_token_file",
            parse=path,
            shown_default="none",
            help="a file holding a bearer token that /planes, /metrics and the console (/) then"
            " demand (Authorization: Bearer ...); /healthz and /readyz never do",
        ),
        Setting(
            name="heartbeat_interval", parse=number, default=10.0, help="seconds between pings"
        ),
        Setting(
            name="heartbeat_timeout", parse=number, default=30.0, help="silence that ends a tunnel"
        ),
        Setting(
            name="write_timeout",
            parse=number,
            default=30.0,
            help="seconds an agent may leave what the gateway sends it unread before its tunnel "
            "is dropped",
        ),
        Setting(
            name="request_timeout",
            parse=number,
            default=60.0,
            help="deadline of requests other than watches, follows and upgrades",
        ),
        Setting(
            name="agent_wait",
            parse=number,
            default=_CALLERS.agent_wait,
            help="seconds after a plane's last agent disconnected during which its callers' "
            "requests wait for an agent to come back; after that, and for a plane whose agent "
            "has been gone longer, they are answered 503 at once, without Retry-After (which "
            "kubectl would obey ten times over before showing the error)",
        ),
        Setting(
            name="access_log",
            switch=True,
            negatable=True,
            default=True,
            help="log one line (event access) per caller request: caller, plane, verb, resource, "
            "namespace, name, status, bytes, duration and the request id that the caller gets in "
            "Planelink-Request-Id and the agent logs with the stream",
        ),
        Setting(
            name="http2",
            switch=True,
            negatable=True,
            default=True,
            help="offer HTTP/2 to callers (ALPN h2, then http/1.1): kubectl and client-go then "
            "carry all their requests and watches on one connection; exec, attach and "
            "port-forward stay on HTTP/1.1 connections of their own",
        ),
        Setting(
            name="http2_max_streams",
            parse=integer,
            default=_CALLERS.http2_limits.max_concurrent_streams,
            help="requests one HTTP/2 caller connection may have open at once (more are "
            "refused with REFUSED_STREAM, which clients retry); request bodies in flight on a "
            "connection stay within its window whatever this is",
        ),
        Setting(
            name="max_header_fields",
            parse=integer,
            default=256,
            help="header fields (and, apart, trailer fields) of a caller's request, at most; "
            "more is refused with 431",
        ),
        Setting(
            name="drain_grace", parse=number, default=30.0, help="seconds streams get on shutdown"
        ),
        Setting(
            name="starting_retry_after",
            parse=integer,
            default=1,
            help="while the gateway has not loaded its planes yet, callers and agents of a plane "
            "it does not know get 503 with this Retry-After, in seconds",
        ),
        Setting(
            name="listen_backlog",
            parse=integer,
            default=1024,
            help="connections each listener queues before accepting them: after a gateway "
            "restart every agent dials at once",
        ),
        Setting(
            name="event_loop",
            choices=EVENT_LOOPS,
            default="auto",
            help="the event loop each gateway process runs: asyncio's own or uvloop (C); auto "
            "is the one measured best, asyncio's today",
        ),
    ),
)

_WORKERS = Group(
    "worker processes",
    (
        Setting(
            name="workers",
            parse=integer,
            default=1,
            help=f"processes serving the gateway's ports together (SO_REUSEPORT), at most "
            f"{MAX_WORKERS}: one per core a gateway pod may use",
        ),
        Setting(
            name="presence_dir",
            parse=path,
            shown_default="with --workers > 1 and without --reconcile, a private temporary "
            "directory",
            help="a directory where the replicas of one host announce themselves when there is "
            "no control plane to hold their Leases (in one that others may write in, the "
            "supervisor makes a private one for its workers)",
        ),
    ),
    "With --workers N a supervisor process runs N workers, each a replica of its own\n"
    "(<identity>-w<i>) binding the same agent, caller and operator ports; agents keep a tunnel\n"
    "to each, and any worker's /planes, /metrics and console (/) show all of them. The\n"
    "supervisor forwards SIGTERM, SIGINT and SIGHUP, and restarts a worker that dies.\n"
    "Workers forward to each other over the peer port + i: without --peer-certificate (and\n"
    "without --reconcile) the supervisor makes them a peer CA of their own, trusted by no one\n"
    "else. Ports cannot be 0 with --workers > 1.",
)

_LIMITS = Group(
    "connection limits and deadlines",
    (
        Setting(
            name="max_connections",
            parse=integer,
            default=_ADMISSION.max_connections,
            help="connections per port, authenticated or not",
        ),
        Setting(
            name="max_unauthenticated",
            parse=integer,
            default=_ADMISSION.max_unauthenticated,
            help="connections per port not yet authenticated; a newcomer evicts the oldest",
        ),
        Setting(
            name="max_unauthenticated_per_ip",
            parse=integer,
            default=_ADMISSION.max_unauthenticated_per_ip,
            help="unauthenticated connections per port from one source address; beyond it new "
            "ones are refused",
        ),
        Setting(
            name="max_handshakes",
            parse=integer,
            default=_ADMISSION.max_concurrent_handshakes,
            help="TLS handshakes at once per port, counted from the ClientHello; the rest wait "
            "their turn",
        ),
        Setting(
            name="client_hello_timeout",
            parse=number,
            default=_ADMISSION.client_hello_timeout,
            help="seconds from accept to the TLS ClientHello",
        ),
        Setting(
            name="tls_handshake_timeout",
            parse=number,
            default=_ADMISSION.tls_handshake_timeout,
            help="seconds from the ClientHello to a finished TLS handshake, waiting for a slot "
            "included; also bounds the TLS close",
        ),
        Setting(
            name="upgrade_timeout",
            parse=number,
            default=_AGENTS.upgrade_timeout,
            help="seconds an agent has, after TLS, to send its WebSocket upgrade request",
        ),
        Setting(
            name="head_timeout",
            parse=number,
            default=_CALLERS.head_timeout,
            help="seconds from a caller request's first byte to the end of its head; slower "
            "callers get 408",
        ),
        Setting(
            name="idle_timeout",
            parse=number,
            default=_CALLERS.idle_timeout,
            help="seconds a caller connection may wait between requests before it is closed",
        ),
    ),
    "Each of the agent and caller ports has its own budget of these sizes. A connection is\n"
    "unauthenticated until its TLS handshake shows a certificate that verifies (or, for a\n"
    "caller with a token, until a request is authenticated); a newcomer evicts the oldest\n"
    "unauthenticated connection when the budget is full, so a flood of anonymous sockets\n"
    "cannot keep an agent or caller with valid credentials out. The limits are lowered at\n"
    "start if they do not fit the process's file-descriptor limit (RLIMIT_NOFILE).",
)

_FLOOD_LIMITS = Group(
    "agent flood limits",
    (
        Setting(
            name="flood_max_queued_answers",
            parse=integer,
            default=_FLOOD.max_queued_answers,
            help="RESETs owed to an agent that it has not read",
        ),
        Setting(
            name="flood_idle_frame_burst",
            parse=integer,
            default=_FLOOD.idle_frame_burst,
            help="frames without data (PING, empty DATA...) an agent may send at once",
        ),
        Setting(
            name="flood_idle_frame_rate",
            parse=number,
            default=_FLOOD.idle_frame_rate,
            help="... and per second after the burst",
        ),
        Setting(
            name="flood_stream_churn_burst",
            parse=integer,
            default=_FLOOD.stream_churn_burst,
            help="streams an agent may open only to reset them, at once",
        ),
        Setting(
            name="flood_stream_churn_rate",
            parse=number,
            default=_FLOOD.stream_churn_rate,
            help="... and per second after the burst",
        ),
    ),
    "What one agent may cost the gateway without useful traffic (protocol/SPEC.md 9.1); an\n"
    "agent past a limit is dropped and counted in planelink_gateway_agent_drops_total.",
)

_CALLER_AUTH = Group(
    "caller authentication",
    (
        Setting(
            name="caller_auth",
            choices=tuple(mode.value for mode in CallerAuthMode),
            default=CallerAuthMode.CERTIFICATE.value,
            help="credentials callers may present",
        ),
        Setting(
            name="authorize",
            switch=True,
            default=False,
            help="authorize certificate callers too (always on with tokens)",
        ),
        Setting(
            name="authorize_verb",
            default="proxy",
            help="the verb a caller needs on its plane's DataPlane",
        ),
        Setting(
            name="impersonate_callers",
            switch=True,
            default=False,
            help="forward requests as the caller (Impersonate-User/-Group), not as the agent",
        ),
    ),
    "Callers present a client certificate from --caller-ca, a bearer token (checked with a\n"
    "TokenReview in the control plane), or either. With tokens, every caller is authorized\n"
    "by a SubjectAccessReview: <verb> on dataplanes.openchoreo.dev named after the plane,\n"
    "in its namespace; --authorize asks the same of certificate callers.",
)

_DATAPLANES = Group(
    "DataPlane resources",
    (
        Setting(name="reconcile", switch=True, default=False, help="follow DataPlane resources"),
        Setting(
            name="kubeconfig",
            parse=path,
            shown_default="$KUBECONFIG, then in-cluster config",
            help="the control plane's kubeconfig, for DataPlanes and caller reviews",
        ),
        NAMESPACES,
        Setting(
            name="secret_watches",
            parse=integer,
            default=64,
            help="Secrets that DataPlanes reference watched at most, one connection each; one "
            "beyond is read when its DataPlane is reconciled (every 5 minutes at least)",
        ),
        Setting(
            name="cross_namespace_secrets",
            switch=True,
            default=False,
            shown_default="only its own namespace; others are refused with the reason "
            "CrossNamespaceSecret",
            help="let a DataPlane's secretRef name a Secret of another namespace",
        ),
        Setting(
            name="direct_upstream_http2",
            switch=True,
            negatable=True,
            default=_DIRECT.upstream_http2,
            help="reach a direct-mode plane's API server over HTTP/2 when it offers it (exec, "
            "attach and port-forward stay on HTTP/1.1): many requests and watches on each "
            "connection, up to the server's --http2-max-streams-per-connection",
        ),
        Setting(
            name="watch_retry_max",
            parse=number,
            default=2.0,
            help="longest wait, in seconds, before listing and watching the control plane again "
            "after a failure: bounds how long the gateway stays starting once it returns",
        ),
        Setting(
            name="kube_request_timeout",
            parse=number,
            default=10.0,
            help="deadline of each control-plane request other than a watch, in seconds",
        ),
        Setting(
            name="lease_namespace",
            help="with several replicas: namespace of the Leases that coordinate status writes",
        ),
        Setting(
            name="identity",
            default_factory=_pod_name_or_host,
            shown_default="$POD_NAME or the host name",
            help="this replica's name among the replicas",
        ),
    ),
    "With --reconcile the gateway follows the DataPlanes of the control plane (trust from\n"
    "spec.agent.clientCA, status conditions), besides or instead of --planes.",
)

_PEER_DEFAULTS = PeerSettings(certificate=Path(), key=Path(), ca=Path())

_PEERS = Group(
    "Peer replicas",
    (
        Setting(
            name="peer_certificate",
            parse=path,
            help="this replica's peer certificate (from 'planelink certs peer'): turns the peer "
            "listener and forwarding on",
        ),
        Setting(name="peer_key", parse=path, help="its private key"),
        Setting(name="peer_ca", parse=path, help="the peers' own CA, the only one trusted"),
        Setting(
            name="peer_port",
            parse=integer,
            default=_PEER_DEFAULTS.port,
            help="port of the peer listener, where other replicas forward callers' requests",
        ),
        Setting(
            name="peer_host",
            shown_default="--bind",
            help="address the peer listener binds",
        ),
        Setting(
            name="peer_advertise",
            default_factory=lambda: os.environ.get("POD_IP", ""),
            shown_default="$POD_IP, else 127.0.0.1",
            help="address the other replicas dial to reach this one's peer listener",
        ),
    ),
    "With several replicas, a replica without a tunnel to a plane forwards the caller's request\n"
    "to one that holds it, over mTLS with the peers' own CA.",
)

SETTINGS = CommandSettings(
    "PLANELINK_GATEWAY_",
    (_GENERAL, _LIMITS, _FLOOD_LIMITS, _CALLER_AUTH, _DATAPLANES, _PEERS, _WORKERS),
)
"""Every setting of `planelink gateway`."""


def add_gateway_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    SETTINGS.add_command(
        commands,
        "gateway",
        description=_DESCRIPTION,
        run=run,
    )


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> GatewaySettings:
    """The gateway's settings, each listener's and the reconciler's, from the flags of
    `planelink gateway` and the environment (ValueError naming what is wrong)."""
    values = SETTINGS.resolve(args, environ)
    host = values.bind
    if values.agent_wait < 0:
        raise ValueError("--agent-wait cannot be negative")
    if values.starting_retry_after < 1:
        raise ValueError("--starting-retry-after must be at least 1 (second)")
    if not 1 <= values.http2_max_streams <= 100_000:
        raise ValueError("--http2-max-streams must be between 1 and 100000")
    admission = AdmissionSettings(
        max_connections=values.max_connections,
        max_unauthenticated=values.max_unauthenticated,
        max_unauthenticated_per_ip=values.max_unauthenticated_per_ip,
        client_hello_timeout=values.client_hello_timeout,
        tls_handshake_timeout=values.tls_handshake_timeout,
        max_concurrent_handshakes=values.max_handshakes,
    )
    return GatewaySettings(
        replica_id=values.identity,
        server_certificate=values.tls_cert,
        server_key=values.tls_key,
        caller_ca=values.caller_ca,
        planes_file=values.planes,
        require_agent_identity=values.agent_identity != "optional",
        agents=AgentListenerSettings(
            host=host,
            port=values.agent_port,
            heartbeat=Heartbeat(
                values.heartbeat_interval, values.heartbeat_timeout, values.write_timeout
            ),
            upgrade_timeout=values.upgrade_timeout,
            admission=admission,
            flood=FloodLimits(
                max_queued_answers=values.flood_max_queued_answers,
                idle_frame_burst=values.flood_idle_frame_burst,
                idle_frame_rate=values.flood_idle_frame_rate,
                stream_churn_burst=values.flood_stream_churn_burst,
                stream_churn_rate=values.flood_stream_churn_rate,
            ),
            backlog=values.listen_backlog,
        ),
        callers=CallerSettings(
            host=host,
            port=values.caller_port,
            request_timeout=values.request_timeout,
            agent_wait=values.agent_wait,
            access_log=values.access_log,
            http2=values.http2,
            http2_limits=replace(
                _CALLERS.http2_limits, max_concurrent_streams=values.http2_max_streams
            ),
            head_timeout=values.head_timeout,
            idle_timeout=values.idle_timeout,
            admission=admission,
            max_header_fields=values.max_header_fields,
            backlog=values.listen_backlog,
            auth=CallerAuthSettings(
                mode=CallerAuthMode(values.caller_auth),
                authorize=values.authorize,
                verb=values.authorize_verb,
                impersonate=values.impersonate_callers,
            ),
        ),
        operator_host=host,
        operator_port=values.operator_port,
        operator_token_file=values.operator_token_file,
        drain_grace=values.drain_grace,
        starting_retry_after=values.starting_retry_after,
        reconciler=_reconciler_settings(values) if values.reconcile else None,
        direct=DirectSettings(upstream_http2=values.direct_upstream_http2),
        kubeconfig=values.kubeconfig,
        peers=_peer_settings(values),
        presence_dir=values.presence_dir,
    )


def _peer_settings(values: argparse.Namespace) -> PeerSettings | None:
    """The peer listener's settings: None unless --peer-certificate is given."""
    if values.peer_certificate is None:
        if values.peer_key is not None or values.peer_ca is not None:
            raise ValueError("--peer-key and --peer-ca need --peer-certificate")
        return None
    if values.peer_key is None or values.peer_ca is None:
        raise ValueError("--peer-certificate needs --peer-key and --peer-ca")
    return PeerSettings(
        certificate=values.peer_certificate,
        key=values.peer_key,
        ca=values.peer_ca,
        host=values.peer_host or values.bind,
        port=values.peer_port,
        advertise_host=values.peer_advertise,
    )


def _reconciler_settings(values: argparse.Namespace) -> ReconcilerSettings:
    coordination = (
        CoordinationSettings(namespace=values.lease_namespace, identity=values.identity)
        if values.lease_namespace
        else None
    )
    if values.watch_retry_max <= 0 or values.kube_request_timeout <= 0:
        raise ValueError("--watch-retry-max and --kube-request-timeout must be positive")
    return ReconcilerSettings(
        namespaces=values.namespaces,
        secret_watches=values.secret_watches,
        cross_namespace_secrets=values.cross_namespace_secrets,
        coordination=coordination,
        require_identity=values.agent_identity != "optional",
        watch_backoff=BackoffPolicy(
            base=min(0.2, values.watch_retry_max), cap=values.watch_retry_max
        ),
        request_timeout=values.kube_request_timeout,
    )


def check_tls_files(settings: GatewaySettings) -> None:
    """Check every TLS file the gateway will load, before `ssl` sees one (and before any
    worker starts): a WrongFileError names the file, what it holds, what was expected and
    the setting that fixes it."""
    peers = settings.peers
    tls_files.check_files(
        certificate=settings.server_certificate,
        key=settings.server_key,
        caller_ca=settings.caller_ca,
        peer=(peers.certificate, peers.key, peers.ca) if peers is not None else None,
    )


def run(args: argparse.Namespace) -> int:
    _raise_fd_limit()
    try:
        settings = settings_from(args)
        values = SETTINGS.resolve(args, os.environ)
        index = os.environ.get(WORKER_INDEX_VARIABLE, "")
        if index:
            worker = _worker_index(index, values.workers)
            return event_loop.run(
                serve(worker_settings(settings, index=worker, identity=values.identity)),
                event_loop=values.event_loop,
            )
        event_loop.chosen_loop(values.event_loop)  # before workers that would fail on it
        check_workers(settings, values.workers)
        check_tls_files(settings)  # a worker's were checked by its supervisor
        if values.workers > 1:
            return _supervise(args, settings, workers=values.workers, identity=values.identity)
        return event_loop.run(serve(settings), event_loop=values.event_loop)
    except (ConfigError, ValueError, OSError) as error:
        print(f"planelink gateway: {error}", file=sys.stderr)
        return 2


def _worker_index(text: str, workers: int) -> int:
    if not text.isdigit() or not 0 <= int(text) < workers:
        raise ValueError(f"{WORKER_INDEX_VARIABLE}={text!r} names no worker of {workers}")
    return int(text)


STOP_MARGIN = 10.0
"""Seconds a worker gets beyond its drain grace to exit before the supervisor kills it."""


def _supervise(
    args: argparse.Namespace, settings: GatewaySettings, *, workers: int, identity: str
) -> int:
    """Run `workers` copies of this command as workers, with a private directory of the
    supervisor's (0700, removed at exit) for what they share and nobody else may touch."""
    private = Path(tempfile.mkdtemp(prefix="planelink-gateway-"))
    presence: Path | None = None
    try:
        environment = dict(os.environ)
        if settings.reconciler is None:
            presence = _presence_for_workers(settings.presence_dir, private)
            environment[SETTINGS.env(_setting("presence_dir"))] = str(presence)
        if settings.peers is None:
            environment.update(_private_peer_pki(private / "peer"))
        # The workers' presence directory comes by the environment (a flag would win over it).
        argv = _worker_argv(argparse.Namespace(**{**vars(args), "presence_dir": None}))

        def command(index: int) -> tuple[Sequence[str], dict[str, str]]:
            return argv, {**environment, WORKER_INDEX_VARIABLE: str(index)}

        def withdraw(index: int) -> None:
            # A dead worker cannot delete its presence file: its siblings should not wait for
            # it to age out before they stop counting on it.
            if presence is not None:
                with contextlib.suppress(OSError):
                    (presence / f"{worker_id(identity, index)}.json").unlink()

        supervisor = Supervisor(
            SupervisorSettings(workers=workers, stop_grace=settings.drain_grace + STOP_MARGIN),
            command,
            on_worker_exit=withdraw,
        )
        return asyncio.run(supervisor.run())
    finally:
        shutil.rmtree(private, ignore_errors=True)
        if (  # one made inside the given directory
            presence is not None
            and presence.parent != private
            and presence != settings.presence_dir
        ):
            shutil.rmtree(presence, ignore_errors=True)


def _presence_for_workers(given: Path | None, private: Path) -> Path:
    """Where the workers announce themselves: `given` if only this user may write there, else
    a private directory made inside it (an emptyDir volume is writable by all: whoever can
    write where workers read can announce a replica); without `given`, one in `private`."""
    if given is None:
        return private / "presence"
    try:
        prepare_directory(given)
    except PresenceError as error:
        inside = Path(tempfile.mkdtemp(prefix="planelink-presence-", dir=given))
        structlog.get_logger("planelink.supervisor").info(
            "presence directory made private", given=str(given), used=str(inside), why=str(error)
        )
        return inside
    return given


def _private_peer_pki(directory: Path) -> dict[str, str]:
    """A peer CA and certificate of this gateway's own, for workers that must reach each other
    and were given no peer certificate: the CA's key is thrown away at once (nothing else will
    ever be issued under it), and the files live in the supervisor's private directory. Only
    the workers of this one host trust it (check_workers refuses it beside --reconcile, where
    other pods' replicas must trust this pod's)."""
    ca = certs.create_ca("planelink workers' peer CA")
    certificate, key = certs.write_pem_files(
        certs.issue_peer(ca), directory, cert_name="tls.crt", key_name="tls.key"
    )
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.certificate_pem())
    structlog.get_logger("planelink.supervisor").info(
        "peer certificates made for the workers", directory=str(directory)
    )
    return {
        SETTINGS.env(_setting("peer_certificate")): str(certificate),
        SETTINGS.env(_setting("peer_key")): str(key),
        SETTINGS.env(_setting("peer_ca")): str(ca_file),
    }


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """This command line again, for a worker: the same interpreter and flags (the
    environment, inherited, carries the rest)."""
    return [
        sys.executable,
        "-m",
        "planelink",
        *LOG_SETTINGS.arguments(args),
        "--tls-read-buffer",
        str(args.tls_read_buffer),
        "gateway",
        *SETTINGS.arguments(args),
    ]


def _setting(name: str) -> Setting:
    return next(setting for setting in SETTINGS if setting.name == name)


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
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
        try:
            gateway.load_planes()
        except ConfigError as error:
            log.error("planes file not reloaded", error=str(error))

    # Before the start: once it announces itself (its presence file, its ports), a stop must
    # find a handler, not the default action that ends the process at once.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await gateway.start()
        await stop.wait()
        log.info("shutting down", drain_grace=settings.drain_grace)
        await gateway.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(signum)
    return 0
