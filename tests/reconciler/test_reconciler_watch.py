"""The list-then-watch loop, the store and the work queue: fakes for the failures, and a real
API server for an expired resourceVersion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from prometheus_client import CollectorRegistry

from gateway.reconciler import conditions as c
from gateway.reconciler.errors import ApiError, Conflict, Gone, NotFound, Unreachable
from gateway.reconciler.informer import Informer
from gateway.reconciler.kube import KubeApi, WatchEvent
from gateway.reconciler.metrics import ReconcilerMetrics
from gateway.reconciler.status import Result, StatusWriter
from gateway.reconciler.store import Change, Store
from gateway.reconciler.workqueue import WorkQueue
from kubeobject import ObjectRef
from protocol.backoff import BackoffPolicy
from tests.kit.waits import within


def _obj(name: str, version: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": str(version)}}


class FakeSource:
    """Scripted list results and watch streams; each watch step is an event or an error."""

    kind = "Fake"
    namespace: str | None = None

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls = 0
        self.watched_from: list[str] = []
        self.exhausted = asyncio.Event()

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        items = self.lists[min(self.list_calls, len(self.lists) - 1)]
        self.list_calls += 1
        return items, str(max((int(i["metadata"]["resourceVersion"]) for i in items), default=1))

    async def watch(self, resource_version: str) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.exhausted.set()
            await asyncio.Event().wait()
        for step in self.watches.pop(0):
            if isinstance(step, Exception):
                raise step
            yield step


def _metrics() -> ReconcilerMetrics:
    return ReconcilerMetrics(CollectorRegistry())


async def _run_until_exhausted(
    source: FakeSource, store: Store, seen: list[Change]
) -> ReconcilerMetrics:
    metrics = _metrics()

    def handle(change: Change) -> None:
        if change.key.name == "poison":
            raise RuntimeError("a handler bug")
        seen.append(change)

    informer = Informer(
        source, store, handle, backoff=BackoffPolicy(base=0.001, cap=0.01), metrics=metrics
    )
    task = asyncio.create_task(informer.run())
    async with within(10):
        await source.exhausted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return metrics


async def test_gone_relists_and_connection_loss_resumes_from_the_last_version() -> None:
    source = FakeSource(
        lists=[[_obj("a", 5), _obj("b", 6)], [_obj("a", 9), _obj("c", 10)]],
        watches=[
            [WatchEvent("MODIFIED", _obj("a", 7)), Unreachable("connection reset")],
            [WatchEvent("BOOKMARK", _obj("", 8)), Gone(410, "Expired", "too old resource version")],
            [WatchEvent("ADDED", _obj("poison", 11)), WatchEvent("DELETED", _obj("c", 12))],
        ],
    )
    store = Store()
    seen: list[Change] = []
    metrics = await _run_until_exhausted(source, store, seen)

    # list → watch from 6 → lost: watch again from 7 → bookmark 8, then 410: list again → ...
    assert source.list_calls == 2
    assert source.watched_from == ["6", "7", "10", "12"]
    # The relist removed b and added c; the poisoned handler did not stop the loop.
    assert sorted(store.all_keys()) == [ObjectRef("ns", "a"), ObjectRef("ns", "poison")]
    assert [(c.key.name, c.new is not None) for c in seen] == [
        ("a", True),
        ("b", True),
        ("a", True),
        ("b", False),
        ("a", True),
        ("c", True),
        ("c", False),
    ]
    [restarts_metric] = metrics.watch_restarts.collect()
    restarts = {
        s.labels["reason"]: s.value for s in restarts_metric.samples if s.name.endswith("_total")
    }
    assert restarts == {"Unreachable": 1.0, "expired": 1.0}


def test_store_never_goes_back_in_time() -> None:
    store = Store()
    assert store.upsert(_obj("a", 10)) is not None
    assert store.upsert(_obj("a", 9)) is None  # a late watch event after our own PATCH
    assert store.upsert(_obj("a", 10)) is None  # the same version again: no change
    stored = store.get(ObjectRef("ns", "a"))
    assert stored is not None
    assert stored["metadata"]["resourceVersion"] == "10"
    changes = store.replace([_obj("b", 1)], namespace="other")
    assert [c.key.name for c in changes] == ["b"]  # a kept: it is outside the relisted scope


async def test_real_server_expired_version_is_gone(
    control_plane_client: ApiClient, namespace: str
) -> None:
    collection = KubeApi(control_plane_client).dataplanes(namespace)

    async def watch_from_one() -> None:
        async for _ in collection.watch("1"):
            pass

    async with within(30):
        while True:
            # A fresh CRD's watch cache answers 429 until it is filled; nothing announces the
            # end of that, so retry (bounded) until the answer is about the version itself.
            try:
                await watch_from_one()
            except ApiError as error:
                if error.status != 429:
                    raise
                await asyncio.sleep(0.2)
                continue
            except Gone:
                break
    with pytest.raises(Gone) as gone:
        await watch_from_one()
    assert gone.value.status == 410


async def test_queue_serialises_one_key_and_runs_others_in_parallel() -> None:
    queue: WorkQueue[str] = WorkQueue(retry=BackoffPolicy(base=0.001, cap=0.01))
    running: dict[str, int] = {}
    overlaps: list[str] = []
    handled: list[str] = []
    release = asyncio.Event()
    both_running = asyncio.Event()
    done = asyncio.Event()

    async def handler(key: str) -> None:
        running[key] = running.get(key, 0) + 1
        if running[key] > 1:
            overlaps.append(key)
        if len(running) == 2 and all(running.values()):
            both_running.set()
        if key.startswith("slow"):
            await release.wait()
        running[key] -= 1
        handled.append(key)
        if len(handled) == 3:
            done.set()

    task = asyncio.create_task(queue.run(handler, workers=4))
    queue.add("slow")
    queue.add("fast")
    async with within(5):
        await both_running.wait()  # two keys at once
    for _ in range(5):
        queue.add("slow")  # while handled: queued once, handled again afterwards
    release.set()
    async with within(5):
        await done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert overlaps == []
    assert sorted(handled) == ["fast", "slow", "slow"]


async def test_queue_retries_a_failing_key_with_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(retry=BackoffPolicy(base=0.001, cap=0.01))
    attempts: list[str] = []
    succeeded = asyncio.Event()

    async def handler(key: str) -> None:
        attempts.append(key)
        if len(attempts) < 3:
            raise RuntimeError("transient")
        succeeded.set()

    task = asyncio.create_task(queue.run(handler, workers=1))
    queue.add("k")
    async with within(5):
        await succeeded.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert attempts == ["k", "k", "k"]


async def test_an_add_due_at_once_wins_over_a_later_one() -> None:
    """Under uvloop a timer due within half a millisecond is a plain handle, with no `when()`."""
    queue: WorkQueue[str] = WorkQueue(retry=BackoffPolicy(base=0.001, cap=0.01))
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(key: str) -> None:
        handled.append(key)
        done.set()

    queue.add_after("k", 0.0001)
    queue.add_after("k", 3600.0)  # later than the pending add: ignored
    task = asyncio.create_task(queue.run(handler, workers=1))
    async with within(5):
        await done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handled == ["k"]


async def test_real_server_old_version_makes_the_informer_relist(
    control_plane_client: ApiClient, namespace: str
) -> None:
    registry = CollectorRegistry()
    metrics = ReconcilerMetrics(registry)
    store = Store()
    informer = Informer(
        KubeApi(control_plane_client).dataplanes(namespace),
        store,
        lambda change: None,
        backoff=BackoffPolicy(base=0.05, cap=0.2),
        metrics=metrics,
    )
    informer.resource_version = "1"  # as after a long disconnection: expired
    task = asyncio.create_task(informer.run())
    try:
        async with within(30):
            await informer.synced.wait()  # set only by a list, which only Gone leads to
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    expired = registry.get_sample_value(
        "planelink_reconciler_watch_restarts_total", {"kind": "DataPlane", "reason": "expired"}
    )
    assert expired is not None
    assert expired >= 1


class FakeStatusApi(KubeApi):
    """The one request a StatusWriter makes, recorded (no client: nothing else is called)."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.fail: Exception | None = None

    async def patch_dataplane_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.patches.append(body)
        return {"metadata": {"namespace": namespace, "name": name}, "status": body["status"]}


