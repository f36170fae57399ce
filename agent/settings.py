"""The agent's settings: one frozen value, filled from command-line flags and environment alike.

Every field names its environment variable and its help text in its metadata, so the CLI, the
docs and `AgentSettings.from_sources` never disagree. A flag wins over the environment, the
environment over the default. Validation happens on construction: an `AgentSettings` that
exists is usable (a `ValueError` names the offending setting otherwise).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import certs
from tunnel.contract import AGENT_CONNECT_PATH, PLANE_QUERY_PARAMETER

DEFAULT_TLS_DIR = Path("/etc/planelink/agent-tls")
DEFAULT_IN_CLUSTER_ROOT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _meta(
    *, env: str, help: str, group: str, metavar: str, parse: Callable[[str], Any] = str
) -> dict[str, Any]:
    """A field's metadata: its environment variable, help, CLI group and value parser."""
    return {"env": env, "help": help, "parse": parse, "group": group, "metavar": metavar}


def _default_agent_id() -> str:
    # In a pod, HOSTNAME is the pod name: stable for the pod's life, unique among replicas.
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


_GATEWAY = "gateway connection"
_UPSTREAM = "local API server"
_TIMING = "timing"
_SERVING = "health and metrics"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AgentSettings:
    """Everything the agent needs to know; construct with keywords (validated)."""

    gateway_url: str = dataclasses.field(
        default="",
        metadata=_meta(
            env="PLANELINK_GATEWAY_URL",
            group=_GATEWAY,
            metavar="URL",
            help="the gateway to dial, e.g. wss://gateway.example.com (required)",
        ),
    )
    plane: str = dataclasses.field(
        default="",
        metadata=_meta(
            env="PLANELINK_PLANE",
            group=_GATEWAY,
            metavar="NAMESPACE/NAME",
            help="the DataPlane this agent serves, as <namespace>/<name> (required)",
        ),
    )
    agent_id: str = dataclasses.field(
        default_factory=_default_agent_id,
        metadata=_meta(
            env="PLANELINK_AGENT_ID",
            group=_GATEWAY,
            metavar="ID",
            help="a stable id of this agent instance (default: the pod name)",
        ),
    )
    tls_dir: Path = dataclasses.field(
        default=DEFAULT_TLS_DIR,
        metadata=_meta(
            env="PLANELINK_TLS_DIR",
            parse=Path,
            group=_GATEWAY,
            metavar="DIR",
            help="folder of the mounted cluster-agent-tls Secret: tls.crt, tls.key and ca.crt "
            "(the gateway's CA); re-read at every connection attempt, so renewals need no restart",
        ),
    )
    client_cert: Path | None = dataclasses.field(
        default=None,
        metadata=_meta(
            env="PLANELINK_CLIENT_CERT",
            parse=Path,
            group=_GATEWAY,
            metavar="FILE",
            help="client certificate chain (default: <tls-dir>/tls.crt)",
        ),
    )
    client_key: Path | None = dataclasses.field(
        default=None,
        metadata=_meta(
            env="PLANELINK_CLIENT_KEY",
            parse=Path,
            group=_GATEWAY,
            metavar="FILE",
            help="client private key (default: <tls-dir>/tls.key)",
        ),
    )
    gateway_ca: Path | None = dataclasses.field(
        default=None,
        metadata=_meta(
            env="PLANELINK_GATEWAY_CA",
            parse=Path,
            group=_GATEWAY,
            metavar="FILE",
            help="CA certificates that sign the gateway's server certificate "
            "(default: <tls-dir>/ca.crt)",
        ),
    )
    kubeconfig: Path | None = dataclasses.field(
        default=None,
        metadata=_meta(
            env="PLANELINK_KUBECONFIG",
            parse=Path,
            group=_UPSTREAM,
            metavar="FILE",
            help="reach the API server with this kubeconfig instead of the in-cluster "
            "service account",
        ),
    )
    kube_context: str | None = dataclasses.field(
        default=None,
        metadata=_meta(
            env="PLANELINK_KUBE_CONTEXT",
            group=_UPSTREAM,
            metavar="NAME",
            help="the kubeconfig context to use (default: its current-context)",
        ),
    )
    in_cluster_root: Path = dataclasses.field(
        default=DEFAULT_IN_CLUSTER_ROOT,
        metadata=_meta(
            env="PLANELINK_IN_CLUSTER_ROOT",
            parse=Path,
            group=_UPSTREAM,
            metavar="DIR",
            help="service-account folder (token, ca.crt) used without --kubeconfig",
        ),
    )
    upstream_connect_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_meta(
            env="PLANELINK_UPSTREAM_CONNECT_TIMEOUT",
            parse=float,
            group=_UPSTREAM,
            metavar="SECONDS",
            help="time to open a connection (TCP + TLS) to the API server; beyond it: 504",
        ),
    )
    upstream_response_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_meta(
            env="PLANELINK_UPSTREAM_RESPONSE_TIMEOUT",
            parse=float,
            group=_UPSTREAM,
            metavar="SECONDS",
            help="time from sending a request to the API server's response head (not the "
            "body: watches and logs stream for as long as they like); beyond it: 504",
        ),
    )
    max_streams: int = dataclasses.field(
        # Each open stream is an upstream connection here (HTTP/1.1: one exchange at a time);
        # a controller with thousands of watches through this plane needs more than 512.
        default=512,
        metadata=_meta(
            env="PLANELINK_MAX_STREAMS",
            parse=int,
            group=_UPSTREAM,
            metavar="N",
            help="streams (requests, watches, exec sessions) the gateway may have open at "
            "once through this agent; beyond it the gateway tries another agent or answers 429",
        ),
    )
    pool_max_idle: int = dataclasses.field(
        # Below the concurrency a busy plane sees, connections are closed and reopened (a TLS
        # handshake each) between bursts; an idle TLS connection costs tens of KiB.
        default=128,
        metadata=_meta(
            env="PLANELINK_POOL_MAX_IDLE",
            parse=int,
            group=_UPSTREAM,
            metavar="N",
            help="idle keep-alive connections to the API server kept for reuse",
        ),
    )
    pool_idle_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_meta(
            env="PLANELINK_POOL_IDLE_TIMEOUT",
            parse=float,
            group=_UPSTREAM,
            metavar="SECONDS",
            help="an idle connection to the API server is closed after this long",
        ),
    )
    connect_timeout: float = dataclasses.field(
        default=15.0,
        metadata=_meta(
            env="PLANELINK_CONNECT_TIMEOUT",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="time for one connection attempt to the gateway (TCP, TLS, WebSocket handshake)",
        ),
    )
    backoff_base: float = dataclasses.field(
        default=1.0,
        metadata=_meta(
            env="PLANELINK_BACKOFF_BASE",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="reconnect delay ceiling after the first failure; it doubles per failure, and "
            "the actual delay is drawn uniformly below it (full jitter)",
        ),
    )
    backoff_cap: float = dataclasses.field(
        default=60.0,
        metadata=_meta(
            env="PLANELINK_BACKOFF_CAP",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="largest reconnect delay ceiling",
        ),
    )
    backoff_reset_after: float = dataclasses.field(
        default=30.0,
        metadata=_meta(
            env="PLANELINK_BACKOFF_RESET_AFTER",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="a tunnel that stayed up this long resets the delay after a lost tunnel to its "
            "base (a tunnel set up at all resets the delay after failed dials); shorter tunnels "
            "back off, so a gateway that accepts and drops at once is not hammered",
        ),
    )
    heartbeat_interval: float = dataclasses.field(
        default=10.0,
        metadata=_meta(
            env="PLANELINK_HEARTBEAT_INTERVAL",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="how often the agent pings the gateway through the tunnel",
        ),
    )
    heartbeat_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_meta(
            env="PLANELINK_HEARTBEAT_TIMEOUT",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="a tunnel silent for this long is dead (half-open): drop it and reconnect",
        ),
    )
    write_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_meta(
            env="PLANELINK_WRITE_TIMEOUT",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="a gateway that leaves what the agent sends unread this long is dropped "
            "(and redialed)",
        ),
    )
    drain_grace: float = dataclasses.field(
        default=25.0,
        metadata=_meta(
            env="PLANELINK_DRAIN_GRACE",
            parse=float,
            group=_TIMING,
            metavar="SECONDS",
            help="on SIGTERM, time given to in-flight requests before the tunnel is closed; "
            "keep it below the pod's terminationGracePeriodSeconds",
        ),
    )
    health_address: str = dataclasses.field(
        default=":8080",
        metadata=_meta(
            env="PLANELINK_HEALTH_ADDRESS",
            group=_SERVING,
            metavar="HOST:PORT",
            help="where /healthz, /readyz and /metrics are served (empty host: all interfaces)",
        ),
    )

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
    def health_host_port(self) -> tuple[str | None, int]:
        """The health address as (host or None for all interfaces, port)."""
        host, _, port = self.health_address.rpartition(":")
        return (host.strip("[]") or None), int(port)

    # -- construction from flags and environment -------------------------------------------

    @classmethod
    def from_sources(
        cls, *, flags: Mapping[str, str | None], environ: Mapping[str, str]
    ) -> AgentSettings:
        """Settings from flag values (field name -> text, None when not given) and the
        environment; each text is parsed by the field's parser. Raises ValueError naming
        the flag or variable whose value is wrong."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            env = field.metadata["env"]
            text, source = flags.get(field.name), "--" + field.name.replace("_", "-")
            if text is None and env in environ:
                text, source = environ[env], env
            if text is None:
                continue
            try:
                values[field.name] = field.metadata["parse"](text)
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from None
        return cls(**values)


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The fields of AgentSettings, with their metadata (env, help, group, metavar)."""
    return dataclasses.fields(AgentSettings)


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


def _timing_problem(settings: AgentSettings) -> str | None:
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
