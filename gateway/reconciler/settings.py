"""What the reconciler can be told; filled from flags and the environment by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.backoff import BackoffPolicy


@dataclass(frozen=True)
class CoordinationSettings:
    """How several gateway replicas agree on status (see `gateway.reconciler.replicas`).

    Each replica keeps a Lease of its own, `<prefix>-replica-<identity>`, whose annotations
    carry the ids of its connected agents per plane and where its peers reach it; the replica
    holding `<prefix>-leader` counts the distinct agents of the live ones and alone writes
    status and events.
    """

    namespace: str
    """Namespace of the Leases (usually the gateway's own)."""
    identity: str
    """This replica's unique name (the pod name)."""
    prefix: str = "planelink-gateway"
    lease_duration: float = 15.0
    """A Lease not renewed for this long is dead; its counts no longer count."""
    renew_interval: float = 5.0
    """How often leases are renewed (and the leader retries), a fraction of the duration."""
    publish_min_interval: float = 0.5
    """Agent changes are published at once, but at most this often."""
    max_agent_ids_per_plane: int = 16
    """Agent ids of one plane advertised in this replica's Lease at most (and read from a
    peer's): status counts at most this many agents of a plane per replica."""
    max_agents_annotation_bytes: int = 200_000
    """Size of this replica's `planelink.dev/agents` annotation at most (the API server takes
    256 KiB of annotations per object); planes beyond are left out of it, logged and counted."""


@dataclass(frozen=True)
class ReconcilerSettings:
    namespaces: tuple[str, ...] = ()
    """Watch DataPlanes in these namespaces; empty means all namespaces."""
    secret_watches: int = 64
    """Referenced Secrets watched at most (each watch holds a connection of the client's pool
    of 100); a Secret beyond is read whenever its DataPlane is reconciled, at least on resync."""
    cross_namespace_secrets: bool = False
    """Let a DataPlane's secretRef name a Secret in another namespace. Off: a DataPlane reads
    only Secrets of its own namespace, so whoever may write one cannot make the gateway use
    (or send to a server they chose) a credential of a namespace they cannot read."""
    workers: int = 4
    """Objects reconciled in parallel (one object is never reconciled twice at once)."""
    probe_interval: float = 30.0
    """Seconds between probes of a directly reached plane's API server."""
    probe_timeout: float = 5.0
    status_min_interval: float = 1.0
    """Status of one object is written at most this often."""
    resync_interval: float = 300.0
    """Every object is reconciled again this often, whatever happened."""
    watch_timeout: int = 300
    """Server-side timeout of one watch request (seconds); a new watch follows at once."""
    request_timeout: float = 10.0
    """Deadline of every request to the control plane but a watch (seconds)."""
    watch_backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=0.2, cap=2.0))
    """Delays between attempts to list and watch again after a failure. Capped low: the gateway
    cannot say which planes exist until its first list succeeds, and every second of this
    delay after the control plane returns is a second of refused callers and agents (a
    failed attempt against an API server that is down costs it nothing)."""
    write_status: bool = True
    """False: follow DataPlanes and feed trust, but never write status or events."""
    require_identity: bool = True
    """Demand that agent certificates name their plane. A DataPlane opts out with the annotation
    `planelink.dev/require-agent-identity: "false"` (and, when this is False, opts in with
    "true"); see `gateway.reconciler.resolve.require_identity`."""
    rejection_event_interval: float = 30.0
    """An agent rejected again and again for one plane and reason is told in at most one Event
    write per this many seconds (the Event's count says how often it happened)."""
    component: str = "planelink-gateway"
    """`source.component` of the Events written."""
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=0.5, cap=30.0))
    """Delays between retries of one DataPlane's reconcile and of the coordination Leases.
    Like every backoff here, full jitter (`protocol.backoff`): replicas that failed together do
    not retry together, and a retry may come at once (the ceiling still doubles)."""
    coordination: CoordinationSettings | None = None
    """None: this is the only replica and writes status from its own agents."""
