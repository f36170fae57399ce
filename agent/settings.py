"""The agent's settings: one frozen value, validated on construction.

An `AgentSettings` that exists is usable (a `ValueError` names the offending setting
otherwise). `planelink agent` fills it from flags and environment: each field's flag,
environment variable and help text are declared there (`planelink.agent_cli.SETTINGS`), once;
the defaults are the fields' own. This module never reads flags or the environment itself
(the agent id's default aside: the pod name).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import certs
from tunnel.contract import AGENT_CONNECT_PATH, PLANE_QUERY_PARAMETER

DEFAULT_TLS_DIR = Path("/etc/planelink/agent-tls")
DEFAULT_IN_CLUSTER_ROOT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MAX_TUNNELS = 256
"""The most replicas a REPLICAS frame names: more tunnels could never be wanted."""


# How an operator names each TLS file: `planelink agent`'s flag and variable, the agent chart's
# value (tests/cli checks them against the command's declarations).
CLIENT_CERT_SETTING = certs.FileSetting(
    "--client-cert", "PLANELINK_CLIENT_CERT", "tls.secretName (its tls.crt), or --tls-dir"
)
CLIENT_KEY_SETTING = certs.FileSetting(
    "--client-key", "PLANELINK_CLIENT_KEY", "tls.secretName (its tls.key), or --tls-dir"
)
GATEWAY_CA_SETTING = certs.FileSetting(
    "--gateway-ca",
    "PLANELINK_GATEWAY_CA",
    "gatewayCA.secretName (default: the ca.crt of tls.secretName), or --tls-dir",
)


@dataclasses.dataclass(frozen=True, slots=True)
class AgentTlsFiles:
    """The agent's client certificate, its key, and the CAs it trusts for the gateway."""

    certificate: certs.CredentialFile
    key: certs.CredentialFile
    gateway_ca: certs.CredentialFile


def _default_agent_id() -> str:
    # In a pod, HOSTNAME is the pod name: stable for the pod's life, unique among replicas.
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AgentSettings:
    """Everything the agent needs to know; construct with keywords (validated)."""

    gateway_url: str = ""
    plane: str = ""
    agent_id: str = dataclasses.field(default_factory=_default_agent_id)
    tls_dir: Path = DEFAULT_TLS_DIR
    client_cert: Path | None = None
    client_key: Path | None = None
    gateway_ca: Path | None = None
    kubeconfig: Path | None = None
    kube_context: str | None = None
    in_cluster_root: Path = DEFAULT_IN_CLUSTER_ROOT
    upstream_connect_timeout: float = 10.0
    upstream_response_timeout: float = 60.0
    # Each open stream is an upstream connection here (HTTP/1.1: one exchange at a time);
    # a controller with thousands of watches through this plane needs more than 512.
    max_streams: int = 512
    # Below the concurrency a busy plane sees, connections are closed and reopened (a TLS
    # handshake each) between bursts; an idle TLS connection costs tens of KiB.
    pool_max_idle: int = 128
    pool_idle_timeout: float = 60.0
    upstream_http2: bool = True
    """Requests but upgrades go to the API server over HTTP/2 when it offers h2 in ALPN
    (`kubeproxy.H2Pool`): many on one connection, up to the server's stream limit. Upgrades,
    and servers that do not offer h2, stay on HTTP/1.1."""
    upstream_http2_max_connections: int = 64
    """HTTP/2 connections at most; beyond their streams requests wait. Each carries the API
    server's `--http2-max-streams-per-connection` (100 when unset): 64 of them hold 6,400
    watches at that default."""
    connect_timeout: float = 15.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    backoff_reset_after: float = 30.0
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    write_timeout: float = 30.0
    drain_grace: float = 25.0
    health_address: str = ":8080"
    max_tunnels: int = 32
    """At most this many tunnels at once: one per gateway replica (a gateway that names more
    live replicas gets tunnels to this many)."""
    replica_join_spread: float = 5.0
    """A newly announced gateway replica is first dialled after a random pause of up to this
    many seconds: every agent learns of it at once, and a fleet dialling it in the same instant
    looks like a flood to its admission limits (most of 2,000 such dials were refused)."""
    event_loop: str = "auto"
    """`auto`, `asyncio` or `uvloop` (`tunnel.event_loop`): read by `run_agent`."""

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise ValueError(problem)

    # -- derived values ---------------------------------------------------------------------

    @property
    def plane_ref(self) -> certs.PlaneRef:
        return certs.parse_plane_ref(self.plane)

    @property
    def connect_url(self) -> str:
        """The WebSocket URL the agent dials, with the plane in the query."""
        base = self.gateway_url.rstrip("/")
        return f"{base}{AGENT_CONNECT_PATH}?{PLANE_QUERY_PARAMETER}={quote(self.plane, safe='/')}"

    @property
    def client_cert_file(self) -> Path:
        return self.client_cert or self.tls_dir / "tls.crt"

    @property
    def client_key_file(self) -> Path:
        return self.client_key or self.tls_dir / "tls.key"

    @property
    def gateway_ca_file(self) -> Path:
        return self.gateway_ca or self.tls_dir / "ca.crt"

    @property
    def tls_files(self) -> AgentTlsFiles:
        """The three TLS files, each with the setting that names it (for error messages)."""
        return AgentTlsFiles(
            certificate=certs.CredentialFile(self.client_cert_file, CLIENT_CERT_SETTING),
            key=certs.CredentialFile(self.client_key_file, CLIENT_KEY_SETTING),
            gateway_ca=certs.CredentialFile(self.gateway_ca_file, GATEWAY_CA_SETTING),
        )

    @property
    def health_host_port(self) -> tuple[str | None, int]:
        """The health address as (host or None for all interfaces, port)."""
        host, _, port = self.health_address.rpartition(":")
        return (host.strip("[]") or None), int(port)


