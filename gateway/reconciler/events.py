"""Kubernetes Events (core/v1) for a DataPlane's transitions, deduplicated.

`transitions` (pure) says which events a status change deserves: connected, disconnected,
credentials rejected or unresolvable, provisioned again (agents the listener rejected are told
by `rejections`). `EventRecorder` writes them; the same reason and message for the same object
again increments the existing Event's `count` instead of creating another (as client-go's
event correlator does). Events are best effort: a failure to write one is logged, never
raised.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

import crd
from crd.names import CONNECTED, GATEWAY_PROVISIONED
from gateway.reconciler.conditions import condition, rfc3339
from gateway.reconciler.errors import KubeError, NotFound
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.metrics import ReconcilerMetrics
from kubeobject import KubeObject

log = structlog.get_logger("gateway.reconciler.events")

_REMEMBERED = 4096


@dataclass(frozen=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def transitions(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[EventSpec]:
    """The events that going from status `old` to status `new` deserves."""
    events: list[EventSpec] = []
    was, now = condition(old, CONNECTED), condition(new, CONNECTED)
    if now is not None:
        before = was.get("status") if was else None
        if now["status"] == "True" and before != "True":
            events.append(EventSpec("Normal", "Connected", str(now["message"])))
        elif now["status"] == "False" and before == "True":
            events.append(EventSpec("Warning", "Disconnected", str(now["message"])))
    was, now = condition(old, GATEWAY_PROVISIONED), condition(new, GATEWAY_PROVISIONED)
    if now is not None:
        before_key = (was.get("status"), was.get("reason")) if was else None
        if now["status"] == "False" and before_key != ("False", now["reason"]):
            events.append(EventSpec("Warning", str(now["reason"]), str(now["message"])))
        elif now["status"] == "True" and was is not None and was.get("status") == "False":
            events.append(EventSpec("Normal", "Provisioned", str(now["message"])))
    return events


class EventRecorder:
    def __init__(
        self,
        api: KubeApi,
        metrics: ReconcilerMetrics,
        *,
        component: str,
        instance: str,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._component = component
        self._instance = instance
        self._now = now
        self._seen: OrderedDict[tuple[str, str, str], tuple[str, int]] = OrderedDict()

    async def record(self, obj: KubeObject, event: EventSpec, *, times: int = 1) -> None:
        """Write `event` on `obj` as having happened `times` more times."""
        metadata = obj.get("metadata") or {}
        namespace, uid = str(metadata.get("namespace")), str(metadata.get("uid") or "")
        dedup = (uid, event.reason, event.message)
        stamp = rfc3339(self._now())
        try:
            if (seen := self._seen.get(dedup)) is not None:
                name, count = seen
                try:
                    await self._api.patch_event(
                        namespace, name, {"count": count + times, "lastTimestamp": stamp}
                    )
                    self._remember(dedup, name, count + times)
                    self._metrics.events.labels(reason=event.reason).inc()
                    return
                except NotFound:
                    pass  # expired (Events live an hour): create a new one
            created = await self._api.create_event(namespace, self._body(obj, event, stamp, times))
            self._remember(dedup, str(created["metadata"]["name"]), times)
            self._metrics.events.labels(reason=event.reason).inc()
        except KubeError as error:
            log.warning("event not recorded", reason=event.reason, error=str(error))

    def _remember(self, dedup: tuple[str, str, str], name: str, count: int) -> None:
        self._seen[dedup] = (name, count)
        self._seen.move_to_end(dedup)
        while len(self._seen) > _REMEMBERED:
            self._seen.popitem(last=False)

    def _body(self, obj: KubeObject, event: EventSpec, stamp: str, times: int) -> dict[str, Any]:
        metadata = obj.get("metadata") or {}
        return {
            "metadata": {
                "generateName": f"{metadata.get('name')}.",
                "namespace": metadata.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "name": metadata.get("name"),
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message,
            "count": times,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
        }
