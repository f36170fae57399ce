"""Counters, gauges and histograms for the request path: plain numbers, read at scrape time.

prometheus_client's `Counter.inc`, `Gauge.inc` and `Histogram.observe` take a lock and make
several calls per update (1.5-3 µs); the gateway makes about six and the agent ten per small
request. Here an update is attribute arithmetic on a child with `__slots__`, `labels()` is a
dict lookup once a label set has been seen, and the numbers become metric families only when
a registry collects them (each metric is a `Collector`). Names, help, labels, buckets and the
exposition are those of prometheus_client's `Counter`, `Gauge` and `Histogram`
(tests/metrics/test_plain_metrics.py compares them byte for byte); `_created` series are not
made (`tunnel.role_metrics` turns them off in every process).

No lock, because updates and scrapes run on one thread: the process's event loop. The roles
update metrics from their tasks, and /metrics is answered on that loop too, by
`http1.service.SmallHttpServer` (`agent.health`, `gateway.operator`), as is a peer's
`/peer/v1/metrics` (`gateway.callers`), so a scrape never falls between the two halves of an
update. Were one collected from another thread, each value is a float or int attribute,
replaced whole under the GIL: a scrape could miss the latest update of a series, or see an
observation in a histogram's buckets before its sum, never a torn number.
"""

from __future__ import annotations

from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import INF, floatToGoString

DEFAULT_BUCKETS: tuple[float, ...] = Histogram.DEFAULT_BUCKETS


class CounterChild:
    """One series of a counter."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class GaugeChild:
    """One series of a gauge."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class HistogramChild:
    """One series of a histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("_upper_bounds", "counts", "sum")

    def __init__(self, upper_bounds: Sequence[float]) -> None:
        self._upper_bounds = upper_bounds
        self.counts = [0] * len(upper_bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bound >= amount: `le` is inclusive, a value on a bound is in that bucket.
        # (NaN, which no duration is, lands in the first; prometheus_client counts it in none.)
        self.counts[bisect_left(self._upper_bounds, amount)] += 1
        self.sum += amount


ChildT = TypeVar("ChildT", CounterChild, GaugeChild, HistogramChild)


class PlainMetric(Collector, Generic[ChildT]):
    """What the three kinds share: the children by label values, registration, `labels()`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        # An unlabelled metric is its one child, kept apart: `labels()` on it is refused, and
        # its own inc/dec/set/observe update it.
        self._only: ChildT | None = None if self.labelnames else self._new_child()
        registry.register(self)

    @abstractmethod
    def _new_child(self) -> ChildT: ...

    def labels(self, *values: str, **by_name: str) -> ChildT:
        """The child for these label values, made at its first call."""
        if by_name:
            values = self._in_order(values, by_name)
        child = self._children.get(values)
        if child is None:
            if not self.labelnames:
                raise ValueError(f"No label names were set when constructing {self.name}")
            if len(values) != len(self.labelnames):
                raise ValueError("Incorrect label count")
            child = self._children[values] = self._new_child()
        return child

    def _in_order(self, values: tuple[str, ...], by_name: dict[str, str]) -> tuple[str, ...]:
        if values:
            raise ValueError("Can't pass both *args and **kwargs")
        if sorted(by_name) != sorted(self.labelnames):
            raise ValueError("Incorrect label names")
        return tuple(by_name[name] for name in self.labelnames)

    def _only_child(self) -> ChildT:
        """An unlabelled metric's one series (a labelled one is updated through `labels()`)."""
        only = self._only
        if only is None:
            raise ValueError(f"{self.name} has labels: update a child, from labels()")
        return only

    def _series(self) -> Iterable[tuple[tuple[str, ...], ChildT]]:
        return self._children.items() if self._only is None else [((), self._only)]


ValueChildT = TypeVar("ValueChildT", CounterChild, GaugeChild)


class _ValueMetric(PlainMetric[ValueChildT]):
    """A counter or a gauge: one number per series."""

    _family: type[CounterMetricFamily | GaugeMetricFamily]

    def inc(self, amount: float = 1) -> None:
        self._only_child().inc(amount)

    def describe(self) -> Iterator[Metric]:
        yield self._family(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._series():
            family.add_metric(values, child.value)
        yield family


class PlainCounter(_ValueMetric[CounterChild]):
    """A counter; a name ending in `_total` is the family's name without it, as in
    prometheus_client."""

    _family = CounterMetricFamily

    def _new_child(self) -> CounterChild:
        return CounterChild()


class PlainGauge(_ValueMetric[GaugeChild]):
    """A gauge."""

    _family = GaugeMetricFamily

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def dec(self, amount: float = 1) -> None:
        self._only_child().dec(amount)

    def set(self, value: float) -> None:
        self._only_child().set(value)


class PlainHistogram(PlainMetric[HistogramChild]):
    """A histogram; `buckets` are upper bounds in increasing order, `+Inf` added when missing.
    The cumulative counts the exposition shows are summed at scrape time."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: CollectorRegistry,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        labelnames = tuple(labelnames)
        bounds = [float(bound) for bound in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        if bounds[0] < 0:
            # HistogramMetricFamily leaves out _count and _sum then; Histogram does not.
            raise ValueError("Buckets must not be negative")
        if "le" in labelnames:
            raise ValueError("Invalid label metric name: le")
        self._upper_bounds = bounds
        # As prometheus_client writes `le` (untyped there).
        self._le: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._upper_bounds)

    def observe(self, amount: float) -> None:
        self._only_child().observe(amount)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._series():
            cumulative = 0.0
            buckets = []
            for le, count in zip(self._le, child.counts, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(values, buckets, child.sum)
        yield family
