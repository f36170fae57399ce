"""Writing a DataPlane's status: merge patch of /status, no no-ops, at most one write per interval.

`StatusWriter.write` compares what is wanted with the status last seen and sends nothing when
they agree (lastTransitionTime of an unchanged condition is kept, so it never causes a write).
A write carries the resourceVersion it was computed from: if the object changed meanwhile the
API server answers 409 and the caller tries again from the newer object; a 404 means the object
is gone and there is nothing to write. Writes to one object are spaced by `min_interval`: a
flapping agent produces at most one write per interval, each with the latest state.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.reconciler.conditions import Verdict, status_patch
from gateway.reconciler.errors import Conflict, KubeError, NotFound
from gateway.reconciler.kube import KubeApi
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.store import resource_version
from kubeobject import KubeObject, ObjectRef


class Result(enum.Enum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    DEFERRED = "deferred"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Outcome:
    result: Result
    retry_after: float = 0.0
    """For DEFERRED: when the write is allowed."""
    written: KubeObject | None = None
    """For WRITTEN: the object the API server returned."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StatusWriter:
    def __init__(
        self,
        api: KubeApi,
        metrics: ReconcilerMetrics,
        *,
        min_interval: float,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._min_interval = min_interval
        self._monotonic = monotonic
        self._now = now
        self._last_write: dict[ObjectRef, float] = {}

    def forget(self, key: ObjectRef) -> None:
        self._last_write.pop(key, None)

    async def write(self, obj: KubeObject, wanted: Mapping[str, Verdict]) -> Outcome:
        """Make `obj`'s status say `wanted`; raises KubeError for failures worth a retry."""
        key = ObjectRef.of(obj)
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        patch = status_patch(obj.get("status"), wanted, generation=generation, now=self._now())
        if patch is None:
            return Outcome(Result.UNCHANGED)
        last = self._last_write.get(key)
        if last is not None:
            wait = last + self._min_interval - self._monotonic()
            if wait > 0:
                return Outcome(Result.DEFERRED, retry_after=wait)
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": resource_version(obj)},
            "status": patch,
        }
        try:
            written = await self._api.patch_dataplane_status(key.namespace, key.name, body)
        except Conflict:
            self._metrics.status_writes.labels(result="conflict").inc()
            return Outcome(Result.CONFLICT)
        except NotFound:
            self._metrics.status_writes.labels(result="not_found").inc()
            return Outcome(Result.NOT_FOUND)
        except KubeError:
            self._metrics.status_writes.labels(result="error").inc()
            raise
        self._last_write[key] = self._monotonic()
        self._metrics.status_writes.labels(result="written").inc()
        return Outcome(Result.WRITTEN, written=written)
