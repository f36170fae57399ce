"""What the reconciler may know of the gateway: the values it hands over and the ports it uses.

The reconciler (`gateway.reconciler`) resolves DataPlanes into values — a plane's `PlaneTrust`,
a direct plane's `DirectCredentials` — and hands them to the gateway through the ports below;
`gateway.app` wires the concrete objects (`gateway.trust.TrustRegistry`,
`gateway.agents.AgentRegistry`, `gateway.direct.DirectPlanes`). An import contract keeps the
reconciler from importing any other gateway module, and this module imports no gateway module
at all: it is plain values and `typing.Protocol`s, with no I/O and no state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from cryptography import x509

from certs import PlaneRef

Mode = Literal["agent", "direct"]
"""How callers reach a plane: through its agents, or the gateway dials its API server."""


@dataclass(frozen=True)
class PlaneTrust:
    """What an agent of `plane` must present."""

    plane: PlaneRef
    client_cas: tuple[x509.Certificate, ...]
    """CA certificates (or pinned self-signed agent certificates) from spec.agent.clientCA."""
    require_identity: bool = True
    """Demand that the certificate names the plane (URI SAN `planelink://plane/<ns>/<name>`, or
    CN `<ns>/<name>` in a certificate without SANs). Off only by an explicit opt-out: without
    it, one CA shared by several planes lets any of their agents serve any of those planes."""
    source: str = "static"
    """Where this trust came from, for /planes and logs."""
    issues: tuple[str, ...] = field(default=())
    """Why agents of this plane cannot be accepted (e.g. the CA could not be read), if so."""
    mode: Mode = "agent"
    """How callers reach the plane: through its agents, or the gateway dials its API server."""

    @property
    def accepts_agents(self) -> bool:
        return bool(self.client_cas) and not self.issues


@dataclass(frozen=True)
class DirectCredentials:
    """How to reach a directly connected plane's API server (secrets left out of repr)."""

    server: str
    ca_pem: bytes = field(repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)

    @property
    def auth(self) -> str:
        return "bearerToken" if self.bearer_token is not None else "mtls"


class TrustSink(Protocol):
    """Where the reconciler puts each plane's trust (`gateway.trust.TrustRegistry`)."""

    def get(self, plane: PlaneRef) -> PlaneTrust | None: ...

    def set_plane(self, trust: PlaneTrust) -> None: ...

    def remove_plane(self, plane: PlaneRef) -> None: ...


@dataclass(frozen=True)
class PlaneCondition:
    """One condition of a plane's DataPlane as its status holds it (`Ready`, `Connected`,
    `GatewayProvisioned`), for operators to read on the console."""

    type: str
    status: str
    """`True`, `False` or `Unknown`."""
    reason: str
    message: str
    last_transition: str = ""
    """`lastTransitionTime` as written (RFC 3339), "" if absent."""


class ConditionSink(Protocol):
    """Where the reconciler puts each DataPlane's conditions as the control plane holds them
    (`gateway.console.conditions.PlaneConditions`): every replica feeds its own from the watch,
    whichever of them writes status."""

    def set_conditions(self, plane: PlaneRef, conditions: Sequence[PlaneCondition]) -> None: ...

    def remove_conditions(self, plane: PlaneRef) -> None: ...


class ConnectedAgent(Protocol):
    @property
    def plane(self) -> PlaneRef: ...

    @property
    def agent_id(self) -> str:
        """The agent's id (its pod name): the same on each of its tunnels, to every replica."""
        ...


class AgentView(Protocol):
    """What the reconciler reads of the connected agents (`gateway.agents.AgentRegistry`)."""

    def agents(self, plane: PlaneRef) -> Sequence[ConnectedAgent]: ...

    def all_agents(self) -> Iterator[ConnectedAgent]: ...

    def wait_for_change(self) -> Awaitable[object]: ...


@dataclass(frozen=True)
class PlaneAnswer:
    """A direct plane's API server's answer to one GET: its status and the start of its body."""

    url: str
    status: int
    body: str


class PlaneUnreachable(Exception):
    """A GET to a direct plane's API server got no answer.

    `kind` says why: `tls` (the handshake failed), `timeout`, or another short word for a
    connection that could not be made or broke (`connect`, `closed`, `protocol`...).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class DirectPlaneSink(Protocol):
    """Where the reconciler puts direct planes' credentials, and how it reaches their API
    servers to probe them (`gateway.direct.DirectPlanes`: the pool callers use too)."""

    def set(self, plane: PlaneRef, credentials: DirectCredentials) -> bool:
        """Serve `plane` with `credentials` from now on; whether they changed."""
        ...

    def remove(self, plane: PlaneRef) -> bool:
        """Stop serving `plane`; whether it was served."""
        ...

    def serves(self, plane: PlaneRef) -> bool: ...

    async def fetch(self, plane: PlaneRef, path: str, *, limit: float) -> PlaneAnswer:
        """GET `path` from the plane's API server within `limit` seconds, as a caller's request
        would go. Raises PlaneUnreachable, and KeyError for a plane not served."""
        ...


@dataclass(frozen=True)
class Replica:
    """One gateway replica (a pod, or one worker process of it) as its presence says.

    Presence comes from a source shared by all replicas — the replicas' Leases
    (`gateway.reconciler.replicas`) or, for the workers of one host without a control plane,
    files in a shared directory (`gateway.peers.files`) — and is what lets any replica serve any
    plane: agents keep a tunnel to every live replica, and a replica without a tunnel to a plane
    forwards to one that has.
    """

    id: str
    """Unique among the live replicas (the pod name; `<pod>-w<i>` for worker i)."""
    peer_url: str = ""
    """`https://<address>:<port>` of its peer listener, where other replicas forward callers'
    requests ("" when it has none: it can hold tunnels but cannot be forwarded to)."""
    host: str = ""
    """The pod (or host) it runs in: the workers of one gateway share it."""
    planes: Mapping[PlaneRef, frozenset[str]] = field(default_factory=dict)
    """The planes it holds a tunnel to, each with the ids of the agents at the other end."""


class PeerSink(Protocol):
    """Where a presence source puts the live replicas other than this one
    (`gateway.peers.PeerDirectory`)."""

    @property
    def own_id(self) -> str: ...

    def replace_peers(self, peers: Iterable[Replica]) -> None:
        """The live peers are now exactly `peers` (this replica's own entry is ignored)."""
        ...

    def local(self) -> Replica:
        """This replica as it is to be advertised now."""
        ...
