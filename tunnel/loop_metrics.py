"""A gauge of the asyncio tasks alive in the process: the way to see a task leak.

Every request, stream and connection in the gateway and the agent runs in tasks that must end
with it; a count that does not return to its level after load has gone is a leak. The value
is read at scrape time, in the event loop's thread (both processes serve /metrics from it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _TaskCount(Collector):
    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self._name = name
        self._loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            self._name,
            "asyncio tasks alive in this process's event loop",
            value=len(asyncio.all_tasks(self._loop)),
        )


def register_task_gauge(registry: CollectorRegistry, name: str) -> None:
    """Export `name`: the running loop's task count (call from inside the loop; a second call
    for the same registry and name is a no-op)."""
    with contextlib.suppress(ValueError):  # registered already: prometheus refuses duplicates
        registry.register(_TaskCount(name, asyncio.get_running_loop()))