def _problem(settings: AgentSettings) -> str | None:
    return _identity_problem(settings) or _timing_problem(settings) or _address_problem(settings)


def _identity_problem(settings: AgentSettings) -> str | None:  # noqa: PLR0911 - one per check
    if not settings.gateway_url:
        return "the gateway URL is required (--gateway-url or PLANELINK_GATEWAY_URL)"
    url = urlsplit(settings.gateway_url)
    if url.scheme != "wss" or not url.hostname:
        return f"gateway URL {settings.gateway_url!r} must be wss://<host>[:port]"
    if url.query or url.fragment:
        return f"gateway URL {settings.gateway_url!r} must not have a query or fragment"
    if not settings.plane:
        return "the plane is required as <namespace>/<name> (--plane or PLANELINK_PLANE)"
    try:
        certs.parse_plane_ref(settings.plane)
    except ValueError as error:
        return f"plane {settings.plane!r}: {error}"
    if not settings.agent_id:
        return "the agent id must not be empty"
    return None


def _timing_problem(settings: AgentSettings) -> str | None:  # noqa: PLR0911 - one per check
    if not 0 < settings.heartbeat_interval < settings.heartbeat_timeout:
        return "heartbeat needs 0 < interval < timeout"
    if not 0 < settings.backoff_base <= settings.backoff_cap:
        return "backoff needs 0 < base <= cap"
    positive = (
        "connect_timeout",
        "upstream_connect_timeout",
        "upstream_response_timeout",
        "pool_idle_timeout",
        "drain_grace",
        "write_timeout",
    )
    for name in positive:
        if not getattr(settings, name) > 0:
            return f"{name} must be positive"
    if not 1 <= settings.max_streams <= 1_000_000:
        return "max_streams must be between 1 and 1000000"
    if not 1 <= settings.upstream_http2_max_connections <= 10_000:
        return "upstream_http2_max_connections must be between 1 and 10000"
    if not 1 <= settings.max_tunnels <= MAX_TUNNELS:
        return f"max_tunnels must be between 1 and {MAX_TUNNELS}"
    if settings.pool_max_idle < 0 or settings.backoff_reset_after < 0:
        return "pool_max_idle and backoff_reset_after must not be negative"
    return None


def _address_problem(settings: AgentSettings) -> str | None:
    try:
        _, port = settings.health_host_port
    except ValueError:
        return f"health address {settings.health_address!r} must be [host]:port"
    if not 0 <= port <= 65535:
        return f"health address {settings.health_address!r}: port out of range"
    return None
