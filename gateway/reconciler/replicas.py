"""Several gateway replicas, one status: presence Leases, and a leader.

Each replica sees only the agents connected to itself, so if every replica wrote status from
its own view, `Connected` would flap between their answers. Instead:

- every replica keeps a `coordination.k8s.io/v1` Lease of its own, `<prefix>-replica-<id>`,
  held by its replica id, renewed every `renew_interval` and at once (at most every
  `publish_min_interval`) when its agents change; its annotations (`presence`) say which agents
  it holds a tunnel from, per plane, and where its peers reach it;
- the live peer Leases are this replica's peers: they feed the gateway's `PeerSink` (which
  agents are told of, and callers' requests forwarded to) and status;
- one replica holds the Lease `<prefix>-leader` (compare-and-swap on its resourceVersion, as
  client-go's leader election does) and alone writes status and events, counting the
  *distinct* agents of its own and every live peer Lease (an agent keeps a tunnel to every
  replica: tunnels are not agents);
- a Lease is live while it keeps changing: liveness is judged by when *this* replica last saw
  it change, never by comparing clocks (as client-go does), so clock skew cannot kill a peer;
  and while this replica cannot see its own Lease change (its watch or the API server is
  down), time stops for that judgement (`liveness_horizon`): not seeing is no evidence.

Every replica computes the same union, so a change of leader cannot flip `Connected` either. A
replica that stops gracefully first deletes its Lease (it is no longer advertised: agents and
peers stop counting on it), then hands leadership over at once; one that dies is forgotten
after `lease_duration`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from certs import PlaneRef
from gateway.interfaces import PeerSink, Replica
from gateway.reconciler.errors import Conflict, KubeError, NotFound
from gateway.reconciler.informer import Informer
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.presence import (
    AGENTS_ANNOTATION,
    HOST_ANNOTATION,
    PEER_URL_ANNOTATION,
    Advertisement,
    PlaneAgents,
    advertise_agents,
    is_gateway_replica,
    read_replica,
)
from gateway.reconciler.settings import CoordinationSettings
from gateway.reconciler.store import Change, Store, resource_version
from kubeobject import KubeObject, ObjectRef
from protocol.backoff import BackoffPolicy

GROUP_LABEL = "planelink.dev/replica-of"
LEADER_LABEL = "planelink.dev/leader-of"
_FORGET_AFTER = 10
"""The leader deletes a peer Lease dead for this many lease durations."""
_NAME_PART_CHARS = 40
"""Longest replica id part of a Lease name (a longer id is shortened, with a hash)."""

log = structlog.get_logger("gateway.reconciler.replicas")


class Coordination(Protocol):
    """Whether this replica writes status, and what every replica's agents add up to."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def synced(self) -> asyncio.Event: ...

    def peer_agents(self, plane: PlaneRef) -> frozenset[str]:
        """The ids of the agents of `plane` connected to the *other* live replicas."""
        ...

    def local_changed(self) -> None:
        """This replica's agents (or its peer URL) changed: publish soon."""
        ...

    async def run(self) -> None: ...

    async def release(self) -> None:
        """Leave: stop being advertised first, then give up leadership. Call it before
        cancelling `run`: it waits for a Lease write in flight rather than racing it."""
        ...


class Solo:
    """The only replica: always the leader, no peers."""

    def __init__(self) -> None:
        self._synced = asyncio.Event()
        self._synced.set()

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def synced(self) -> asyncio.Event:
        return self._synced

    def peer_agents(self, plane: PlaneRef) -> frozenset[str]:
        return frozenset()

    def local_changed(self) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def release(self) -> None:
        pass