async def test_status_writer_skips_no_ops_and_spaces_writes() -> None:
    api = FakeStatusApi()
    clock = [100.0]
    writer = StatusWriter(api, _metrics(), min_interval=1.0, monotonic=lambda: clock[0])
    obj: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "p", "generation": 1, "resourceVersion": "5"}
    }
    up = c.desired(c.provisioned(), c.connected_from_agents(1))
    down = c.desired(c.provisioned(), c.connected_from_agents(0))

    first = await writer.write(obj, up)
    assert first.result is Result.WRITTEN
    assert api.patches[0]["metadata"] == {"resourceVersion": "5"}  # optimistic concurrency
    assert first.written is not None
    obj["status"] = first.written["status"]
    assert (await writer.write(obj, up)).result is Result.UNCHANGED
    clock[0] += 0.2
    deferred = await writer.write(obj, down)  # a flap 0.2 s later waits for its turn
    assert deferred.result is Result.DEFERRED
    assert deferred.retry_after == pytest.approx(0.8)
    clock[0] += 1.0
    api.fail = Conflict(409, "Conflict", "changed")
    assert (await writer.write(obj, down)).result is Result.CONFLICT
    api.fail = NotFound(404, "NotFound", "gone")
    assert (await writer.write(obj, down)).result is Result.NOT_FOUND
    assert len(api.patches) == 1
