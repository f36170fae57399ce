"""Several gateway replicas, one status: presence Leases with agent counts, and a leader.

Each replica sees only the agents connected to itself, so if every replica wrote status from
its own view, `Connected` would flap between their answers. Instead:

- every replica keeps a `coordination.k8s.io/v1` Lease of its own, `<prefix>-replica-<id>`,
  renewed every `renew_interval` and at once (at most every `publish_min_interval`) when its
  agents change; the annotation `planelink.dev/agents` holds `{"<ns>/<name>": count}`;
- one replica holds the Lease `<prefix>-leader` (compare-and-swap on its resourceVersion, as
  client-go's leader election does) and alone writes status and events, from its own counts
  plus those of every live peer Lease;
- a Lease is live while it keeps changing: liveness is judged by when *this* replica last saw
  it change, never by comparing clocks (as client-go does), so clock skew cannot kill a peer.

Every replica computes the same sum, so a change of leader cannot flip `Connected` either. A
replica that stops gracefully deletes its Lease and hands leadership over at once; one that
dies is forgotten after `lease_duration`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from certs import InvalidPlaneRefError, PlaneRef, parse_plane_ref
from gateway.reconciler.errors import Conflict, KubeError, NotFound
from gateway.reconciler.informer import Informer
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.settings import CoordinationSettings
from gateway.reconciler.store import Change, Store, resource_version
from kubeobject import KubeObject, ObjectRef
from protocol.backoff import BackoffPolicy

COUNTS_ANNOTATION = "planelink.dev/agents"
GROUP_LABEL = "planelink.dev/replica-of"
LEADER_LABEL = "planelink.dev/leader-of"
_FORGET_AFTER = 10
"""The leader deletes a peer Lease dead for this many lease durations."""

log = structlog.get_logger("gateway.reconciler.replicas")

Counts = Mapping[PlaneRef, int]


class Coordination(Protocol):
    """Whether this replica writes status, and what every replica's agents add up to."""

    @property
    def is_leader(self) -> bool: ...

    @property
    def synced(self) -> asyncio.Event: ...

    def peer_count(self, plane: PlaneRef) -> int:
        """Agents of `plane` connected to the *other* replicas."""
        ...

    def local_changed(self) -> None:
        """This replica's agents changed: publish soon."""
        ...

    async def run(self) -> None: ...

    async def release(self) -> None:
        """Leave: give up leadership and withdraw this replica's counts."""
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

    def peer_count(self, plane: PlaneRef) -> int:
        return 0

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
        local_counts: Callable[[], Counts],
        on_peer_counts: Callable[[Iterable[PlaneRef]], None],
        on_leadership: Callable[[bool], None],
        metrics: ReconcilerMetrics,
        backoff: BackoffPolicy,
    ) -> None:
        self._api = api
        self._settings = settings
        self._local_counts = local_counts
        self._on_peer_counts = on_peer_counts
        self._on_leadership = on_leadership
        self._metrics = metrics
        identity = _dns_label(settings.identity)
        self.own_lease = f"{settings.prefix}-replica-{identity}"
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
        self._peers: dict[PlaneRef, int] = {}
        self._own: KubeObject | None = None
        self._leading = False
        self._last_renewal = 0.0
        self._leader_seen: tuple[str, float] = ("", 0.0)
        self._publish = asyncio.Event()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._log = log.bind(replica=settings.identity)

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def synced(self) -> asyncio.Event:
        return self._informer.synced

    def peer_count(self, plane: PlaneRef) -> int:
        return self._peers.get(plane, 0)

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
        with contextlib.suppress(KubeError):
            await self._api.delete_lease(ns, self.own_lease)
        if self._leading:
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

    # -- peer counts --------------------------------------------------------------------------

    def _on_lease_change(self, change: Change) -> None:
        if change.new is None:
            self._seen.pop(change.key, None)
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
        totals: dict[PlaneRef, int] = {}
        for key, (_, changed_at) in list(self._seen.items()):
            lease = self._store.get(key)
            if lease is None or key.name == self.own_lease:
                continue
            duration = _duration(lease, self._settings.lease_duration)
            dead_for = time.monotonic() - changed_at - duration
            if dead_for >= 0:
                if self._leading and dead_for > _FORGET_AFTER * duration:
                    self._seen.pop(key, None)
                    task = asyncio.get_running_loop().create_task(self._forget_lease(key))
                    self._cleanups.add(task)
                    task.add_done_callback(self._cleanups.discard)
                continue
            for plane, count in _counts(lease).items():
                totals[plane] = totals.get(plane, 0) + count
        changed = {
            p for p in totals.keys() | self._peers.keys() if totals.get(p) != self._peers.get(p)
        }
        self._peers = totals
        if changed:
            self._on_peer_counts(changed)

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
        while True:
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
        ns, name = self._settings.namespace, self.own_lease
        counts = {str(plane): n for plane, n in sorted(self._local_counts().items(), key=str) if n}
        if self._own is None:
            try:
                self._own = await self._api.get_lease(ns, name)
            except NotFound:
                self._own = await self._api.create_lease(ns, self._lease_body(name, counts, None))
                return
        body = self._lease_body(name, counts, resource_version(self._own))
        try:
            self._own = await self._api.replace_lease(ns, name, body)
        except (Conflict, NotFound):
            self._own = None
            raise

    def _lease_body(self, name: str, counts: dict[str, int], version: str | None) -> KubeObject:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self._settings.namespace,
            "labels": {GROUP_LABEL: self._settings.prefix},
            "annotations": {COUNTS_ANNOTATION: json.dumps(counts, sort_keys=True)},
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
            try:
                leading = await self._try_acquire_or_renew()
            except KubeError as error:
                self._log.warning("leader lease not renewed", error=str(error))
                leading = self._leading and time.monotonic() - self._last_renewal < renew_deadline
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


def _counts(lease: KubeObject) -> dict[PlaneRef, int]:
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    try:
        raw = json.loads(annotations.get(COUNTS_ANNOTATION) or "{}")
        return {parse_plane_ref(plane): int(n) for plane, n in raw.items() if int(n) > 0}
    except (ValueError, TypeError, AttributeError, InvalidPlaneRefError):
        return {}


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


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:40] or "replica"