class Replicas:
    def __init__(
        self,
        api: KubeApi,
        settings: CoordinationSettings,
        *,
        local_planes: Callable[[], PlaneAgents],
        on_peer_agents: Callable[[Iterable[PlaneRef]], None],
        on_leadership: Callable[[bool], None],
        metrics: ReconcilerMetrics,
        backoff: BackoffPolicy,
        peers: PeerSink | None = None,
    ) -> None:
        if peers is not None and peers.own_id != settings.identity:
            raise ValueError(
                f"the Lease identity {settings.identity!r} is not the replica id {peers.own_id!r}"
            )
        self._api = api
        self._settings = settings
        self._local_planes = local_planes
        self._on_peer_agents = on_peer_agents
        self._on_leadership = on_leadership
        self._metrics = metrics
        self._peer_sink = peers
        self.own_lease = f"{settings.prefix}-replica-{lease_name_part(settings.identity)}"
        self.leader_lease = f"{settings.prefix}-leader"
        self._store = Store()
        self._informer = Informer(
            api.leases(settings.namespace, label_selector=f"{GROUP_LABEL}={settings.prefix}"),
            self._store,
            self._on_lease_change,
            backoff=backoff,
            metrics=metrics,
        )
        self._seen: dict[ObjectRef, tuple[str, float]] = {}
        """Per peer Lease: the resourceVersion last seen, and when (monotonic) it changed."""
        self._read: dict[ObjectRef, tuple[object, Replica | None]] = {}
        """Per peer Lease: what it said when last read (holder, annotations), and the replica
        that made."""
        self._peer_agents: dict[PlaneRef, frozenset[str]] = {}
        self._own: KubeObject | None = None
        self._leading = False
        self._leaving = False
        self._own_lock = asyncio.Lock()
        """Held by every write of this replica's Lease, so `release` deletes it after the last."""
        self._leader_lock = asyncio.Lock()
        """Held by every write of the leader Lease, so `release` hands over after the last."""
        self._last_renewal = 0.0
        self._leader_seen: tuple[str, float] = ("", 0.0)
        self._publish = asyncio.Event()
        self._advertised: tuple[PlaneAgents, Advertisement] | None = None
        self._left_out: tuple[int, tuple[PlaneRef, ...]] = (0, ())
        self._cleanups: set[asyncio.Task[None]] = set()
        self._log = log.bind(replica=settings.identity)

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def synced(self) -> asyncio.Event:
        return self._informer.synced

    def peer_agents(self, plane: PlaneRef) -> frozenset[str]:
        return self._peer_agents.get(plane, frozenset())

    def local_changed(self) -> None:
        self._publish.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._informer.run(), name="replica-leases-watch")
            group.create_task(self._publish_loop(), name="replica-lease-publish")
            group.create_task(self._election_loop(), name="leader-election")
            group.create_task(self._expiry_loop(), name="replica-lease-expiry")

    async def release(self) -> None:
        ns = self._settings.namespace
        self._leaving = True
        for task in list(self._cleanups):
            task.cancel()
        async with self._own_lock:  # after a write in flight, and no write after it
            with contextlib.suppress(KubeError):
                await self._api.delete_lease(ns, self.own_lease)
            self._own = None
        async with self._leader_lock:
            if not self._leading:
                return
            self._set_leading(False)
            with contextlib.suppress(KubeError):
                lease = await self._api.get_lease(ns, self.leader_lease)
                spec = lease.get("spec") or {}
                if spec.get("holderIdentity") == self._settings.identity:
                    lease["spec"] = {
                        **spec,
                        "holderIdentity": None,
                        "leaseDurationSeconds": 1,
                        "renewTime": _micro(datetime.now(UTC)),
                    }
                    await self._api.replace_lease(ns, self.leader_lease, lease)

    # -- the peers ----------------------------------------------------------------------------

    def _on_lease_change(self, change: Change) -> None:
        if change.new is None:
            self._seen.pop(change.key, None)
            self._read.pop(change.key, None)
        else:
            version = resource_version(change.new)
            previous = self._seen.get(change.key)
            if previous is None:
                age = _age(change.new, self._settings.lease_duration)
                self._seen[change.key] = (version, time.monotonic() - age)
            elif previous[0] != version:
                self._seen[change.key] = (version, time.monotonic())
        self._recompute()

    def _recompute(self) -> None:
        live: list[Replica] = []
        peers: list[Replica] = []
        own = self._seen.get(ObjectRef(self._settings.namespace, self.own_lease))
        now = liveness_horizon(
            time.monotonic(),
            own_changed_at=None if own is None else own[1],
            own_duration=self._settings.lease_duration,
        )
        for key, (_, changed_at) in sorted(self._seen.items()):
            lease = self._store.get(key)
            if lease is None or key.name == self.own_lease:
                continue
            duration = _duration(lease, self._settings.lease_duration)
            dead_for = now - changed_at - duration
            if dead_for >= 0:
                if self._leading and dead_for > _FORGET_AFTER * duration and not self._leaving:
                    self._seen.pop(key, None)
                    self._read.pop(key, None)
                    task = asyncio.get_running_loop().create_task(self._forget_lease(key))
                    self._cleanups.add(task)
                    task.add_done_callback(self._cleanups.discard)
                continue
            replica = self._replica(key, lease)
            if replica is not None and replica.id != self._settings.identity:
                live.append(replica)
                if is_gateway_replica(lease):
                    peers.append(replica)
        agents: dict[PlaneRef, frozenset[str]] = {}
        for replica in live:
            for plane, ids in replica.planes.items():
                agents[plane] = agents.get(plane, frozenset()) | ids
        changed = {
            p
            for p in agents.keys() | self._peer_agents.keys()
            if agents.get(p) != self._peer_agents.get(p)
        }
        self._peer_agents = agents
        if self._peer_sink is not None:
            self._peer_sink.replace_peers(peers)
        if changed:
            self._on_peer_agents(changed)

    def _replica(self, key: ObjectRef, lease: KubeObject) -> Replica | None:
        """The replica a peer Lease advertises, read again only when that changed (a renewal
        changes its time alone: a large annotation is not parsed, nor a bad one logged, again
        every few seconds)."""
        said = (
            (lease.get("spec") or {}).get("holderIdentity"),
            (lease.get("metadata") or {}).get("annotations"),
        )
        read = self._read.get(key)
        if read is not None and read[0] == said:
            return read[1]
        replica = read_replica(lease, max_ids=self._settings.max_agent_ids_per_plane)
        if replica is None:
            self._log.warning("replica lease without a replica id ignored", lease=key.name)
        elif key.name not in lease_names(self._settings.prefix, replica.id):
            # Only the Lease named after a replica speaks for it: another cannot claim its id
            # (and its peer URL) while the real one renews its own.
            self._log.warning(
                "replica lease held under another replica's id ignored",
                lease=key.name,
                holder=replica.id,
            )
            replica = None
        self._read[key] = (said, replica)
        return replica

    async def _forget_lease(self, key: ObjectRef) -> None:
        with contextlib.suppress(KubeError):
            await self._api.delete_lease(key.namespace, key.name)
            self._log.info("dead replica lease deleted", lease=key.name)

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.renew_interval / 2)
            self._recompute()

    # -- this replica's Lease -----------------------------------------------------------------

    async def _publish_loop(self) -> None:
        last = -math.inf
        while not self._leaving:
            await asyncio.sleep(
                max(0.0, last + self._settings.publish_min_interval - time.monotonic())
            )
            self._publish.clear()
            last = time.monotonic()
            try:
                await self._put_own_lease()
            except KubeError as error:
                self._own = None
                self._log.warning("replica lease not renewed", error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._publish.wait(), self._settings.renew_interval)

    async def _put_own_lease(self) -> None:
        async with self._own_lock:
            if self._leaving:
                return
            ns, name = self._settings.namespace, self.own_lease
            annotations = self._annotations()
            if self._own is None:
                try:
                    self._own = await self._api.get_lease(ns, name)
                except NotFound:
                    body = self._lease_body(name, annotations, None)
                    self._own = await self._api.create_lease(ns, body)
                    return
            body = self._lease_body(name, annotations, resource_version(self._own))
            try:
                self._own = await self._api.replace_lease(ns, name, body)
            except (Conflict, NotFound):
                self._own = None
                raise

    def _annotations(self) -> dict[str, str]:
        """What this replica advertises now, within the bounds of one Lease."""
        settings = self._settings
        planes = self._local_planes()
        if self._advertised is not None and self._advertised[0] == planes:
            advertised = self._advertised[1]  # a renewal: the same text as last time
        else:
            advertised = advertise_agents(
                planes,
                max_ids=settings.max_agent_ids_per_plane,
                max_bytes=settings.max_agents_annotation_bytes,
            )
            self._advertised = (planes, advertised)
        self._metrics.lease_left_out.labels(what="agent_ids").set(advertised.ids_left_out)
        self._metrics.lease_left_out.labels(what="planes").set(len(advertised.planes_left_out))
        left_out = (advertised.ids_left_out, advertised.planes_left_out)
        if left_out != self._left_out and (left_out[0] or left_out[1]):
            self._log.warning(
                "replica lease cannot advertise every agent: status counts fewer",
                agent_ids_left_out=advertised.ids_left_out,
                max_agent_ids_per_plane=settings.max_agent_ids_per_plane,
                planes_left_out=[str(p) for p in advertised.planes_left_out[:10]],
                planes_left_out_count=len(advertised.planes_left_out),
            )
        self._left_out = left_out
        annotations = {AGENTS_ANNOTATION: advertised.text}
        if self._peer_sink is not None:
            own = self._peer_sink.local()
            annotations[PEER_URL_ANNOTATION] = own.peer_url
            annotations[HOST_ANNOTATION] = own.host
        return annotations

    def _lease_body(
        self, name: str, annotations: dict[str, str], version: str | None
    ) -> KubeObject:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self._settings.namespace,
            "labels": {GROUP_LABEL: self._settings.prefix},
            "annotations": annotations,
        }
        if version:
            metadata["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self._settings.identity,
                "leaseDurationSeconds": max(1, math.ceil(self._settings.lease_duration)),
                "renewTime": _micro(datetime.now(UTC)),
            },
        }

    # -- leader election ----------------------------------------------------------------------

    async def _election_loop(self) -> None:
        renew_deadline = self._settings.lease_duration * 2 / 3
        while True:
            async with self._leader_lock:  # so that `release` hands over after the last renewal
                if self._leaving:
                    return
                try:
                    leading = await self._try_acquire_or_renew()
                except KubeError as error:
                    self._log.warning("leader lease not renewed", error=str(error))
                    recent = time.monotonic() - self._last_renewal < renew_deadline
                    leading = self._leading and recent
                if leading:
                    self._last_renewal = time.monotonic()
                self._set_leading(leading)
            await asyncio.sleep(self._settings.renew_interval)

    async def _try_acquire_or_renew(self) -> bool:
        ns, name, me = self._settings.namespace, self.leader_lease, self._settings.identity
        now = _micro(datetime.now(UTC))
        duration = max(1, math.ceil(self._settings.lease_duration))
        try:
            lease = await self._api.get_lease(ns, name)
        except NotFound:
            first = {"holderIdentity": me, "leaseDurationSeconds": duration}
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {LEADER_LABEL: self._settings.prefix},
                },
                "spec": {**first, "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }
            try:
                await self._api.create_lease(ns, body)
            except Conflict:
                return False
            return True
        spec: dict[str, Any] = lease.get("spec") or {}
        version = resource_version(lease)
        if version != self._leader_seen[0]:
            self._leader_seen = (version, time.monotonic())
        holder = spec.get("holderIdentity")
        expired = time.monotonic() - self._leader_seen[1] >= _duration(lease, duration)
        if holder and holder != me and not expired:
            return False
        new_spec: dict[str, Any] = {
            **spec,
            "holderIdentity": me,
            "leaseDurationSeconds": duration,
            "renewTime": now,
        }
        if holder != me:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            await self._api.replace_lease(ns, name, {**lease, "spec": new_spec})
        except (Conflict, NotFound):
            return False
        return True

    def _set_leading(self, leading: bool) -> None:
        if leading == self._leading:
            return
        self._leading = leading
        self._metrics.leader.set(1 if leading else 0)
        self._log.info("leadership changed", leading=leading)
        self._on_leadership(leading)


def liveness_horizon(now: float, *, own_changed_at: float | None, own_duration: float) -> float:
    """The moment peers' Leases are judged live or dead at: `now`, or, while this replica has
    not seen its own Lease change for `own_duration` (its watch, or the API server, is down:
    it cannot see anyone's renewals), the last moment it could see. A replica that is blind
    keeps its peers rather than declare them all dead, which would tell every agent to drop
    its tunnels to them and every caller's request to go nowhere."""
    if own_changed_at is None:
        return now  # not written yet (starting) or withdrawn (leaving)
    return min(now, own_changed_at + own_duration)


def _duration(lease: KubeObject, default: float) -> float:
    value = (lease.get("spec") or {}).get("leaseDurationSeconds")
    return float(value) if isinstance(value, int) and value > 0 else default


def _age(lease: KubeObject, duration: float) -> float:
    """How long ago a Lease seen for the first time was renewed, by its own clock, capped."""
    renewed = (lease.get("spec") or {}).get("renewTime")
    try:
        when = datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return min(max((datetime.now(UTC) - when).total_seconds(), 0.0), duration)


def _micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_names(prefix: str, identity: str) -> frozenset[str]:
    """The names the Lease of replica `identity` may have: today's, and that of a replica
    before scale-out (its id cut to 40 characters)."""
    legacy = re.sub(r"[^a-z0-9-]+", "-", identity.lower()).strip("-")[:_NAME_PART_CHARS]
    return frozenset(
        f"{prefix}-replica-{part}" for part in (lease_name_part(identity), legacy or "replica")
    )


def lease_name_part(identity: str) -> str:
    """`identity` as part of a Lease name: itself if it is a short DNS label, else a label made
    of it plus a hash of the whole, so distinct ids (`<pod>-w0`, `<pod>-w1` of a long pod name)
    never share a Lease."""
    label = re.sub(r"[^a-z0-9-]+", "-", identity.lower()).strip("-")
    if label == identity and len(label) <= _NAME_PART_CHARS:
        return label
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{label[: _NAME_PART_CHARS - 11]}-{digest}".lstrip("-")
