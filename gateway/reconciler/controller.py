"""The DataPlane reconciler: watches DataPlanes and the Secrets they name, feeds trust, writes
status.

For every DataPlane key the work queue hands out, `_reconcile` (one worker per key at a time):

1. reads the object from the watch cache (absent: the plane is forgotten — trust removed);
2. parses it with the `crd` models and resolves its credentials from the Secret cache
   (`resolve`, pure), then feeds the gateway's trust and direct planes (through the ports of
   `gateway.interfaces`);
3. if this replica writes status: works out `Connected` (the distinct agents of every live
   replica, or a probe of the API server in direct mode), and writes the conditions and the
   events of their transitions.

Keys are queued by DataPlane events, by events of Secrets they reference (the index maps a
Secret back to its DataPlanes; only referenced Secrets are watched, see `secrets`), by agent
connects and disconnects (`AgentRegistry`), by peer
replicas' agents, by probe timers and by a periodic resync. Caches are filled (first list
done) before any key is reconciled, so no plane is ever judged on a half-read cluster.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from certs import InvalidPlaneRefError, PlaneRef, plane_ref
from crd import DataPlane
from gateway.interfaces import (
    AgentView,
    ConditionSink,
    DirectPlaneSink,
    PeerSink,
    PlaneTrust,
    TrustSink,
)
from gateway.reconciler import conditions
from gateway.reconciler.conditions import ProbeResult, Verdict
from gateway.reconciler.direct import probe
from gateway.reconciler.events import EventRecorder, EventSpec, transitions
from gateway.reconciler.informer import ChangeHandler, Informer
from gateway.reconciler.kube import KubeApi, ListWatch
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.rejections import RejectionEvents
from gateway.reconciler.replicas import Coordination, Replicas, Solo
from gateway.reconciler.resolve import (
    Resolution,
    SecretData,
    invalid_spec,
    require_identity,
    resolve,
    secret_refs,
)
from gateway.reconciler.secrets import SecretWatches
from gateway.reconciler.settings import ReconcilerSettings
from gateway.reconciler.status import Result, StatusWriter
from gateway.reconciler.store import Change, Store
from gateway.reconciler.workqueue import WorkQueue
from kubeobject import KubeObject, ObjectRef

log = structlog.get_logger("gateway.reconciler")

_CONFLICT_RETRY = 1.0
"""After a 409 the watch brings the newer object; this is only the safety net."""


@dataclass(frozen=True)
class _Probe:
    result: ProbeResult
    at: float


class Reconciler:
    """Follows DataPlanes; `start()` returns once the caches are filled, `stop()` ends it all."""

    def __init__(
        self,
        *,
        client: ApiClient,
        trust: TrustSink,
        agents: AgentView,
        direct: DirectPlaneSink,
        settings: ReconcilerSettings | None = None,
        registry: CollectorRegistry | None = None,
        peers: PeerSink | None = None,
        conditions: ConditionSink | None = None,
    ) -> None:
        """`peers`, with coordination on, is told the live peer replicas from their Leases,
        and says what this replica's Lease advertises besides its agents (its peer URL);
        `conditions` is told each DataPlane's conditions as its status holds them (on every
        replica, from the watch: whichever replica wrote them)."""
        self.settings = settings = settings or ReconcilerSettings()
        self.api = KubeApi(
            client, watch_timeout=settings.watch_timeout, request_timeout=settings.request_timeout
        )
        self.metrics = ReconcilerMetrics(registry or CollectorRegistry(auto_describe=True))
        self.trust = trust
        self.direct = direct
        self.conditions = conditions
        self.dataplanes = Store()
        self.secrets = SecretWatches(
            self.api,
            self._on_secret,
            limit=settings.secret_watches,
            backoff=settings.backoff,
            metrics=self.metrics,
        )
        self.ready = asyncio.Event()
        """Set once every cache is filled and every DataPlane of the first list has been
        resolved into trust once: from then on, a plane absent from trust does not exist."""
        self._first_list: set[ObjectRef] = set()
        """DataPlanes of the first list not yet resolved into trust."""
        self._first_list_fed = asyncio.Event()
        self._agents = agents
        self._queue: WorkQueue[ObjectRef] = WorkQueue(retry=settings.backoff)
        scopes: Sequence[str | None] = settings.namespaces or (None,)
        self._dataplane_informers = [
            self._informer(self.api.dataplanes(ns), self.dataplanes, self._on_dataplane)
            for ns in scopes
        ]
        self._refs: dict[ObjectRef, frozenset[ObjectRef]] = {}
        self._referrers: dict[ObjectRef, set[ObjectRef]] = {}
        self._fed: set[PlaneRef] = set()
        self._probes: dict[ObjectRef, _Probe] = {}
        self._local: dict[PlaneRef, frozenset[str]] = {}
        """This replica's agents' ids per plane, as last published."""
        identity = settings.coordination.identity if settings.coordination else _hostname()
        self._status = StatusWriter(
            self.api, self.metrics, min_interval=settings.status_min_interval
        )
        self._events = EventRecorder(
            self.api, self.metrics, component=settings.component, instance=identity
        )
        self._rejections = RejectionEvents(
            self._record_rejection, interval=settings.rejection_event_interval
        )
        self.coordination: Coordination = (
            Replicas(
                self.api,
                settings.coordination,
                local_planes=lambda: dict(self._local),
                on_peer_agents=self._enqueue_planes,
                on_leadership=self._on_leadership,
                metrics=self.metrics,
                backoff=settings.watch_backoff,
                peers=peers,
            )
            if settings.coordination is not None
            else Solo()
        )
        self._task: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching; returns when the caches are filled (wrap in a timeout to bound it)."""
        if self._task is not None:
            raise RuntimeError("the reconciler was started already")
        self._task = asyncio.create_task(self._run(), name="dataplane-reconciler")
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            self._task.result()  # raises what ended it

    async def stop(self) -> None:
        """Stop being advertised (this replica's Lease goes first), hand leadership over, then
        stop every loop."""
        await self.coordination.release()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.secrets.stop()

    async def settle(self) -> None:
        """Until every queued key has been reconciled (for one-shot runs and tests)."""
        await self._queue.wait_idle()

    async def __aenter__(self) -> Reconciler:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.coordination.run(), name="coordination")
            await self.coordination.synced.wait()
            for informer in self._dataplane_informers:
                group.create_task(informer.run(), name="dataplanes-watch")
            await _all_set([i.synced for i in self._dataplane_informers])
            self._first_list = set(self.dataplanes.all_keys())
            if not self._first_list:
                self._first_list_fed.set()
            group.create_task(self._follow_agents(), name="follow-agents")
            group.create_task(
                self._queue.run(self._reconcile, workers=self.settings.workers), name="workers"
            )
            group.create_task(self._resync(), name="resync")
            if self.settings.write_status:
                group.create_task(self._rejections.run(), name="rejection-events")
            await self._first_list_fed.wait()
            self.ready.set()
            log.info(
                "reconciler ready",
                dataplanes=len(self.dataplanes),
                namespaces=list(self.settings.namespaces) or "all",
                writes_status=self.settings.write_status,
            )

    def _informer(self, source: ListWatch, store: Store, handler: ChangeHandler) -> Informer:
        return Informer(
            source, store, handler, backoff=self.settings.watch_backoff, metrics=self.metrics
        )

    # -- rejected agents ----------------------------------------------------------------------

    def agent_rejected(self, plane: PlaneRef, reason: str, message: str) -> None:
        """The gateway turned an agent of `plane` away: tell it on the DataPlane (rate-limited;
        every replica tells its own rejections, as only it saw them)."""
        if self.settings.write_status:
            self._rejections.note(plane, reason, message)

    async def _record_rejection(self, plane: PlaneRef, event: EventSpec, times: int) -> None:
        obj = self.dataplanes.get(plane)
        if obj is not None:  # none: the plane is unknown or gone, and there is nothing to tell
            await self._events.record(obj, event, times=times)

    # -- what queues keys ---------------------------------------------------------------------

    def _on_dataplane(self, change: Change) -> None:
        self._queue.add(change.key)

    def _on_secret(self, change: Change) -> None:
        if (change.old or {}).get("data") == (change.new or {}).get("data") and (
            change.old is not None and change.new is not None
        ):
            return  # only metadata changed
        for key in self._referrers.get(change.key, ()):
            self._queue.add(key)

    def _enqueue_planes(self, planes: Iterable[PlaneRef]) -> None:
        for plane in planes:
            if self.dataplanes.get(plane) is not None:
                self._queue.add(plane)

    def _on_leadership(self, leading: bool) -> None:
        if leading:
            for key in self.dataplanes.all_keys():
                self._queue.add(key)

    async def _follow_agents(self) -> None:
        """Event-driven: every connect or disconnect re-queues the planes whose agents moved."""
        while True:
            ids: dict[PlaneRef, set[str]] = {}
            for agent in self._agents.all_agents():
                ids.setdefault(agent.plane, set()).add(agent.agent_id)
            local = {plane: frozenset(agent_ids) for plane, agent_ids in ids.items()}
            moved = {
                p for p in local.keys() | self._local.keys() if local.get(p) != self._local.get(p)
            }
            self._local = local
            if moved:
                self.coordination.local_changed()
                self._enqueue_planes(moved)
            await self._agents.wait_for_change()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            for key in self.dataplanes.all_keys():
                self._queue.add(key)

    # -- one key ------------------------------------------------------------------------------

    async def _reconcile(self, key: ObjectRef) -> None:
        plane_log = log.bind(plane=str(key))
        obj = self.dataplanes.get(key)
        if obj is None:
            self._forget(key, plane_log)
            self._resolved_once(key)
            self.metrics.reconciles.labels(result="deleted").inc()
            return
        try:
            plane = plane_ref(key.namespace, key.name)
        except InvalidPlaneRefError as error:
            plane_log.warning("dataplane name cannot name a plane", error=str(error))
            self._resolved_once(key)
            self.metrics.reconciles.labels(result="invalid").inc()
            return
        try:
            try:
                resolution = await self._resolve(key, plane, obj)
                self._feed(key, plane, resolution, plane_log)
            finally:
                # Even a failed attempt counts: one plane whose Secret cannot be read must not
                # keep the gateway "starting" for every other plane (the retry still comes).
                self._resolved_once(key)
            if self.settings.write_status and self.coordination.is_leader:
                await self._write_status(key, plane, obj, resolution, plane_log)
            self._show_conditions(plane, self.dataplanes.get(key) or obj)
        except Exception:
            self.metrics.reconciles.labels(result="error").inc()
            raise
        self.metrics.reconciles.labels(result="ok").inc()

    def _resolved_once(self, key: ObjectRef) -> None:
        if key in self._first_list:
            self._first_list.discard(key)
            if not self._first_list:
                self._first_list_fed.set()

    async def _resolve(self, key: ObjectRef, plane: PlaneRef, obj: KubeObject) -> Resolution:
        try:
            dataplane = DataPlane.model_validate(obj)
        except ValidationError as error:
            self._index(key, frozenset())
            return invalid_spec(plane, _first_error(error))
        cross_namespace = self.settings.cross_namespace_secrets
        refs = secret_refs(dataplane, cross_namespace=cross_namespace)
        self._index(key, refs)
        secrets = {ref: await self._secret(ref) for ref in refs}
        return resolve(
            plane,
            dataplane,
            secrets,
            now=datetime.now(UTC),
            require_identity=require_identity(dataplane, default=self.settings.require_identity),
            cross_namespace_secrets=cross_namespace,
        )

    async def _secret(self, ref: ObjectRef) -> SecretData | None:
        obj = await self.secrets.get(ref)
        return None if obj is None else _decoded(obj)

    def _feed(
        self,
        key: ObjectRef,
        plane: PlaneRef,
        resolution: Resolution,
        plane_log: structlog.BoundLogger,
    ) -> None:
        previous = self.trust.get(plane)
        if previous != resolution.trust:
            self.trust.set_plane(resolution.trust)
            _log_trust(plane_log, resolution.trust)
        self._fed.add(plane)
        if resolution.direct is None:
            if self.direct.remove(plane):
                plane_log.info("direct target removed")
            return
        if self.direct.set(plane, resolution.direct):
            self._probes.pop(key, None)  # new credentials: probe them at once
            plane_log.info(
                "direct target set", server=resolution.direct.server, auth=resolution.direct.auth
            )

    def _forget(self, key: ObjectRef, plane_log: structlog.BoundLogger) -> None:
        self._index(key, frozenset())
        self._probes.pop(key, None)
        self._status.forget(key)
        with contextlib.suppress(InvalidPlaneRefError):
            plane = plane_ref(key.namespace, key.name)
            self.direct.remove(plane)
            if self.conditions is not None:
                self.conditions.remove_conditions(plane)
            if plane in self._fed:
                self._fed.discard(plane)
                self.trust.remove_plane(plane)
                plane_log.info("plane removed")

    def _index(self, key: ObjectRef, refs: frozenset[ObjectRef]) -> None:
        for old in self._refs.get(key, frozenset()) - refs:
            holders = self._referrers.get(old)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self._referrers[old]
        for ref in refs:
            self._referrers.setdefault(ref, set()).add(key)
        if refs:
            self._refs[key] = refs
        else:
            self._refs.pop(key, None)
        self.secrets.referenced(set(self._referrers))

    def _show_conditions(self, plane: PlaneRef, obj: KubeObject) -> None:
        if self.conditions is not None:
            self.conditions.set_conditions(plane, conditions.held(obj.get("status")))

    # -- status -------------------------------------------------------------------------------

    async def _write_status(
        self,
        key: ObjectRef,
        plane: PlaneRef,
        obj: KubeObject,
        resolution: Resolution,
        plane_log: structlog.BoundLogger,
    ) -> None:
        connected = await self._connection(key, plane, resolution)
        wanted = conditions.desired(resolution.gateway_verdict, connected)
        outcome = await self._status.write(obj, wanted)
        if outcome.result is Result.WRITTEN and outcome.written is not None:
            self.dataplanes.upsert(outcome.written)
            new_status = outcome.written.get("status") or {}
            plane_log.info(
                "status written",
                **{
                    c["type"]: f"{c['status']}/{c['reason']}"
                    for c in new_status.get("conditions", [])
                },
            )
            for event in transitions(obj.get("status"), new_status):
                await self._events.record(outcome.written, event)
        elif outcome.result is Result.DEFERRED:
            self._queue.add_after(key, outcome.retry_after)
        elif outcome.result is Result.CONFLICT:
            self._queue.add_after(key, _CONFLICT_RETRY)

    async def _connection(self, key: ObjectRef, plane: PlaneRef, resolution: Resolution) -> Verdict:
        if resolution.mode == "agent":
            local = {agent.agent_id for agent in self._agents.agents(plane)}
            # One agent holds a tunnel to every replica: count agents, not tunnels. The message
            # names no replica count: tunnels come and go as they converge and in every rolling
            # restart, and each change would be a status write per plane.
            return conditions.connected_from_agents(
                len(local | self.coordination.peer_agents(plane))
            )
        if not self.direct.serves(plane):
            self._probes.pop(key, None)
            return conditions.not_probed("CredentialsUnavailable")
        last = self._probes.get(key)
        interval = self.settings.probe_interval
        if last is None or time.monotonic() >= last.at + interval:
            result = await probe(self.direct, plane, limit=self.settings.probe_timeout)
            if last is None or last.result != result:
                log.bind(plane=str(key)).info("probed", ok=result.ok, reason=result.reason)
            last = _Probe(result, time.monotonic())
            self._probes[key] = last
        self._queue.add_after(key, max(0.0, last.at + interval - time.monotonic()))
        return conditions.connected_from_probe(last.result)


def _log_trust(plane_log: structlog.BoundLogger, trust: PlaneTrust) -> None:
    if trust.issues:
        plane_log.warning(
            "plane cannot accept agents", issues=list(trust.issues), source=trust.source
        )
    else:
        plane_log.info(
            "plane trust set",
            source=trust.source,
            cas=[ca.subject.rfc4514_string() for ca in trust.client_cas],
            require_identity=trust.require_identity,
        )


def _decoded(secret: KubeObject) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    for name, value in (secret.get("data") or {}).items():
        with contextlib.suppress(binascii.Error, ValueError, TypeError):
            data[name] = base64.b64decode(value)
    return data


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}" if location else first["msg"]


async def _all_set(events: Iterable[asyncio.Event]) -> None:
    for event in events:
        await event.wait()


def _hostname() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()
